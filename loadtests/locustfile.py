"""Locust users for the three scopes of state, judged by the same checker as the hammer.

Every request goes through loadtests.client (the one module that knows the
routes), is marked a success or a failure in Locust's statistics by what one
response can show (status, shape, a greeting for someone else), and is
recorded as a client.Event. The recorded history feeds loadtests.checker:

    counter  CounterUser increments the shared counter. The counter is reset
             when a test starts and read once when it stops, after every
             user has finished its last request.
    visits   VisitsUser is a new visitor (a fresh cookie) for each task: five
             appends one after another, then its list. One task in five is
             the "one user, many tabs" scenario: eight tabs with the same
             cookie append at the same moment, then the list is read.
    greet    GreetUser asks to be greeted by its own name.

A "Correctness" tab in the web UI counts each anomaly per scope with its
latest witness, live; "Reset Stats" starts it over; a CSV is under Download
Data. A headless run prints the same summary at the end and exits 1 when an
app that should be correct is not (loadtests.hammer.expectations_met: the
fixed apps show nothing beyond their KNOWN_LIMITS; broken_global's anomalies
are the expected result). The app is known from its /healthz answer.

Distributed, the workers send what they record to the master every second;
the master checks the union, so one tab shows the whole run. Run it from the
repository root (`make locust` does all of this and starts the app):

    python -m locust -f loadtests/locustfile.py --host http://127.0.0.1:5000 \\
        --web-host 127.0.0.1                   # Locust's default is every address
    python -m locust -f loadtests/locustfile.py --host http://127.0.0.1:5002 \\
        --headless --users 24 --spawn-rate 24 --run-time 20s
    python -m locust -f loadtests/locustfile.py --headless ... --judge-as fixed_db

(--judge-as applies another app's rules: broken_global judged as fixed_db
shows what a failing run looks like.)
"""

import csv
import io
import json
import logging
import secrets
import time
from collections import Counter
from dataclasses import fields
from typing import Any

import gevent
import requests
from flask import Response, jsonify, request
from locust import HttpUser, constant, events, task
from locust.clients import HttpSession
from locust.env import Environment
from locust.exception import RPCError
from locust.runners import (
    STATE_CLEANUP,
    STATE_RUNNING,
    STATE_SPAWNING,
    MasterRunner,
    WorkerRunner,
)

from loadtests import report
from loadtests.checker import NOT_SERVED, Anomaly, Verdict, check
from loadtests.client import Client, Event
from loadtests.hammer import KNOWN_LIMITS, expectations_met
from serve.processes import APPS

log = logging.getLogger(__name__)

ARTICLES_PER_VISITOR = 5
# A browser's connection does not live for ever. A new one may be accepted by
# another worker process, as behind a load balancer: without that, a few kept-
# alive connections can all sit on one process and hide the divergence.
RECONNECT_EVERY = 20
TABS = 8
GRACEFUL_STOP_SECONDS = 3.0  # users finish the request they are in: nothing left unrecorded
FLUSH_SECONDS = 1.0  # how often a worker sends what it recorded
SYNC_TIMEOUT_SECONDS = GRACEFUL_STOP_SECONDS + 15.0
CHUNK_EVENTS = 2000  # visits and greet are checked in chunks of about this many events
REFRESH_SECONDS = 2.0  # the web UI asks for stats every 2 s
COUNTER_OPS = {"increment", "read", "reset"}
HARNESS = "reset and final read"  # what the master (or the lone process) sends itself

# Messages between master and workers.
EVENTS, EPOCH, SYNC = "correctness_events", "correctness_epoch", "correctness_sync"
HELLO = "correctness_hello"


# -- what Locust's statistics say of each response ---------------------------------

SHAPES = {"increment": int, "read": int, "reset": int, "add_visit": list, "list_visits": list}
SHAPES |= {"greet": str, "healthz": str}


def judge(event: Event) -> str:
    """What one response shows on its own: "" when it is fine, else a short reason
    (short and general: Locust groups its failures by the reason)."""
    if event.status == 0:
        return "no answer"
    if event.status == NOT_SERVED:
        return ""  # the app says this scope is not its job (fixed_session's counter)
    if not event.ok:
        return f"HTTP {event.status}"
    if not isinstance(event.value, SHAPES[event.op]):
        return f"{event.op}: unexpected answer"
    if event.op == "greet" and event.value != f"Hello, {event.arg}!":
        return "greeting for someone else"
    return ""


