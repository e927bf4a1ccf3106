"""The one module that knows the apps' routes and URLs.

Every call returns a loadtests.judge.history.Event, the unit of a recorded
history; the judge reads nothing else:

    client = Client("http://127.0.0.1:5000", user="u01")   # make run-broken
    client.increment()
    # Event(op='increment', user='u01', ..., status=200, value=1, worker='7872-7877',
    #       key='179867-2', attempt=1, outcome='', replayed=False)

A write's `key` names its logical request: a request id of the client's own,
or with keys=True an Idempotency-Key header, a fresh uuid4 per request
(after a first GET / for its cookie: a key needs one). With
a Retry it tries again after no answer or a 503, handing every try to
`record`. A Client drives a requests.Session by default, or a session it is
given: the hammer's KeepAliveSession, or Locust's HttpSession, where a
`judge` marks each request a success or a failure by its Event.
"""

import itertools
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import requests

from loadtests.clients.transport import TRANSPORT_ERRORS, NotSent
from loadtests.judge.history import NOT_APPLIED, UNKNOWN, WRITES, Event

TIMEOUT_SECONDS = 10.0
KEY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# Request ids for writes sent without a key: unique across the processes of a
# run (Locust's workers), and cheap: a counter, no system call per request.
REQUEST_IDS = itertools.count(1)
PROCESS_TAG = secrets.token_hex(3)


# op: (method, path, the JSON key holding the answer)
ROUTES = {
    "healthz": ("GET", "/healthz", "status"),
    "increment": ("POST", "/counter/increment", "value"),
    "read": ("GET", "/counter", "value"),
    "reset": ("POST", "/counter/reset", "value"),
    "add_visit": ("POST", "/visits", "visits"),
    "list_visits": ("GET", "/visits", "visits"),
    "greet": ("GET", "/greet", "greeting"),
}


class Retry:
    """When a Client tries a request again, and how long it waits first.

    A request that got no answer (status 0) or a 503 is sent again, up to
    `attempts` tries in all; before try n+1 the client sleeps `backoff` *
    2**(n-1) seconds, at most `cap` (0.05, 0.1, 0.2, ... 1.0 s by default).
    A write keeps the Idempotency-Key of its first try, if the client sends
    keys; without keys it is simply sent again, as a naive client that reads
    "retry" would."""

    def __init__(self, attempts: int = 5, backoff: float = 0.05, cap: float = 1.0) -> None:
        self.attempts = attempts
        self.backoff = backoff
        self.cap = cap

    def wants(self, event: Event) -> bool:
        return (event.status == 0 or event.status == 503) and event.attempt < self.attempts

    def wait(self, event: Event) -> None:
        """Called after a failed try, before the next one (a test may hold it here)."""
        time.sleep(min(self.backoff * 2 ** (event.attempt - 1), self.cap))


