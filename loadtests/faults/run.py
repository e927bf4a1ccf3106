"""Faults under load: is every write applied exactly once?

    python -m loadtests.faults.run              # make faults (DB=postgres: on PostgreSQL)

Each fixed app runs under the shared gunicorn config while users increment
and append, retrying a request that got no answer or a 503, and faults are
injected on a schedule (schedules.py): the store's, where the run started
one (paused, killed, writes in flight), else the gunicorn workers'. Each app
runs twice: with an Idempotency-Key on every write, and without (a retry is
sent again, as a naive client would). A keyed run must apply no write twice
and lose none acknowledged; the exit code says whether every one did. A run
without keys is expected to apply some twice: the lesson. 503s and requests
with no answer are what faults cause, not errors of the app; a run that
acknowledged nothing fails, having proved nothing. Bounded: --seconds of
load per run, MAX_OPS_PER_USER per user, a bounded number of tries.
"""

import argparse
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadtests.clients.client import Client, Retry
from loadtests.clients.transport import KeepAliveSession
from loadtests.faults import schedules
from loadtests.faults.inject import Fault, WritesInFlight, kill_store, kill_worker, pause_store
from loadtests.faults.inject_postgres import PostgresWritesInFlight, crash_backend
from loadtests.faults.schedules import Planned, schedule
from loadtests.judge.checker import check, unexpected
from loadtests.judge.history import Event
from loadtests.judge.verdict import KIND, Verdict
from loadtests.runs import report
from loadtests.timeline import write_timeline
from plumbing.config import var_dir
from registry import APPS
from serve.processes import AppServer, available_apps, free_port, launcher

DEFAULT_SECONDS = 8.0
DEFAULT_USERS = 8
VISITOR_OPS = 20  # increments and appends per visitor; then it reads its list and leaves
MAX_OPS_PER_USER = 2000
RETRY = Retry(attempts=6, backoff=0.05)  # waits 0.05, 0.1, 0.2, 0.4, 0.8 s
WRITER_RETRY = Retry(attempts=10, backoff=0.05, cap=0.5)  # the writes in flight: 3.4 s of waits
FINAL_RETRY = Retry(attempts=20, backoff=0.05, cap=0.5)  # the last read: the store must be back
# A double apply without keys is expected; nothing else is.
EXPECTED_WITHOUT_KEYS = frozenset({"applied_twice", "visits_duplicated", "final_reads_wrong"})
DOUBLES = (KIND["applied_twice"].witness, KIND["visits_duplicated"].witness)
# How writes in flight meet each store's stopped server; Valkey's by default.
IN_FLIGHT = {"postgres": PostgresWritesInFlight}