# -- the users ----------------------------------------------------------------------


def hosts(user: HttpUser) -> list[str]:
    """--host, then any --more-hosts (instances of the same app): each user's
    requests take them in turn, starting from a different one per user, as a
    load balancer without sticky sessions would."""
    more = user.environment.parsed_options.more_hosts if user.environment.parsed_options else ""
    urls = [user.host, *filter(None, more.split(","))]
    first = secrets.randbelow(len(urls))
    return urls[first:] + urls[:first]


class CounterUser(HttpUser):
    """Shared by all users: every answer to an increment is recorded."""

    wait_time = constant(0)

    def on_start(self) -> None:
        name = f"c-{secrets.token_hex(3)}"
        self.who = Client(hosts(self), name, http=self.client, judge=judge)
        self.sent = 0

    @task
    def increment(self) -> None:
        epoch = RUN.epoch
        RUN.record([self.who.increment()], epoch)
        self.sent += 1
        if self.sent % RECONNECT_EVERY == 0:
            self.client.close()  # the next request opens a new connection


class VisitsUser(HttpUser):
    """One user's list: a new visitor per task, so each task is judged on its own."""

    wait_time = constant(0)

    def on_start(self) -> None:
        self.token = secrets.token_hex(3)
        self.visitors = 0
        # Each tab keeps its own kept-alive connection from one task to the next.
        self.tab_sessions = [
            HttpSession(self.host, self.environment.events.request, self) for _ in range(TABS)
        ]

    def new_visitor(self, scenario: str = "") -> Client:
        self.visitors += 1
        self.client.cookies.clear()  # no cookie: the app sees a new user
        self.client.close()  # ...on a connection of its own
        name = f"{scenario or 'v'}{self.visitors}-{self.token}"
        return Client(hosts(self), name, scenario=scenario, http=self.client, judge=judge)

    @task(4)
    def visit(self) -> None:
        epoch = RUN.epoch
        visitor = self.new_visitor()
        unit = [visitor.add_visit(f"{visitor.user}/{n}") for n in range(ARTICLES_PER_VISITOR)]
        unit.append(visitor.list_visits())
        RUN.record(unit, epoch)

    @task(1)
    def tabs(self) -> None:
        """One user, many tabs: concurrent appends that share one cookie."""
        epoch = RUN.epoch
        owner = self.new_visitor(scenario="tabs")
        unit = [owner.add_visit(f"{owner.user}/first")]  # sets the cookie the tabs share
        tabs = [owner.another_tab(http=session) for session in self.tab_sessions]
        appends = [gevent.spawn(tab.add_visit, f"{tab.user}/{i}") for i, tab in enumerate(tabs)]
        gevent.joinall(appends, raise_error=True)
        unit += [greenlet.value for greenlet in appends]
        unit.append(owner.list_visits())
        RUN.record(unit, epoch)


class GreetUser(HttpUser):
    """One request's data: every greeting must name the caller."""

    wait_time = constant(0)

    def on_start(self) -> None:
        self.who = Client(hosts(self), f"g-{secrets.token_hex(3)}", http=self.client, judge=judge)

    @task
    def greet(self) -> None:
        epoch = RUN.epoch
        RUN.record([self.who.greet(self.who.user)], epoch)


# -- the checker over a run that keeps growing --------------------------------------


