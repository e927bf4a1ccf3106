"""What each model's users send, phase by phase (loadtests/check/drive.py).

Each driver records into a history of its own, in the op names the
existing checker reads where its rule is the same: the counter's
increment, read and reset; the list's add_visit and list_visits (one
user's concurrent tabs marked scenario "tabs"). The new models record
request, set and get, login and whoami, a rate limit's hit, a broadcast's
publish and its subscribers' subscribe, receive and unsubscribe
(loadtests/check/judge.py).
"""

import json
import threading
import time
from typing import Any

from loadtests.check.drive import (
    MAX_SECONDS,
    MISSING,
    OPS,
    USERS,
    Stream,
    Tokens,
    User,
    at_path,
    first_check,
    spread,
    together,
)
from loadtests.check.spec import TOKEN, WITHIN_SECONDS, Model
from loadtests.judge.history import Event


class Driver:
    def __init__(self, model: Model, tokens: Tokens, urls: list[str], users: int = USERS) -> None:
        self.model, self.tokens = model, tokens
        self.history: list[Event] = []
        run = tokens.prefix
        self.users = [User(f"{model.name}-u{i}-{run}", urls, self.history) for i in range(users)]
        self.deadline = time.monotonic() + MAX_SECONDS
        self.ops = OPS

    def place(self, workers: int) -> None:
        """Put the users' connections on the worker processes (drive.spread)."""
        spread(self.users, workers)

    def in_time(self) -> bool:
        return time.monotonic() < self.deadline

    def repeat(self) -> range:
        return range(self.ops) if self.in_time() else range(0)

    def send(self, user: User, key: str, op: str, token: str | None = None, path: str | None = None,
             first: bool = False, path_key: str = "") -> Event:  # fmt: skip
        route = self.model.routes[key]
        body = self.model.body if route.method != "GET" else None

        def pick(answer: Any) -> Any:
            if path is None:
                return self.tokens.found(answer)
            found = at_path(answer, path)
            return None if found is MISSING else found

        event, answer = user.send(op, route, token, body, pick)
        if first:
            first_check(self.model, key, event, answer, path, path_key)
        return event

    def first(self) -> None:
        raise NotImplementedError

    def burst(self) -> None:
        raise NotImplementedError

    def last(self) -> None:
        pass

    def close(self) -> None:
        for user in self.users:
            user.close()


class Counter(Driver):
    def read(self, user: User, op: str = "read", first: bool = False) -> Event:
        path_key = "read_value" if "read_value" in self.model.keys else "value"
        path = self.model.keys[path_key]
        return self.send(user, "read", op, path=path, first=first, path_key=path_key)

    def first(self) -> None:
        value = self.model.keys["value"]
        head = self.users[0]
        if "reset" in self.model.routes:  # its answer may or may not hold the value
            reset = self.send(head, "reset", "reset", path=value)
            first_check(self.model, "reset", reset, reset.value, None)
        else:  # the start value, read first: the count's start, as a reset's answer is
            self.read(head, "reset", first=True)
        for user in self.users:
            self.read(user, first=True)
        first = self.send(head, "increment", "increment", path=value, first=True)
        if first.ok and (isinstance(first.value, bool) or not isinstance(first.value, int)):
            raise self.model.error("value", f"the increment answered {first.value!r} there, "
                                   "not a whole number")  # fmt: skip

    def burst(self) -> None:
        value = self.model.keys["value"]
        together(self.users, lambda i, u: [self.send(u, "increment", "increment", path=value)
                                           for _ in self.repeat()])  # fmt: skip

    def last(self) -> None:
        together(self.users, lambda i, u: self.read(u))