@dataclass
class Run:
    """One app, keys on or off, for `seconds` of load: its history and faults."""

    app: str
    keys: bool
    seconds: float = DEFAULT_SECONDS
    users: int = DEFAULT_USERS
    history: list[Event] = field(default_factory=list)  # list.append is atomic
    faults: list[Fault] = field(default_factory=list)
    origin: float = 0.0
    url: str = ""
    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    # Users hold still between requests while the gate is shut (see hold()).
    gate: threading.Condition = field(default_factory=threading.Condition)
    open: bool = True
    busy: int = 0
    writers: list[Client] = field(default_factory=list)  # those of WritesInFlight

    def client(self, user: str, retry: Retry = RETRY) -> Client:
        return Client(
            self.url,
            f"{user}-{self.tag}",
            keys=self.keys,
            retry=retry,
            record=self.history.append,
            http=KeepAliveSession(),
        )

    def step(self, request: Callable[[], object]) -> None:
        """One request of a user (all its tries), once the gate is open."""
        with self.gate:
            self.gate.wait_for(lambda: self.open)
            self.busy += 1
        try:
            request()
        finally:
            with self.gate:
                self.busy -= 1
                self.gate.notify_all()

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Shut the gate and wait until no user is in a request; open it after."""
        with self.gate:
            self.open = False
            self.gate.wait_for(lambda: self.busy == 0)
        try:
            yield
        finally:
            with self.gate:
                self.open = True
                self.gate.notify_all()

    def user(self, index: int, deadline: float) -> None:
        """Visitor after visitor, each VISITOR_OPS increments and appends, then its list."""
        ops, visitor, counter = 0, 0, APPS[self.app].serves_counter
        while time.monotonic() < deadline and ops < MAX_OPS_PER_USER:
            visitor += 1
            client = self.client(f"f{index:02d}.{visitor}")
            for n in range(VISITOR_OPS):
                if time.monotonic() >= deadline:
                    break
                if counter:
                    self.step(client.increment)
                self.step(lambda client=client, n=n: client.add_visit(f"{client.user}/{n}"))
                ops += 1
            self.step(client.list_visits)
            client.close()

    @property
    def label(self) -> str:
        """The app as the harness prints it: "fixed_db (PostgreSQL)" (registry.py)."""
        return APPS[self.app].label(os.environ)

    def writes_in_flight(self, server: AppServer) -> WritesInFlight:
        """A writer per app thread: increments and appends in turn (appends
        only where the counter is not served); each reads its list at the end."""
        kind = IN_FLIGHT.get(server.backing.name, WritesInFlight)
        threads = server.workers() * int(server.setting("GUNICORN_THREADS"))
        writers = [self.client(f"w{i}", WRITER_RETRY) for i in range(threads)]
        self.writers += writers
        counter = APPS[self.app].serves_counter

        def warm(n: int, client: Client) -> None:
            if counter:
                client.increment()
            client.add_visit(f"{client.user}/warm{n}")

        def write(index: int, client: Client) -> None:
            if counter and index % 2 == 0:
                client.increment()
            else:
                client.add_visit(f"{client.user}/in-flight")

        return kind(writers, warm, write, self.hold)

    def inject(self, fault: str, server: AppServer) -> Fault:
        """The fault of that name (loadtests/faults/schedules.py), now."""
        store = server.backing
        if fault == schedules.WRITES_IN_FLIGHT:
            return self.writes_in_flight(server).run(server, self.origin)
        if fault == schedules.PAUSE_STORE:
            return pause_store(store, schedules.PAUSE_SECONDS, self.origin)
        if fault == schedules.KILL_STORE:
            return kill_store(store, self.origin)
        if fault == schedules.CRASH_BACKEND:
            return crash_backend(store, self.origin)
        if fault == schedules.KILL_WORKER:
            return kill_worker(server, self.history, self.origin)
        raise ValueError(f"no fault named {fault!r}")

    def go(self, plan: tuple[Planned, ...] | None = None) -> Verdict:
        # A data folder of the run's own: it starts from known state and never
        # touches what `make run` serves (serve/processes.py run_folder()).
        with AppServer(self.app, free_port(), own_folder="faults") as server:
            if plan is None:
                plan = schedule(server.backing.name if server.backing else None)
            self.url = server.url
            if APPS[self.app].serves_counter:
                self.client("reset").reset()
            self.origin = time.monotonic()
            deadline = self.origin + self.seconds
            users = [
                threading.Thread(target=self.user, args=(i, deadline)) for i in range(self.users)
            ]
            for thread in users:
                thread.start()
            try:
                for planned in plan:
                    at = self.origin + planned.at * self.seconds
                    time.sleep(max(0.0, at - time.monotonic()))
                    self.faults.append(self.inject(planned.fault, server))
            finally:
                for thread in users:
                    thread.join()
            for writer in self.writers:
                writer.list_visits()
                writer.close()
            if APPS[self.app].serves_counter:
                self.client("final", FINAL_RETRY).read_counter()
        return check(self.history)

    def problems(self, verdict: Verdict) -> list[str]:
        expected = frozenset() if self.keys else EXPECTED_WITHOUT_KEYS
        return unexpected(self.app, verdict, APPS[self.app].known_limits | expected, faults=True)

    def row(self, verdict: Verdict) -> dict[str, Any]:
        return {
            "app": self.label,
            "backend": APPS[self.app].backend(os.environ) or "",
            "keys": "on" if self.keys else "off",
            **verdict.counts(),
            "writes_applied_twice": verdict.writes_applied_twice,
            "writes_lost": verdict.writes_lost,
            "anomalies": verdict.anomalies,
        }


def fault_apps() -> list[str]:
    """The fixed apps in this checkout, each with a write to retry."""
    return [app for app in available_apps() if APPS[app].is_fixed]


def verdict_line(run: Run, verdict: Verdict) -> str:
    keys = "with keys" if run.keys else "without keys"
    if problems := run.problems(verdict):
        return "UNEXPECTED: " + "; ".join(f"{p} ({keys})" for p in problems)
    if run.keys:
        return f"as expected: {run.label} {keys} applied every write at most once, lost none"
    if verdict.writes_applied_twice:
        n = verdict.writes_applied_twice
        writes = "a write" if n == 1 else f"{n} writes"
        return f"as expected: {run.label} {keys} applied {writes} twice, retried after faults"
    return f"{run.label} {keys}: no write applied twice this run (no fault caught one mid-write)"


@launcher
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.faults.run", description=__doc__.split("\n")[0]
    )
    parser.add_argument("apps", nargs="*", metavar="APP", help=" | ".join(fault_apps()))
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="of load per run")
    parser.add_argument("--users", type=int, default=DEFAULT_USERS, help="concurrent users")
    parser.add_argument("--out", type=Path, default=var_dir() / "results", help="folder")
    args = parser.parse_args(argv)
    apps = args.apps or fault_apps()
    if unknown := [a for a in apps if a not in fault_apps()]:
        parser.error(f"not a fixed app in this checkout: {unknown[0]}")

    judged: list[tuple[Run, Verdict]] = []
    timelines: list[Path] = []
    payload: dict[str, Any] = {"started": datetime.now(UTC).isoformat(), "runs": []}
    for app in apps:
        for keys in (True, False):
            run = Run(app, keys, args.seconds, args.users)
            print(f"{run.label}, keys {'on' if keys else 'off'}: {run.users} users for "
                  f"{run.seconds:.0f} s with faults ...", flush=True)  # fmt: skip
            verdict = run.go()
            for fault in run.faults:
                print(f"  {fault}", flush=True)
            judged.append((run, verdict))
            name = f"timeline-faults-{app}-keys-{'on' if keys else 'off'}.html"
            title = f"{run.label}, keys {'on' if keys else 'off'}, with faults"
            timelines.append(
                write_timeline(args.out / name, title, run.history, verdict, run.faults, run.origin)
            )
            payload["runs"].append(
                {
                    "summary": run.row(verdict),
                    "faults": [vars(f) for f in run.faults],
                    "history": [e.to_dict() for e in run.history],
                }
            )

    rows = [run.row(verdict) for run, verdict in judged]
    print()
    print(report.format_table(rows, report.FAULT_COLUMNS))
    doubles = [(a, run) for run, v in judged for a in v.examples if a.kind in DOUBLES]
    if doubles:
        anomaly, run = min(doubles, key=lambda found: report.size(found[0]))
        keys = "with keys" if run.keys else "without keys"
        print(f"\nsmallest witness of a double apply ({run.label}, {keys}):")
        print("  " + report.format_anomaly(anomaly, run.origin).replace("\n", "\n  "))
    print()
    lines = [verdict_line(run, verdict) for run, verdict in judged]
    for line in lines:
        print(line, flush=True)
    written = [
        report.write_json(args.out / "faults.json", payload),
        report.write_csv(args.out / "faults.csv", rows),
        *timelines,
    ]
    print("\nresults: " + ", ".join(str(path) for path in written), flush=True)
    problems = [line for line in lines if line.startswith("UNEXPECTED")]
    for line in problems:
        print(line, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