class Tally:
    """The checker's verdict over everything recorded since the test started.

    The counter is checked whole each time: two processes repeat a value
    minutes apart; its witnesses come from the latest events. Visits and greet
    are checked once, in chunks of whole units (a unit is one visitor's
    appends and list, or one greeting): each visitor lives in one unit, so a
    chunk holds all it did, and the counts add up. Their witness is the
    latest chunk's."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.counter: list[Event] = []
        self.pending: list[list[Event]] = []
        self.judged = Verdict()  # sums over the chunks already checked
        self.latest: dict[str, Anomaly] = {}
        self.pids: set[str] = set()
        self.sources: Counter[str] = Counter()  # events per load generator
        self.last_error: Event | None = None
        self.origin: float | None = None
        self.cached: Verdict | None = None
        self.changed = True
        self.next_refresh = 0.0

    def add(self, units: list[list[Event]], source: str) -> None:
        for unit in units:
            self.sources[source] += len(unit)
            for event in unit:
                if event.worker:
                    self.pids.add(event.pid)
                if not event.ok and event.status != NOT_SERVED:
                    self.last_error = event
                if self.origin is None or event.start < self.origin:
                    self.origin = event.start
            if unit[0].op in COUNTER_OPS:
                self.counter += unit
            else:
                self.pending.append(unit)
        self.changed = True

    def verdict(self, live: bool = False) -> Verdict:
        """The merged verdict. Live (for the web UI), at most every REFRESH_SECONDS,
        or less often when checking takes long, so a big run does not stall the UI."""
        began = time.monotonic()
        if self.cached and (not self.changed or (live and began < self.next_refresh)):
            return self.cached
        units, self.pending, chunk = self.pending, [], []
        for unit in units:
            chunk += unit
            if len(chunk) >= CHUNK_EVENTS:
                self.judge_chunk(chunk)
                chunk = []
        if chunk:
            self.judge_chunk(chunk)
        merged = check(self.counter)
        if len(self.counter) > CHUNK_EVENTS:
            # The counts are the whole run's; the witness, the latest one.
            recent = {a.kind: a for a in check(self.counter[-CHUNK_EVENTS:]).examples}
            merged.examples = [recent.get(a.kind, a) for a in merged.examples]
        add_counts(merged, self.judged)
        merged.workers = len(self.pids)
        merged.examples += self.latest.values()
        self.cached, self.changed = merged, False
        self.next_refresh = time.monotonic() + max(REFRESH_SECONDS, 10 * (time.monotonic() - began))
        return merged

    def judge_chunk(self, chunk: list[Event]) -> None:
        part = check(chunk)
        add_counts(self.judged, part)
        self.latest.update({anomaly.kind: named_owner(anomaly) for anomaly in part.examples})


def named_owner(anomaly: Anomaly) -> Anomaly:
    """A leaked token appended in an earlier chunk has no owner in this chunk's
    history; tokens are "<visitor>/<n>", so the visitor is named from it."""
    if anomaly.kind != "visit leak" or len(anomaly.witness) != 1:
        return anomaly
    shown = anomaly.witness[0]
    token = next(t for t in shown.value if not t.startswith(f"{shown.user}/"))
    summary = f"{shown.user} was shown {token!r}, appended by {token.rpartition('/')[0]} earlier"
    return Anomaly(anomaly.kind, summary, anomaly.witness)


def add_counts(into: Verdict, part: Verdict) -> None:
    for name in ("operations", "errors", "not_served", *Verdict.COUNTS):
        setattr(into, name, getattr(into, name) + getattr(part, name))


# -- one process's part: record, send or gather, judge --------------------------------

EVENT_FIELDS = [f.name for f in fields(Event)]


def to_wire(unit: list[Event]) -> list[dict[str, Any]]:
    return [{name: getattr(event, name) for name in EVENT_FIELDS} for event in unit]


class Recorder:
    """Where this process's users put what they record.

    Local and master: into the Tally. Worker: into an outbox that is sent to
    the master. A new epoch (a new test, or Reset Stats) drops what a task
    that started before it records, so a visitor is never judged half."""

    def __init__(self) -> None:
        self.environment: Environment | None = None
        self.epoch = 0
        self.outbox: list[list[Event]] = []
        self.tally = Tally()
        self.strategy = "unknown"  # the app, as its /healthz says
        self.app = "unknown"  # whose rules judge the run: the same, or --judge-as
        self.sync_round = 0
        self.synced: set[str] = set()  # workers that sent all they had for this round
        self.workers: set[str] = set()  # every worker that ever said hello (master only)

    @property
    def is_worker(self) -> bool:
        return isinstance(self.environment.runner, WorkerRunner)

    @property
    def is_master(self) -> bool:
        return isinstance(self.environment.runner, MasterRunner)

    def record(self, unit: list[Event], epoch: int) -> None:
        if epoch != self.epoch:
            return  # begun before a reset: part of it was dropped with the rest
        if self.is_worker:
            self.outbox.append(unit)
        else:
            self.tally.add([unit], "local")

    # worker side
    def flush(self, sync_round: int | None = None) -> None:
        units, self.outbox = self.outbox, []
        if not units and sync_round is None:
            return
        self.environment.runner.send_message(
            EVENTS,
            {
                "epoch": self.epoch,
                "units": [to_wire(unit) for unit in units],
                "clock": time.time() - time.monotonic(),
                "sync_round": sync_round,
            },
        )

    def keep_flushing(self) -> None:
        while True:
            gevent.sleep(FLUSH_SECONDS)
            try:
                self.flush()
            except RPCError as error:  # the master is away for a moment: the next try
                log.warning("could not send events to the master: %s", error)

    # master side
    def receive(self, node_id: str, data: dict[str, Any]) -> None:
        if data["epoch"] == self.epoch:
            # Monotonic clocks of two hosts are unrelated; the wall clocks agree.
            shift = data["clock"] - (time.time() - time.monotonic())
            units = [[Event(**wire) for wire in unit] for unit in data["units"]]
            for unit in units:
                for event in unit:
                    event.start += shift
                    event.end += shift
            self.tally.add(units, node_id)
        if data["sync_round"] == self.sync_round:
            self.synced.add(node_id)

    def new_epoch(self) -> None:
        self.epoch += 1
        self.tally.clear()
        for worker in self.workers:
            self.tell_epoch(worker)

    def tell_epoch(self, worker: str) -> None:
        # By id: a worker that reported "stopped" is off runner.clients until it
        # is ready again, and must hear it all the same.
        self.environment.runner.send_message(EPOCH, {"epoch": self.epoch}, client_id=worker)

    def gather_from_workers(self) -> None:
        """Ask every worker to stop its users and send all it recorded; wait for it."""
        runner = self.environment.runner
        self.sync_round += 1
        self.synced = set()
        # The workers in this test; one that quit since then is waited for in vain.
        workers = {client.id for client in runner.clients.all} | set(self.tally.sources)
        workers &= self.workers
        for worker in workers:
            runner.send_message(SYNC, {"sync_round": self.sync_round}, client_id=worker)
        deadline = time.monotonic() + SYNC_TIMEOUT_SECONDS
        while not workers <= self.synced and time.monotonic() < deadline:
            gevent.sleep(0.05)
        if missing := workers - self.synced:
            log.warning("no final events from workers %s: judged without them", sorted(missing))

    def app_client(self) -> Client:
        """The master's own client, for the reset, the final read and /healthz."""
        return Client(self.environment.host or "", "master")


