"""The one module that knows the apps' routes and URLs.

Every call returns an Event, the unit of a recorded history: what was asked,
by which user, when it started and ended, the HTTP status, the value the app
returned and the X-Worker (process-thread) that answered. The checker reads
nothing else.

    >>> client = Client("http://127.0.0.1:5000", user="u01")
    >>> client.increment()
    Event(op='increment', user='u01', arg=None, start=..., status=200, value=1,
          worker='4242-4250')

A Client can also drive a session it is given, such as Locust's HttpSession
(a requests.Session that reports every request to Locust's statistics). With
a `judge`, each request goes through Locust's catch_response and is marked a
success or a failure by what the judge says of its Event.
"""

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import requests

from loadtests.transport import TRANSPORT_ERRORS

TIMEOUT_SECONDS = 10.0


@dataclass(slots=True)
class Event:
    op: str  # increment, read, reset, add_visit, list_visits, greet, healthz
    user: str
    arg: str | None  # the article appended or the name greeted
    start: float  # time.monotonic(), comparable across processes
    end: float
    status: int  # 0 when no HTTP answer arrived
    value: Any  # the counter value, the visits list, the greeting; else None
    worker: str = ""  # X-Worker: "<pid>-<thread id>"
    error: str = ""
    scenario: str = ""  # "tabs" for one user's concurrent requests

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def pid(self) -> str:
        return self.worker.partition("-")[0]

    def to_dict(self) -> dict:
        return asdict(self)


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


class Client:
    """One user: a cookie jar and a kept-alive connection to one app."""

    def __init__(
        self,
        base_url: str | Sequence[str],
        user: str,
        timeout: float = TIMEOUT_SECONDS,
        scenario: str = "",
        *,
        http: requests.Session | None = None,
        judge: Callable[[Event], str] | None = None,
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

    def another_tab(self, http: requests.Session | None = None) -> "Client":
        """The same user (same cookies) on a connection of its own."""
        tab = Client(
            self.base_urls, self.user, self.timeout, self.scenario, http=http, judge=self.judge
        )
        tab.http.cookies.clear()  # a reused session may hold another user's cookie
        tab.http.cookies.update(self.http.cookies)
        return tab

    def healthz(self) -> Event:
        return self._call("healthz")

    def strategy(self) -> str:
        """The app's folder name, as its /healthz answer says."""
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

    def _call(self, op: str, arg: str | None = None, **kwargs: Any) -> Event:
        method, path, key = ROUTES[op]
        if self.judge:
            # One statistics row per route, whatever the query string says.
            kwargs.update(catch_response=True, name=path)
        start = time.monotonic()
        try:
            response = self.http.request(
                method, next(self.turns) + path, timeout=self.timeout, **kwargs
            )
        except TRANSPORT_ERRORS as error:  # requests' own errors are OSErrors too
            return Event(
                op, self.user, arg, start, time.monotonic(), 0, None, "", str(error), self.scenario
            )
        end = time.monotonic()
        try:
            body = response.json()
        except ValueError:
            body = {}
        ok = 200 <= response.status_code < 300
        # Locust's HttpSession answers a connection failure with status 0 and .error set.
        failure = body.get("detail") or getattr(response, "error", None) or response.reason
        event = Event(
            op,
            self.user,
            arg,
            start,
            end,
            response.status_code,
            body.get(key) if ok else None,
            response.headers.get("X-Worker", ""),
            "" if ok else str(failure),
            self.scenario,
        )
        if self.judge:
            with response:  # Locust's ResponseContextManager: report it as judged
                if problem := self.judge(event):
                    response.failure(problem)
                else:
                    response.success()
        return event
