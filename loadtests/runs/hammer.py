"""Hammer apps with concurrent users, record every operation, check the history.

    python -m loadtests.runs.hammer                      # make demo: every app
    python -m loadtests.runs.hammer fixed_db --users 40 --ops 50

Each user is a thread with its own cookie jar and kept-alive connection
(loadtests/clients/transport.py: the client must not be what limits the
run). All users are released together by a barrier at the start of each
scope, so the requests overlap for certain rather than by luck: counter (a
reset, then OPS increments each, then a read each), visits (OPS appends of
its own, then its list), tabs (one user's cookie, every thread appending at
once) and greet (OPS greetings for its own name). Runs are bounded: OPS per
user per scope, and --max-seconds overall. Measured tables are in
docs/results/.
"""

import argparse
import os
import secrets
import sys
import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

from loadtests.clients.client import Client
from loadtests.clients.placement import Placement
from loadtests.clients.transport import KeepAliveSession
from loadtests.judge.checker import check, unexpected
from loadtests.judge.history import Event
from loadtests.judge.verdict import SCOPES, Verdict
from loadtests.runs import report
from loadtests.timeline import write_timeline
from plumbing.config import var_dir
from registry import APPS
from serve.pids import join_all
from serve.processes import (
    AppServer,
    available_apps,
    free_port,
    launcher,
    run_folder,
    store_server,
)

DEFAULT_USERS = 32
DEFAULT_OPS = 25
DEFAULT_MAX_SECONDS = 60.0


def run_scenarios(
    base_url: str | list[str],
    users: int = DEFAULT_USERS,
    ops: int = DEFAULT_OPS,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    scopes: tuple[str, ...] = tuple(SCOPES),
    workers: int | None = None,
) -> list[Event]:
    """Run the scopes against one app and return the recorded history. With
    several base URLs (instances of the app), each user's requests take them in
    turn, starting from a different one for each user. Given the number of
    `workers` per instance, users' connections are spread evenly over them."""
    urls = [base_url] if isinstance(base_url, str) else base_url

    def spread(index: int) -> list[str]:
        return urls[index % len(urls) :] + urls[: index % len(urls)]

    history: list[Event] = []  # list.append is atomic: threads share it safely
    run_id = secrets.token_hex(2)  # tokens and names unique to this run
    deadline = time.monotonic() + max_seconds
    start_together = threading.Barrier(users)
    placement = Placement(users, workers) if workers else None
    tabs_owner = Client(urls, f"tabs-{run_id}", scenario="tabs", http=KeepAliveSession())
    if "tabs" in scopes:
        history.append(tabs_owner.add_visit(f"{tabs_owner.user}/first"))  # sets its cookie

    def in_time() -> bool:
        return time.monotonic() < deadline

    def user(index: int) -> None:
        client = Client(spread(index), f"u{index:02d}-{run_id}", http=KeepAliveSession())
        try:
            if placement:
                placement.settle(client, len(urls))
            if "counter" in scopes:
                if index == 0:
                    history.append(client.reset())
                start_together.wait()
                for _ in range(ops):
                    if in_time():
                        history.append(client.increment())
                start_together.wait()
                history.append(client.read_counter())

            if "visits" in scopes:
                start_together.wait()
                for n in range(ops):
                    if in_time():
                        history.append(client.add_visit(f"{client.user}/{n}"))
                history.append(client.list_visits())

            if "tabs" in scopes:
                tab = tabs_owner.another_tab(http=KeepAliveSession())
                start_together.wait()
                history.append(tab.add_visit(f"{tab.user}/{index}"))
                tab.close()
                if start_together.wait() == 0:
                    history.append(tabs_owner.list_visits())

            if "greet" in scopes:
                start_together.wait()
                for _ in range(ops):
                    if in_time():
                        history.append(client.greet(client.user))
        finally:
            client.close()

    # Daemon threads: a Ctrl-C ends the run without waiting for them (see main).
    threads = [threading.Thread(target=user, args=(i,), daemon=True) for i in range(users)]
    for thread in threads:
        thread.start()
    join_all(threads)
    tabs_owner.close()
    return history


def measure_ceiling(
    base_url: str, users: int, requests_per_user: int = 100, workers: int | None = None
) -> float:
    """Requests per second the same users reach on GET /healthz: the most the
    app can answer on this machine, with this client, doing no state work."""
    placement = Placement(users, workers) if workers else None
    start_together = threading.Barrier(users + 1)
    done: list[Event] = []

    def user(index: int) -> None:
        client = Client(base_url, f"ceiling-{index}", http=KeepAliveSession())
        if placement:
            placement.settle(client, 1)  # connected before the clock starts
        start_together.wait()
        done.extend(client.healthz() for _ in range(requests_per_user))
        client.close()

    threads = [threading.Thread(target=user, args=(i,), daemon=True) for i in range(users)]
    for thread in threads:
        thread.start()
    start_together.wait()
    began = time.monotonic()
    join_all(threads)
    return len(done) / (time.monotonic() - began)