RUN = Recorder()


# -- Locust's hooks ------------------------------------------------------------------


@events.init_command_line_parser.add_listener
def add_options(parser: Any) -> None:
    parser.add_argument(
        "--more-hosts",
        default="",
        include_in_web_ui=False,
        help="comma-separated base URLs of further instances of the same app",
    )
    parser.add_argument(
        "--judge-as",
        choices=APPS,
        default=None,
        include_in_web_ui=False,
        help="judge the run by this app's rules instead of those of the app /healthz names",
    )


@events.init.add_listener
def on_init(environment: Environment, **_kwargs: Any) -> None:
    RUN.environment = environment
    if not environment.stop_timeout:
        # Killed mid-request, an increment would be counted by the app and not
        # by us, and the final read would look wrong.
        environment.stop_timeout = GRACEFUL_STOP_SECONDS
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        runner.register_message(EPOCH, on_epoch)
        runner.register_message(SYNC, on_sync, concurrent=True)
        runner.greenlet.spawn(RUN.keep_flushing)
        runner.send_message(HELLO)  # connected before this file's hooks were in place
    elif isinstance(runner, MasterRunner):
        runner.register_message(EVENTS, lambda msg, **_: RUN.receive(msg.node_id, msg.data))
        runner.register_message(HELLO, lambda msg, **_: on_hello(msg.node_id))
    if environment.web_ui:
        add_correctness_tab(environment)


def on_hello(worker: str) -> None:
    RUN.workers.add(worker)
    RUN.tell_epoch(worker)  # a worker that joins late records for the current test


def on_epoch(environment: Environment, msg: Any, **_kwargs: Any) -> None:
    RUN.epoch = msg.data["epoch"]
    RUN.outbox.clear()