class Client:
    """One user: a cookie jar and a kept-alive connection to one app.

    With `keys`, every write carries an Idempotency-Key header, a fresh uuid4
    per logical request. With a `retry`, a request that got no answer or a
    503 is tried again (see Retry), and every try is handed to `record`: the
    call returns the last one only."""

    def __init__(
        self,
        base_url: str | Sequence[str],
        user: str,
        timeout: float = TIMEOUT_SECONDS,
        scenario: str = "",
        *,
        http: requests.Session | None = None,
        judge: Callable[[Event], str] | None = None,
        keys: bool = False,
        retry: Retry | None = None,
        record: Callable[[Event], None] | None = None,
    ) -> None:
        # Several base URLs: instances of one app, taken in turn by each request,
        # as a load balancer without sticky sessions would.
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        self.base_urls = [url.rstrip("/") for url in urls]
        self.turns = itertools.cycle(self.base_urls)
        self.user = user
        self.timeout = timeout
        self.scenario = scenario
        self.http = requests.Session() if http is None else http
        self.judge = judge  # "" for a good answer, else why not (needs Locust's HttpSession)
        if retry and not record:
            raise ValueError("a client that retries needs `record`: every try is in the history")
        self.keys = keys
        self.retry = retry
        self.record = record

    def another_tab(self, http: requests.Session | None = None) -> "Client":
        """The same user (same cookies) on a connection of its own."""
        tab = Client(
            self.base_urls,
            self.user,
            self.timeout,
            self.scenario,
            http=http,
            judge=self.judge,
            keys=self.keys,
            retry=self.retry,
            record=self.record,
        )
        tab.http.cookies.clear()  # a reused session may hold another user's cookie
        tab.http.cookies.update(self.http.cookies)
        return tab

    def healthz(self, base_url: str | None = None) -> Event:
        """GET /healthz on the next instance in turn, or on `base_url`, one of
        the client's (Placement settles each instance's connection on its own)."""
        return self._call("healthz", base_url=base_url)

    def app_name(self) -> str:
        """The app's folder name, as its /healthz answer says ("strategy")."""
        method, path, _ = ROUTES["healthz"]
        response = self.http.request(method, self.base_urls[0] + path, timeout=self.timeout)
        if response.status_code != 200:
            raise ValueError(f"/healthz answered {response.status_code}")
        return str(response.json()["strategy"])

    def increment(self) -> Event:
        return self._call("increment")

    def read_counter(self) -> Event:
        return self._call("read")

    def reset(self) -> Event:
        return self._call("reset")

    def add_visit(self, article: str) -> Event:
        return self._call("add_visit", article, json={"article": article})

    def list_visits(self) -> Event:
        return self._call("list_visits")

    def greet(self, name: str) -> Event:
        return self._call("greet", name, params={"name": name})

    def close(self) -> None:
        self.http.close()

    def _call(
        self, op: str, arg: str | None = None, base_url: str | None = None, **kwargs: Any
    ) -> Event:
        key = ""
        if op in WRITES:
            if self.keys:
                self._first_contact()
                key = str(uuid.uuid4())
                kwargs["headers"] = {KEY_HEADER: key}
            else:
                key = f"{PROCESS_TAG}-{next(REQUEST_IDS)}"
        event = self._send(op, arg, key, 1, kwargs, base_url)
        if self.record is None:
            return event
        while self.retry and self.retry.wants(event):
            self.record(event)
            self.retry.wait(event)
            event = self._send(op, arg, key, event.attempt + 1, kwargs, base_url)
        self.record(event)
        return event

    def _first_contact(self) -> None:
        """Before a user's first keyed write, GET / for its cookie: a key is
        looked up only for a user the app already knows (no cookie: a 428).
        The page touches no store, so it is not part of the history."""
        for attempt in range(5):
            if self.http.cookies:
                return
            try:
                self.http.request("GET", self.base_urls[0] + "/", timeout=self.timeout)
            except TRANSPORT_ERRORS:  # the write itself will then say what is wrong
                time.sleep(0.05 * 2**attempt)

    def _send(
        self,
        op: str,
        arg: str | None,
        key: str,
        attempt: int,
        kwargs: dict,
        base_url: str | None = None,
    ) -> Event:
        """One try: an Event, whatever happened. To `base_url` if given, else
        to the next instance in turn."""
        method, path, field = ROUTES[op]
        if self.judge:
            # One statistics row per route, whatever the query string says.
            kwargs.update(catch_response=True, name=path)
        start = time.monotonic()
        try:
            response = self.http.request(
                method, (base_url or next(self.turns)) + path, timeout=self.timeout, **kwargs
            )
        except TRANSPORT_ERRORS as error:  # requests' own errors are OSErrors too
            # Nothing left (NotSent), else it may have reached the app: unknown.
            outcome = NOT_APPLIED if isinstance(error, NotSent) else UNKNOWN
            return Event(
                op, self.user, arg, start, time.monotonic(), 0, None, "", str(error),
                self.scenario, key, attempt, outcome,
            )  # fmt: skip
        end = time.monotonic()
        try:
            body = response.json()
        except ValueError:
            body = {}
        status = response.status_code
        ok = 200 <= status < 300
        # Locust's HttpSession answers a connection failure with status 0 and .error set.
        failure = body.get("detail") or getattr(response, "error", None) or response.reason
        event = Event(
            op,
            self.user,
            arg,
            start,
            end,
            status,
            body.get(field) if ok else None,
            response.headers.get("X-Worker", ""),
            "" if ok else str(failure),
            self.scenario,
            key,
            attempt,
            "" if ok else body.get("outcome") or (UNKNOWN if status == 0 else ""),
            response.headers.get(REPLAYED_HEADER) == "true",
        )
        if self.judge:
            with response:  # Locust's ResponseContextManager: report it as judged
                if problem := self.judge(event):
                    response.failure(problem)
                else:
                    response.success()
        return event
