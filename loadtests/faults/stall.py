"""Time to a 503 while a fixed app's store is stalled, then recovery.

    python -m loadtests.faults.stall              # fixed_cache, its Valkey paused
    python -m loadtests.faults.stall fixed_db     # fixed_db on PostgreSQL

A server that stops answering but keeps its connections open (a long pause,
a frozen VM, a machine swapping) is the slow way for a store to fail: every
command waits for its timeout, and requests queue behind the threads that
wait. This starts the app with a store server of its own (registry.py
own_server_settings), opens --connections kept-alive connections, pauses
the server (its launcher object's paused(), serve/store.py) and sends POST
/counter/increment from every connection for --seconds; then resumes it and
waits for a 200 on each. "unknown" and "not applied" are the outcome of a
503's JSON body (plumbing/idempotency.py). Bounded: --seconds of stall,
MAX_REQUESTS_PER_CONNECTION, REQUEST_TIMEOUT_SECONDS, RECOVERY_SECONDS.
Exit status 1 if the app did not recover.

What it printed in a kept run is in docs/results/kept/ (stall-cache.txt,
stall-postgres.txt: `python -m docs.tools.kept stall-cache` runs it again).
"""

import argparse
import statistics
import sys
import threading
import time
from dataclasses import dataclass

from loadtests.clients.transport import TRANSPORT_ERRORS, KeepAliveSession
from loadtests.runs import report
from registry import APPS, SERVER_TITLES
from serve.pids import join_all
from serve.processes import AppServer, free_port, launcher

# The apps that can have a store server of their own, which the stall pauses.
STALLED = [app.name for app in APPS.values() if app.own_server_settings() is not None]
DEFAULT_CONNECTIONS = 64
DEFAULT_SECONDS = 5.0
MAX_REQUESTS_PER_CONNECTION = 2000
REQUEST_TIMEOUT_SECONDS = 30.0
RECOVERY_SECONDS = 5.0
COLUMNS = (
    ("answer", "answer"),
    ("count", "count"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("max_ms", "max ms"),
)


@dataclass(frozen=True)
class Answer:
    kind: str  # "503 unknown", "503 not applied", "200", "no answer (TimeoutError)"
    seconds: float


def increment(session: KeepAliveSession, url: str) -> Answer:
    start = time.monotonic()
    try:
        response = session.request("POST", url, timeout=REQUEST_TIMEOUT_SECONDS)
    except TRANSPORT_ERRORS as error:
        return Answer(f"no answer ({type(error).__name__})", time.monotonic() - start)
    seconds = time.monotonic() - start
    try:
        outcome = response.json().get("outcome", "")
    except ValueError:
        outcome = ""
    return Answer(f"{response.status_code} {outcome}".strip(), seconds)


def keep_sending(
    session: KeepAliveSession, url: str, until: float, answers: list[Answer], stop: threading.Event
) -> None:
    for _ in range(MAX_REQUESTS_PER_CONNECTION):
        if time.monotonic() >= until or stop.is_set():
            return
        answers.append(increment(session, url))  # list.append is atomic


def until_200(
    session: KeepAliveSession, url: str, answers: list[list[Answer]], stop: threading.Event
) -> None:
    """Increments until one answers 200, for at most RECOVERY_SECONDS; each
    answer's time is counted from the start, the moment the store resumed."""
    start, mine = time.monotonic(), []
    answers.append(mine)
    while time.monotonic() - start < RECOVERY_SECONDS and not stop.is_set():
        kind = increment(session, url).kind
        mine.append(Answer(kind, time.monotonic() - start))
        if kind == "200":
            return
        time.sleep(0.01)


def on_every_connection(target, sessions: list[KeepAliveSession], *args) -> None:
    """target(session, *args) on every connection at once. Daemon threads: a
    Ctrl-C or SIGTERM in the main thread ends the run at once (the caller sets
    the stop event its threads check) instead of waiting on a paused store."""
    threads = [threading.Thread(target=target, args=(s, *args), daemon=True) for s in sessions]
    for thread in threads:
        thread.start()
    join_all(threads)  # a SIGTERM Python dropped still ends the run


def stall(server: AppServer, connections: int, seconds: float) -> tuple[list[Answer], list[Answer]]:
    """The answers given while the store was paused, and those after it
    resumed, until each connection had a 200."""
    url = server.url + "/counter/increment"
    sessions = [KeepAliveSession() for _ in range(connections)]
    stop = threading.Event()  # set on the way out, however the run ends
    try:
        for session in sessions:  # every connection open, and answered, before the pause
            if (kind := increment(session, url).kind) != "200":
                raise RuntimeError(f"{server.app} answered {kind} before the stall")
        during: list[Answer] = []
        after: list[list[Answer]] = []
        # As its launcher object pauses it: PostgreSQL's backends too (serve/store.py).
        with server.backing.paused():
            on_every_connection(
                keep_sending, sessions, url, time.monotonic() + seconds, during, stop
            )
        on_every_connection(until_200, sessions, url, after, stop)
    finally:
        stop.set()
        for session in sessions:
            session.close()
    return during, after


def row(kind: str, answers: list[Answer]) -> dict:
    ms = sorted(a.seconds * 1000 for a in answers)
    cuts = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
    return {
        "answer": kind,
        "count": str(len(ms)),
        "p50_ms": f"{cuts[49]:.1f}",
        "p99_ms": f"{cuts[98]:.1f}",
        "max_ms": f"{ms[-1]:.1f}",
    }


def summary(answers: list[Answer]) -> str:
    kinds = sorted({a.kind for a in answers})
    rows = [row(kind, [a for a in answers if a.kind == kind]) for kind in kinds]
    if failed := [a for a in answers if a.kind.startswith("503")]:
        rows.append(row("every 503", failed))
    if answers:
        rows.append(row("every answer", answers))
    return report.format_table(rows, COLUMNS)


@launcher  # a server that did not start: an error, exit code 2
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.faults.stall", description=__doc__.split("\n")[0]
    )
    parser.add_argument("app", nargs="?", choices=STALLED, default="fixed_cache")
    parser.add_argument("--connections", type=int, default=DEFAULT_CONNECTIONS)
    parser.add_argument(
        "--seconds", type=float, default=DEFAULT_SECONDS, help="how long the store stays paused"
    )
    args = parser.parse_args(argv)
    settings = APPS[args.app].own_server_settings() or {}
    store = SERVER_TITLES[APPS[args.app].embedded_server(settings)]
    # Its data in a folder of its own, deleted at the end with the PostgreSQL
    # cluster, which as root lives outside it (serve/processes.py run_folder).
    with AppServer(args.app, free_port(), env=settings, own_folder="stall") as server:
        print(
            f"{args.app} ({server.shape()}, {args.connections} connections): "
            f"{store} paused for {args.seconds:g} s, POST /counter/increment meanwhile",
            flush=True,
        )
        during, after = stall(server, args.connections, args.seconds)
    print(summary(during))
    recovered = [a.seconds for mine in after for a in mine if a.kind == "200"]
    failed = [sum(a.kind != "200" for a in mine) for mine in after]
    kinds = sorted({a.kind for mine in after for a in mine if a.kind != "200"})
    print(
        f"after SIGCONT: {len(recovered)} of {args.connections} connections answered 200"
        + (f", the last {max(recovered):.2f} s after" if recovered else "")
        + (f"; before that, {sum(failed)} x {' or '.join(kinds)}" if kinds else "")
        + (f", at most {max(failed)} on one connection" if kinds else "")
    )
    return 0 if len(recovered) == args.connections else 1


if __name__ == "__main__":
    sys.exit(main())