def on_sync(environment: Environment, msg: Any, **_kwargs: Any) -> None:
    runner = environment.runner
    if runner.state in (STATE_RUNNING, STATE_SPAWNING):
        runner.stop()  # gracefully: each user finishes the request it is in
    while runner.state == STATE_CLEANUP:  # a stop the master asked for, still under way
        gevent.sleep(0.05)
    RUN.flush(sync_round=msg.data["sync_round"])


@events.test_start.add_listener
def on_test_start(environment: Environment, **_kwargs: Any) -> None:
    if RUN.is_worker:
        RUN.outbox.clear()
        return
    RUN.new_epoch()  # a new test, a new history (Locust clears its statistics too)
    app = RUN.app_client()
    try:
        strategy = app.strategy()
    except (requests.RequestException, ValueError, KeyError) as error:
        log.error("%s/healthz did not say which app it is: %s", app.base_urls[0], error)
        strategy = "unknown"
    RUN.strategy = strategy
    RUN.app = getattr(environment.parsed_options, "judge_as", None) or strategy
    RUN.tally.add([[app.reset()]], HARNESS)  # the checker's final-read rule counts from here
    app.close()


@events.test_stop.add_listener
def on_test_stop(environment: Environment, **_kwargs: Any) -> None:
    if RUN.is_worker:
        RUN.flush()
        return
    if RUN.is_master:
        RUN.gather_from_workers()
    # Every user has stopped and everything is in: the counter's final value.
    app = RUN.app_client()
    RUN.tally.add([[app.read_counter()]], HARNESS)
    app.close()


@events.reset_stats.add_listener
def on_reset_stats(**_kwargs: Any) -> None:
    # Tasks under way when the button is pressed are dropped whole (see Recorder).
    RUN.new_epoch()


@events.quitting.add_listener
def on_quitting(environment: Environment, **_kwargs: Any) -> None:
    if RUN.is_worker:
        return
    if environment.runner.state in (STATE_RUNNING, STATE_SPAWNING):
        environment.runner.stop()  # Ctrl-C mid-test: stop cleanly, then sum it up
    verdict = RUN.tally.verdict()
    headless = bool(environment.parsed_options and environment.parsed_options.headless)
    if verdict.operations or headless:
        print(format_summary(verdict), flush=True)
    if headless:
        environment.process_exit_code = 1 if problems(verdict) else 0


# -- what the tab, the CSV and the console show ---------------------------------------

ANOMALIES = (  # scope, title, Verdict field, the checker's anomaly kind
    ("counter", "lost updates", "lost_updates", "lost update"),
    ("counter", "divergence", "divergence", "divergence"),
    ("counter", "final read wrong", "final_reads_wrong", "final value"),
    ("visits", "visits lost", "visits_lost", "lost visit"),
    ("visits", "tabs lost", "tabs_lost", "lost tab"),
    ("visits", "visits leaked", "visits_leaked", "visit leak"),
    ("visits", "visits duplicated", "visits_duplicated", ""),
    ("greet", "greet leaks", "greet_leaks", "greet leak"),
)
COLUMNS = (("scope", "Scope"), ("anomaly", "Anomaly"), ("count", "Count"))
COLUMNS += (("example", "Latest example"), ("witness", "Witness (the requests that prove it)"))


def problems(verdict: Verdict) -> list[str]:
    found = expectations_met(RUN.app, verdict)
    if not verdict.operations:
        found.append("no operation was recorded")
    return found


def verdict_line(verdict: Verdict) -> str:
    if found := problems(verdict):
        return "UNEXPECTED: " + "; ".join(found)
    limits = ", ".join(sorted(KNOWN_LIMITS.get(RUN.app, ())))
    if RUN.app.startswith("fixed_"):
        allowed = f" beyond its known limits ({limits})" if limits else ""
        return f"as expected: {RUN.app} shows no anomaly{allowed}"
    if RUN.app != "broken_global":
        return f"{verdict.anomalies} anomalies; no rule for an app that /healthz does not name"
    if verdict.anomalies:
        return f"as expected: {RUN.app} shows {verdict.anomalies} anomalies, the lesson"
    return f"{RUN.app}: no anomaly yet (it takes concurrent users)"