class PerUserList(Driver):
    def add(self, user: User, first: bool = False) -> Event:
        return self.send(user, "add", "add_visit", self.tokens.new(), first=first)

    def first(self) -> None:
        items = self.model.keys["items"]
        for user in self.users:
            self.add(user, first=True)
            self.send(user, "list", "list_visits", path=items, first=True)

    def send(self, user: User, key: str, op: str, token: str | None = None, path: str | None = None,
             first: bool = False) -> Event:  # fmt: skip
        if path is None:
            return super().send(user, key, op, token, None, first)
        # The list: the tokens in its items, as often as they are there.
        event, answer = user.send(op, self.model.routes[key], None, None, lambda a: a)
        if first:
            first_check(self.model, key, event, answer, path)
        found = at_path(answer, path)
        event.value = self.tokens.found(found) if found is not MISSING else []
        return event

    def burst(self) -> None:
        together(self.users, lambda i, u: [self.add(u) for _ in self.repeat()])
        owner = self.users[0]  # one user, many tabs: concurrent appends sharing a cookie
        tabs = [owner.tab(f"tab{i}") for i in range(len(self.users))]

        def tab_add(i: int, tab: User) -> None:
            self.add(tab).scenario = "tabs"

        together(tabs, tab_add)
        for tab in tabs:
            tab.close()

    def last(self) -> None:
        items = self.model.keys["items"]
        together(self.users, lambda i, u: self.send(u, "list", "list_visits", path=items))


class PerRequest(Driver):
    def ask(self, user: User, first: bool = False) -> Event:
        token = self.tokens.new()
        route = self.model.routes["request"]
        body = self.model.body if route.method != "GET" else None
        event, answer = user.send("request", route, token, body, text_of)
        if first:
            first_check(self.model, "request", event, answer, None)
            expected = self.model.keys["expect"].replace(TOKEN, token)
            if event.ok and expected not in (event.value or ""):
                raise self.model.error(
                    "expect", f"the answer to {route} does not hold {expected!r}: {event.value!r}"
                )
        return event

    def first(self) -> None:
        for user in self.users:
            self.ask(user, first=True)

    def burst(self) -> None:
        together(self.users, lambda i, u: [self.ask(u) for _ in self.repeat()])


def text_of(answer: Any) -> str:
    return answer if isinstance(answer, str) else json.dumps(answer)


class SharedValue(Driver):
    def set(self, user: User, first: bool = False) -> Event:
        event = self.send(user, "set", "set", self.tokens.new(), first=first)
        event.value = event.arg if event.ok else None  # the value it set, as a witness shows it
        return event

    def get(self, user: User, first: bool = False) -> Event:
        return self.send(user, "get", "get", path=self.model.keys["value"], first=first)

    def first(self) -> None:
        self.set(self.users[0], first=True)
        for user in self.users:
            self.get(user, first=True)

    def burst(self) -> None:
        # Every user reads once first (after a restart: what did it keep?),
        # then one user sets while the others read.
        started = threading.Barrier(len(self.users))

        def work(index: int, user: User) -> None:
            self.get(user)
            started.wait()
            for _ in self.repeat():
                self.set(user) if index == 0 else self.get(user)

        together(self.users, work)

    def last(self) -> None:
        together(self.users, lambda i, u: self.get(u))


class Login(Driver):
    """Every user but the last logs in; the last never does."""

    def first(self) -> None:
        value = self.model.keys["value"]
        for user in self.users[:-1]:
            event = self.send(user, "login", "login", self.tokens.new(), first=True)
            event.value = event.arg if event.ok else None
            self.send(user, "whoami", "whoami", path=value, first=True)
        self.send(self.users[-1], "whoami", "whoami", path=value)

    def burst(self) -> None:
        value = self.model.keys["value"]
        together(self.users, lambda i, u: [self.send(u, "whoami", "whoami", path=value)
                                           for _ in self.repeat()])  # fmt: skip


