"""Locust users for the three scopes of state, judged by the same rules as the hammer.

Every request goes through loadtests.clients.client, is marked a success or
a failure in Locust's statistics by what one response can show, and is
recorded as an Event that feeds the judge as it arrives
(loadtests/judge/tally.py). CounterUser increments; VisitsUser is a new
visitor per task, five appends then its list, and one task in five is one
user with eight tabs appending at once; GreetUser asks for its own name.
Locust's hooks are in hooks.py, the relay of events to the master in
relay.py, the Correctness tab in correctness_tab.py; what each shows is in
loadtests/README.md (Locust). `make locust` starts the app and this:

    python -m locust -f loadtests/swarm/locustfile.py --host http://127.0.0.1:5000 \\
        --web-host 127.0.0.1                   # Locust's default is every address
    python -m locust -f loadtests/swarm/locustfile.py --headless ... --judge-as fixed_db
"""

import secrets

import gevent
from locust import HttpUser, constant, task
from locust.clients import HttpSession
from urllib3.util import Retry

from loadtests.clients.client import Client
from loadtests.judge.compact import compact
from loadtests.judge.history import Event
from loadtests.judge.writes import NOT_SERVED
from loadtests.swarm import hooks  # noqa: F401  (Locust's hooks register when it is imported)
from loadtests.swarm.relay import RUN

ARTICLES_PER_VISITOR = 5
# A browser's connection does not live for ever. A new one may be accepted by
# another worker process, as behind a load balancer: without that, a few kept-
# alive connections can all sit on one process and hide the divergence.
RECONNECT_EVERY = 20
TABS = 8
# A connection that could not be opened carried nothing: the request never
# reached the app, so sending it again is safe whatever it does. urllib3's
# `connect` retries are exactly those ("errors raised before the request is
# sent to the remote server", urllib3.util.Retry). A failure once the request
# may have left is never retried: its outcome is unknown, and the checker
# counts it so (verdict.Verdict.no_answer, writes.AMBIGUOUS).
NOT_SENT = Retry(total=3, connect=3, read=False, status=0, other=0, redirect=False)


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


def retry_not_sent(session: HttpSession) -> HttpSession:
    for adapter in session.adapters.values():
        adapter.max_retries = NOT_SENT
    return session


class CounterUser(HttpUser):
    """Shared by all users: every answer to an increment is recorded."""

    wait_time = constant(0)

    def on_start(self) -> None:
        name = f"c-{secrets.token_hex(3)}"
        self.who = Client(hosts(self), name, http=retry_not_sent(self.client), judge=judge)
        self.sent = 0

    @task
    def increment(self) -> None:
        epoch = RUN.epoch
        RUN.record([self.who.increment()], epoch)
        self.sent += 1
        if self.sent % RECONNECT_EVERY == 0:
            self.client.close()  # the next request opens a new connection


class VisitsUser(HttpUser):
    """One user's list: a new visitor per task, so each task is judged on its own.
    Each answer is cut down to what the checker reads of it as soon as it
    arrives (loadtests/judge/compact.py): broken_global's list grows all run long."""

    wait_time = constant(0)

    def on_start(self) -> None:
        self.token = secrets.token_hex(3)
        self.visitors = 0
        retry_not_sent(self.client)
        # Each tab keeps its own kept-alive connection from one task to the next.
        self.tab_sessions = [
            retry_not_sent(HttpSession(self.host, self.environment.events.request, self))
            for _ in range(TABS)
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
        unit = [
            compact(visitor.add_visit(f"{visitor.user}/{n}")) for n in range(ARTICLES_PER_VISITOR)
        ]
        unit.append(compact(visitor.list_visits()))
        RUN.record(unit, epoch)

    @task(1)
    def tabs(self) -> None:
        """One user, many tabs: concurrent appends that share one cookie."""
        epoch = RUN.epoch
        owner = self.new_visitor(scenario="tabs")
        unit = [compact(owner.add_visit(f"{owner.user}/first"))]  # sets the cookie the tabs share
        tabs = [owner.another_tab(http=session) for session in self.tab_sessions]
        appends = [
            gevent.spawn(lambda tab, i: compact(tab.add_visit(f"{tab.user}/{i}")), tab, i)
            for i, tab in enumerate(tabs)
        ]
        gevent.joinall(appends, raise_error=True)
        unit += [greenlet.value for greenlet in appends]
        unit.append(compact(owner.list_visits()))
        RUN.record(unit, epoch)


class GreetUser(HttpUser):
    """One request's data: every greeting must name the caller."""

    wait_time = constant(0)

    def on_start(self) -> None:
        name = f"g-{secrets.token_hex(3)}"
        self.who = Client(hosts(self), name, http=retry_not_sent(self.client), judge=judge)

    @task
    def greet(self) -> None:
        epoch = RUN.epoch
        RUN.record([self.who.greet(self.who.user)], epoch)