def rows(verdict: Verdict) -> list[dict[str, Any]]:
    origin = RUN.tally.origin or 0.0
    examples = {anomaly.kind: anomaly for anomaly in verdict.examples}
    table = []
    for scope, title, name, kind in ANOMALIES:
        count: Any = getattr(verdict, name)
        if scope == "counter" and not verdict.counter_served:
            count = "n/a"  # the app answers 501: nothing to judge
        anomaly = examples.get(kind)
        example, witness = "", ""
        if anomaly:
            lines = report.format_anomaly(anomaly, origin).splitlines()
            example = lines[0]
            witness = " | ".join(line.strip() for line in lines[1:])
        if name == "divergence" and verdict.counter_served:
            example = example or f"none across {verdict.workers} app processes"
        table.append(
            {
                "scope": scope,
                "anomaly": title,
                "count": count,
                "example": example,
                "witness": witness,
            }
        )
    sources = ", ".join(f"{name}: {n}" for name, n in sorted(RUN.tally.sources.items()))
    error = RUN.tally.last_error
    run = (
        ("operations", verdict.operations, f"by load generator: {sources}"),
        ("app processes seen", verdict.workers, "distinct pids in X-Worker"),
        ("errors", verdict.errors, error and f"{error.op} -> {error.status} {error.error}"),
        ("not served (501)", verdict.not_served, ""),
        ("verdict", RUN.app, verdict_line(verdict)),
    )
    for title, count, example in run:
        row = {"scope": "run", "anomaly": title, "count": count, "example": example or ""}
        table.append({**row, "witness": ""})
    return table


def format_summary(verdict: Verdict) -> str:
    table = rows(verdict)
    widths = {key: max(len(str(row[key])) for row in table) for key in ("scope", "anomaly")}
    judged = f" judged as {RUN.app}" if RUN.app != RUN.strategy else ""
    lines = [f"\nCorrectness of {RUN.strategy}{judged}, checked from the recorded history:"]
    for row in table:
        lines.append(
            f"  {row['scope']:<{widths['scope']}}  {row['anomaly']:<{widths['anomaly']}}  "
            f"{row['count']!s:>6}  {row['example']}"
        )
    if verdict.examples:
        lines.append("witnesses:")
        origin = RUN.tally.origin or 0.0
        for anomaly in verdict.examples:
            lines.append("  " + report.format_anomaly(anomaly, origin).replace("\n", "\n  "))
    return "\n".join(lines)


def to_csv(table: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[key for key, _ in COLUMNS])
    writer.writeheader()
    writer.writerows(table)
    return out.getvalue()


def add_correctness_tab(environment: Environment) -> None:
    """Locust's web UI extension hooks: an extra tab and table fed from the stats
    the UI polls, a JSON view, and a CSV among the downloads."""
    web_ui = environment.web_ui
    base = (getattr(environment.parsed_options, "web_base_path", "") or "").rstrip("/")
    web_ui.template_args["extended_tabs"] = [{"title": "Correctness", "key": "correctness"}]
    web_ui.template_args["extended_tables"] = [
        {"key": "correctness", "structure": [{"key": k, "title": t} for k, t in COLUMNS]}
    ]
    web_ui.template_args["extended_csv_files"] = [
        {"href": "./correctness/csv", "title": "Download correctness CSV"}
    ]

    @web_ui.app.after_request
    def add_correctness_rows(response: Response) -> Response:
        if request.path != f"{base}/stats/requests" or response.status_code != 200:
            return response
        table = rows(RUN.tally.verdict(live=True))
        stats = response.get_json()
        stats["extended_stats"] = [{"key": "correctness", "data": table}]
        response.set_data(json.dumps(stats))
        return response

    @web_ui.app.route(f"{base}/correctness")
    def correctness_json() -> Response:
        verdict = RUN.tally.verdict(live=True)
        return jsonify(
            {
                "app": RUN.app,
                "counts": verdict.counts(),
                "sources": RUN.tally.sources,
                "rows": rows(verdict),
            }
        )

    @web_ui.app.route(f"{base}/correctness/csv")
    def correctness_csv() -> Response:
        name = f"correctness_{RUN.app}_{time.strftime('%Y%m%d-%H%M%S')}.csv"
        return Response(
            to_csv(rows(RUN.tally.verdict(live=True))),
            mimetype="text/csv",
            headers={"Content-Disposition": f"attachment; filename={name}"},
        )
