"""The one module that knows the apps' routes and URLs.

Every call returns a loadtests.history.Event, the unit of a recorded
history; the checker reads nothing else. Against broken_global on its port
(`make run-broken`), a first increment after a reset records:

    client = Client("http://127.0.0.1:5000", user="u01")
    client.increment()
    # Event(op='increment', user='u01', arg=None, start=147.935646533, end=147.944628374,
    #       status=200, value=1, worker='4526-4535', error='', scenario='')

A Client can also drive a session it is given, such as Locust's HttpSession
(a requests.Session that reports every request to Locust's statistics). With
a `judge`, each request goes through Locust's catch_response and is marked a
success or a failure by what the judge says of its Event.
"""

import itertools
import time
from collections.abc import Callable, Sequence
from typing import Any

import requests

from loadtests.history import Event
from loadtests.transport import TRANSPORT_ERRORS

TIMEOUT_SECONDS = 10.0


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
