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
Data (loadtests/correctness_tab.py). A headless run prints the same summary
at the end and exits 1 when an app that should be correct is not
(loadtests.checker.unexpected: the fixed apps show nothing beyond their known
limits in serve/registry.py; broken_global's anomalies are the expected
result). The app is known from its /healthz answer.

This file holds the users and Locust's hooks. The verdict over a growing run
is loadtests/tally.py; distributed, the workers send what they record to the
master every second (loadtests/relay.py) and the master checks the union, so
one tab shows the whole run. Run it from the
repository root (`make locust` does all of this and starts the app):

    python -m locust -f loadtests/locustfile.py --host http://127.0.0.1:5000 \\
        --web-host 127.0.0.1                   # Locust's default is every address
    python -m locust -f loadtests/locustfile.py --host http://127.0.0.1:5002 \\
        --headless --users 24 --spawn-rate 24 --run-time 20s
    python -m locust -f loadtests/locustfile.py --headless ... --judge-as fixed_db

(--judge-as applies another app's rules: broken_global judged as fixed_db
shows what a failing run looks like.)
"""

import logging
import secrets
from typing import Any

import gevent
import requests
from locust import HttpUser, constant, events, task
from locust.clients import HttpSession
from locust.env import Environment
from locust.runners import (
    STATE_CLEANUP,
    STATE_RUNNING,
    STATE_SPAWNING,
    MasterRunner,
    WorkerRunner,
)

from loadtests.checker import NOT_SERVED
from loadtests.client import Client
from loadtests.correctness_tab import add_correctness_tab, format_summary, problems
from loadtests.history import Event
from loadtests.relay import EPOCH, EVENTS, GRACEFUL_STOP_SECONDS, HELLO, RUN, SYNC
from serve.registry import APPS

log = logging.getLogger(__name__)

ARTICLES_PER_VISITOR = 5
# A browser's connection does not live for ever. A new one may be accepted by
# another worker process, as behind a load balancer: without that, a few kept-
# alive connections can all sit on one process and hide the divergence.
RECONNECT_EVERY = 20
TABS = 8
HARNESS = "reset and final read"  # what the master (or the lone process) sends itself


# -- what Locust's statistics say of each response ---------------------------------

# The type of the value each operation answers with (client.ROUTES names its key).
ANSWER_TYPES = {"increment": int, "read": int, "reset": int, "add_visit": list}
ANSWER_TYPES |= {"list_visits": list, "greet": str, "healthz": str}


def judge(event: Event) -> str:
    """What one response shows on its own: "" when it is fine, else a short reason
    (short and general: Locust groups its failures by the reason)."""
    if event.status == 0:
        return "no answer"
    if event.status == NOT_SERVED:
        return ""  # the app says this scope is not its job (fixed_session's counter)
    if not event.ok:
        return f"HTTP {event.status}"
    if not isinstance(event.value, ANSWER_TYPES[event.op]):
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
        choices=list(APPS),
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
        served = app.app_name()
    except (requests.RequestException, ValueError, KeyError) as error:
        log.error("%s/healthz did not say which app it is: %s", app.base_urls[0], error)
        served = "unknown"
    RUN.served_app = served
    RUN.app = getattr(environment.parsed_options, "judge_as", None) or served
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