def hammer_app(
    app: str,
    users: int,
    ops: int,
    max_seconds: float,
    ceiling: bool = False,
    instances: int = 1,
) -> tuple[Verdict, list[Event], float | None]:
    """Start the app under the shared gunicorn config, hammer it, stop it.
    With `ceiling`, also measure its /healthz ceiling with the same users.
    Its data starts empty, in a folder of this run's own (run_folder()): never
    that of a server `make run` serves, nor another run's.

    With several `instances` (as on several hosts behind a load balancer),
    they share one backing store: the same SQLite file and session folder
    in that folder, one Redis-protocol server for fixed_cache, and one
    PostgreSQL server for fixed_db with FIXED_DB_BACKEND=postgres."""
    with ExitStack() as running:
        folder = running.enter_context(run_folder("hammer"))
        env = {"VAR_DIR": str(folder)}
        store = store_server(app, os.environ, folder) if instances > 1 else None
        if store is not None:
            env[APPS[app].url_setting] = running.enter_context(store).url
        servers = [
            running.enter_context(AppServer(app, free_port(), env=env)) for _ in range(instances)
        ]
        urls = [server.url for server in servers]
        history = run_scenarios(urls, users, ops, max_seconds, workers=servers[0].workers())
        rate = measure_ceiling(urls[0], users, workers=servers[0].workers()) if ceiling else None
    return check(history), history, rate


@launcher  # a server that did not start, a store in use: an error, exit code 2
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.runs.hammer", description=__doc__.split("\n")[0]
    )
    parser.add_argument("apps", nargs="*", metavar="APP", help=" | ".join(APPS) + " (default: all)")
    parser.add_argument("--users", type=int, default=DEFAULT_USERS, help="concurrent users")
    parser.add_argument(
        "--ops", type=int, default=DEFAULT_OPS, help="operations per user per scope"
    )
    parser.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS)
    parser.add_argument(
        "--instances", type=int, default=1, help="instances of each app sharing one backing store"
    )
    parser.add_argument("--out", type=Path, default=var_dir() / "results", help="folder")
    parser.add_argument(
        "--charts",
        action="store_true",
        help="also measure each app's /healthz ceiling and write CSV and PNG charts",
    )
    args = parser.parse_args(argv)
    apps = args.apps or available_apps()
    if unknown := [a for a in apps if a not in available_apps()]:
        parser.error(f"no such app in this checkout: {unknown[0]}")
    if args.users < 2 or args.ops < 1:
        parser.error("need at least 2 users and 1 operation")

    try:
        return hammer_all(apps, args)
    except KeyboardInterrupt:  # the servers are stopped on the way out (hammer_app)
        print("\nstopping...", flush=True)
        return 130


def hammer_all(apps: list[str], args: argparse.Namespace) -> int:
    rows, problems, histories, timelines = [], [], {}, []
    payload = {"started": datetime.now(UTC).isoformat(), "apps": {}}
    for app in apps:
        where = f" on {args.instances} instances" if args.instances > 1 else ""
        label, backend = APPS[app].label(os.environ), APPS[app].backend(os.environ)
        print(
            f"hammering {label}{where}: {args.users} users x {args.ops} ops ...",
            end=" ",
            flush=True,
        )
        began = time.monotonic()
        verdict, history, ceiling = hammer_app(
            app, args.users, args.ops, args.max_seconds, args.charts, args.instances
        )
        print(f"{len(history)} operations in {time.monotonic() - began:.1f}s", flush=True)
        rows.append(report.row(app, verdict, history, backend))
        if ceiling is not None:
            rows[-1]["ceiling_rps"] = round(ceiling, 1)
        problems += unexpected(app, verdict, APPS[app].tolerated)
        if failed := report.first_failure(history):
            problems.append(f"{app}: the first failed request: {failed}")
        histories[app] = history
        print(report.format_witnesses(label, verdict, history))
        payload["apps"][app] = {"summary": rows[-1], "history": [e.to_dict() for e in history]}
        timelines.append(write_timeline(args.out / f"timeline-{app}.html", label, history, verdict))

    print()
    print(report.format_table(report.labelled(rows)))
    written = [report.write_json(args.out / "hammer.json", payload), *timelines]
    if args.charts:
        written += [
            report.write_csv(args.out / "compare.csv", rows),
            report.chart_anomalies(report.labelled(rows), args.out / "anomalies.png"),
            report.write_csv(
                args.out / "counter.csv", report.counter_rows(histories), report.COUNTER_FIELDS
            ),
            report.chart_counter_timeline(
                report.counter_rows(histories), list(histories), args.out / "counter.png"
            ),
            report.chart_speed(report.labelled(rows), args.out / "speed.png"),
        ]
    print("\nresults: " + ", ".join(str(path) for path in written))
    for problem in problems:
        print(f"UNEXPECTED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
