"""Time to a 503 while a fixed app's store is stalled, then recovery.

A server that stops answering but keeps its connections open (a long pause, a
frozen VM, a machine swapping) is the slow way for a store to fail: every
command waits for its socket timeout, and requests queue behind the threads
that wait. This starts fixed_cache (or fixed_db on PostgreSQL: `python -m
loadtests.stall fixed_db`) under the shared gunicorn config with an embedded
store server of its own, opens --connections kept-alive connections and sees
each answer once, freezes the server with SIGSTOP (by PID: the server and
every process below it, as PostgreSQL's backends), and sends POST
/counter/increment from every connection in a loop for --seconds. Then it
resumes them (SIGCONT), waits for the app to answer 200 again by itself, and
stops gunicorn and the server by PID.

    $ python -m loadtests.stall                # fixed_cache on its Valkey
    $ python -m loadtests.stall fixed_db       # fixed_db on PostgreSQL

What it printed in a kept run is in docs/results/kept/ (stall-cache.txt,
stall-postgres.txt: `python -m docs.tools.kept stall-cache` runs it again).

"unknown" answers waited out the socket timeout (0.25 s) on a command that
was sent; "not applied" ones found the worker's circuit breaker open, or
could not connect (fixed_cache/store.py). After SIGCONT a worker's breaker
stays open until its next trial, up to 0.5 s. Before the breaker (a longer
timeout and one retry) requests queued behind the paused server for seconds.

On PostgreSQL (fixed_db/postgres.py) an "unknown" waited out the 1 s
deadline on a statement that was sent, one per pooled connection (2 x 4),
which the deadline closes; the requests queued behind them then found the
breaker open. The slowest waited behind one of those, then for the pool's
1 s timeout (no new connection while frozen).
Before the deadline and the breaker, every one of the 64 first requests got
no answer within REQUEST_TIMEOUT_SECONDS (30 s): each thread waited on its
statement until SIGCONT.

Each answer's time is from sending the request to its last byte; "unknown"
and "not applied" are the "outcome" field of a 503's JSON body
(plumbing/idempotency.py). Bounded: --seconds of stall, at most
MAX_REQUESTS_PER_CONNECTION requests per connection, REQUEST_TIMEOUT_SECONDS
per request, RECOVERY_SECONDS to see a 200 again. Exit status 1 if the app
did not recover.
"""

import argparse
import statistics
import sys
import threading
import time
from dataclasses import dataclass

from loadtests import report
from loadtests.inject_postgres import ServerStopped
from loadtests.transport import TRANSPORT_ERRORS, KeepAliveSession
from serve.processes import AppServer, free_port, launcher

# The app, its store's name, and the settings that give it an embedded server
# of its own, which it may pause.
APPS = {
    "fixed_cache": ("Valkey", {"REDIS_URL": ""}),
    "fixed_db": ("PostgreSQL", {"FIXED_DB_BACKEND": "postgres", "DATABASE_URL": ""}),
}
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


def keep_sending(session: KeepAliveSession, url: str, until: float, answers: list[Answer]) -> None:
    for _ in range(MAX_REQUESTS_PER_CONNECTION):
        if time.monotonic() >= until:
            return
        answers.append(increment(session, url))  # list.append is atomic


def until_200(session: KeepAliveSession, url: str, answers: list[list[Answer]]) -> None:
    """Increments until one answers 200, for at most RECOVERY_SECONDS; each
    answer's time is counted from the start, the moment the store resumed."""
    start, mine = time.monotonic(), []
    answers.append(mine)
    while time.monotonic() - start < RECOVERY_SECONDS:
        kind = increment(session, url).kind
        mine.append(Answer(kind, time.monotonic() - start))
        if kind == "200":
            return
        time.sleep(0.01)


def on_every_connection(target, sessions: list[KeepAliveSession], *args) -> None:
    threads = [threading.Thread(target=target, args=(s, *args)) for s in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def stall(server: AppServer, connections: int, seconds: float) -> tuple[list[Answer], list[Answer]]:
    """The answers given while the store was paused, and those after it
    resumed, until each connection had a 200."""
    url = server.url + "/counter/increment"
    sessions = [KeepAliveSession() for _ in range(connections)]
    try:
        for session in sessions:  # every connection open, and answered, before the pause
            if (kind := increment(session, url).kind) != "200":
                raise RuntimeError(f"{server.app} answered {kind} before the stall")
        during: list[Answer] = []
        after: list[list[Answer]] = []
        # The server and every process below it, as PostgreSQL's backends.
        with ServerStopped(server.backing):
            on_every_connection(keep_sending, sessions, url, time.monotonic() + seconds, during)
        on_every_connection(until_200, sessions, url, after)
    finally:
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
        prog="python -m loadtests.stall", description=__doc__.split("\n")[0]
    )
    parser.add_argument("app", nargs="?", choices=APPS, default="fixed_cache")
    parser.add_argument("--connections", type=int, default=DEFAULT_CONNECTIONS)
    parser.add_argument(
        "--seconds", type=float, default=DEFAULT_SECONDS, help="how long the store stays paused"
    )
    args = parser.parse_args(argv)
    store, settings = APPS[args.app]
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