class RateLimit(Driver):
    """Every user sends one more request than the limit, over both its
    connections (so both worker processes), in each burst."""

    def hit(self, user: User, first: bool = False) -> Event:
        route = self.model.routes["request"]
        body = self.model.body if route.method != "GET" else None
        token = self.tokens.new() if TOKEN in f"{route.path}{body}" else None
        event, answer = user.send("hit", route, token, body, lambda a: None)
        header = self.model.keys.get("remaining")
        if first and event.status != 429:  # refused at once: the limit is already used up
            first_check(self.model, "request", event, answer, None)
        if not header:
            event.value = "accepted" if event.ok else None
            return event
        found = {k.lower(): v for k, v in user.headers.items()}.get(header.lower())
        if first and event.status and found is None:
            raise self.model.error(
                "remaining", f"the answer to {route} has no header {header!r}; "
                f"its headers: {', '.join(user.headers)}",
            )  # fmt: skip
        event.value = int(found) if found is not None and found.strip().isdigit() else None
        return event

    def first(self) -> None:
        self.hit(self.users[0], first=True)

    def burst(self) -> None:
        more = self.model.keys["limit"] + 1
        together(self.users, lambda i, u: [self.hit(u) for _ in range(more) if self.in_time()])


class Broadcast(Driver):
    """One user publishes; subscribers listen, one per worker process.

    Each burst is a round: subscribers opened (each placed on a worker that
    has none yet), a message published through each of the publisher's two
    connections, a wait until every subscriber has every message or `within`
    seconds after the last publish, the subscribers closed. The restart
    falls between rounds, as a browser's EventSource reconnects after one."""

    PUBLISHES = 2  # per round, one through each of the publisher's connections
    ATTEMPTS = 100  # connections tried to find a worker without a subscriber

    def __init__(self, model: Model, tokens: Tokens, urls: list[str], users: int = 1) -> None:
        super().__init__(model, tokens, urls, users=1)
        self.within = float(model.keys.get("within", WITHIN_SECONDS))
        self.workers, self.rounds = 0, 0

    def place(self, workers: int) -> None:
        self.workers = workers
        spread(self.users, workers)

    def subscribe(self, history: list[Event], wanted: int = 0, first: bool = False) -> list[Stream]:
        """One subscriber per worker process (behind a balancer, four;
        with one process, two on it)."""
        self.rounds += 1
        wanted = wanted or max(2, self.workers or 4)
        streams: list[Stream] = []
        on: set[str] = set()
        try:
            for attempt in range(self.ATTEMPTS):
                if len(streams) == wanted:
                    break
                name = f"{self.model.name}-r{self.rounds}-s{len(streams)}-{self.tokens.prefix}"
                stream = Stream(name, self.users[0].urls[0], history, self.tokens)
                if self.workers > 1 and attempt < self.ATTEMPTS - wanted:
                    pid = stream.pid()
                    if pid in on and len(on) < self.workers:
                        stream.close()
                        continue
                    on.add(pid)
                streams.append(stream)
                event, shown = stream.open(self.model.routes["subscribe"])
                if first:
                    first_check(self.model, "subscribe", event, shown, None)
        except BaseException:
            for stream in streams:
                stream.close()
            raise
        return streams

    def publish(self, first: bool = False) -> Event:
        event = self.send(self.users[0], "publish", "publish", self.tokens.new())
        if first and event.status:  # no answer: every worker holding a stream (sync), judged
            first_check(self.model, "publish", event, event.value, None)
        event.value = event.arg if event.ok else None
        return event

    def first(self) -> None:
        # The routes checked, nothing judged: one subscriber, recorded apart.
        streams = self.subscribe([], wanted=1, first=True)
        try:
            self.publish(first=True)
        finally:
            for stream in streams:
                stream.close()

    def burst(self) -> None:
        streams = self.subscribe(self.history)
        try:
            published = []
            for _ in range(self.PUBLISHES):
                published.append(self.publish())
                if not published[-1].status:  # no answer: no worker was free to take it
                    break
            sent = {e.arg for e in published if e.ok}
            deadline = max(e.end for e in published) + self.within
            listening = [s for s in streams if s.reader is not None]
            while time.monotonic() < deadline and any(sent - s.received for s in listening):
                time.sleep(0.02)
        finally:
            for stream in streams:
                stream.close()


DRIVERS: dict[str, type[Driver]] = {
    "counter": Counter,
    "per_user_list": PerUserList,
    "per_request": PerRequest,
    "shared_value": SharedValue,
    "login": Login,
    "rate_limit": RateLimit,
    "broadcast": Broadcast,
}
