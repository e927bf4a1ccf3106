"""The requests a check sends for each model, recorded as a history of Events.

Users are threads, each with its own cookie jar and kept-alive connection
(loadtests/clients/transport.py), spread evenly over the worker processes first.
A run has four phases, the same for every model, so that one restart can
fall between the two bursts of all of them:

    first    each user's first request alone, as a browser's first page
             load (the app sets its cookie); a route that answers 404 or
             lacks the spec's value path stops the check here (SpecError)
    burst 1  every user at once, released by a barrier
    (restart, under the restart shape)
    burst 2  the same again
    last     the final reads

Bounded: USERS users x OPS requests per burst, and MAX_SECONDS in all.
A broadcast's subscribers are Streams: one open response each, read in a
thread, placed one per worker process as users' connections are.
"""

import contextlib
import http.client
import json
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, quote

from loadtests.check.spec import TOKEN, Model, Route, SpecError
from loadtests.check.wrap import WORKER_PATH
from loadtests.clients.transport import TRANSPORT_ERRORS, KeepAliveSession
from loadtests.judge.history import Event

USERS = 8
CONNECTIONS = 2  # per user
OPS = 6
MAX_SECONDS = 30.0
TIMEOUT_SECONDS = 10.0
MISSING = object()


class Tokens:
    """Fresh unique strings, and finding them again in any answer."""

    def __init__(self) -> None:
        self.prefix = f"k{secrets.token_hex(2)}n"
        self.pattern = re.compile(rf"{self.prefix}\d+(?!\d)")
        self.next = iter(range(1, 10**9))
        self.lock = threading.Lock()

    def new(self) -> str:
        with self.lock:
            return f"{self.prefix}{next(self.next)}"

    def found(self, value: Any) -> list[str]:
        text = value if isinstance(value, str) else json.dumps(value)
        return self.pattern.findall(text)


def at_path(answer: Any, path: str) -> Any:
    """The value at a dotted path ("data.value", "items.0"), else MISSING."""
    for part in path.split(".") if path else []:
        if isinstance(answer, dict) and part in answer:
            answer = answer[part]
        elif isinstance(answer, list) and part.isdigit() and int(part) < len(answer):
            answer = answer[int(part)]
        else:
            return MISSING
    return answer


def filled(template: Any, token: str) -> Any:
    if isinstance(template, str):
        return template.replace(TOKEN, token)
    if isinstance(template, dict):
        return {k: filled(v, token) for k, v in template.items()}
    if isinstance(template, list):
        return [filled(v, token) for v in template]
    return template


class User:
    """One user: a cookie jar, and the history it records. Like a browser, it
    keeps CONNECTIONS kept-alive connections and takes them in turn, so its
    requests reach several worker processes (spread() places them), one
    request at a time."""

    def __init__(self, name: str, urls: list[str], history: list[Event]) -> None:
        self.name, self.urls, self.history = name, urls, history
        self.cookies: dict[str, str] = {}
        self.connections = [KeepAliveSession() for _ in range(CONNECTIONS)]
        for connection in self.connections:
            connection.cookies = self.cookies  # one jar: every answer's cookies reach both
        self.turn = 0
        self.headers: dict[str, str] = {}  # of its last answer

    def tab(self, name: str) -> "User":
        """Another tab of the same browser: its cookies, its own connection."""
        other = User(name, self.urls, self.history)
        other.name = self.name
        other.cookies.update(self.cookies)
        other.connections = other.connections[:1]
        return other

    def worker(self, connection: KeepAliveSession) -> str:
        url = self.urls[0] + WORKER_PATH
        answer = connection.request("GET", url, timeout=TIMEOUT_SECONDS)
        return answer.headers.get("X-Worker", "").partition("-")[0]

    def send(
        self, op: str, route: Route, token: str | None, body: Any, pick: Callable[[Any], Any]
    ) -> tuple[Event, Any]:
        """One request; the Event's value is what `pick` takes from the JSON
        answer (else from its text). Returns the Event and the parsed answer."""
        path, _, query = route.path.partition("?")
        url = self.urls[self.turn % len(self.urls)] + path.replace(TOKEN, quote(token or ""))
        params = {k: v.replace(TOKEN, token or "") for k, v in parse_qsl(query)} or None
        http = self.connections[self.turn % len(self.connections)]
        self.turn += 1
        json_body = filled(body, token or "") if body is not None else None
        if json_body is None and route.method != "GET":
            json_body = {}
        start = time.monotonic()
        status, parsed, worker, error = 0, None, "", ""
        self.headers = {}
        try:
            answer = http.request(
                route.method, url, timeout=TIMEOUT_SECONDS, json=json_body, params=params
            )
            status, worker = answer.status_code, answer.headers.get("X-Worker", "")
            self.headers = dict(answer.headers.items())
            text = answer.content.decode(errors="replace")
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = text
        except TRANSPORT_ERRORS as failure:
            error = str(failure)
        event = Event(op, self.name, token, start, time.monotonic(), status, None, worker, error)
        event.value = pick(parsed) if status else None
        self.history.append(event)
        return event, parsed

    def close(self) -> None:
        for connection in self.connections:
            connection.close()


def first_check(
    model: Model, key: str, event: Event, answer: Any, path: str | None, path_key: str = ""
) -> None:
    """At a model's first request: a 404, or no value at the spec's path, is the spec's fault."""
    route = model.routes[key]
    if event.status == 404:
        raise SpecError(
            f"{model.spec} line {route.line} ([[{model.kind}]] {model.name!r}, {key}): "
            f"{route} answered 404 Not Found on its first request; is the route right?"
        )
    if not event.status:
        raise RuntimeError(f"{route} got no answer on its first request: {event.error}")
    if 400 <= event.status < 500:
        shown = json.dumps(answer)[:200] if not isinstance(answer, str) else answer[:200]
        raise SpecError(
            f"{model.spec} line {route.line} ([[{model.kind}]] {model.name!r}, {key}): "
            f"{route} answered {event.status} on its first request: {shown}"
        )
    if path is not None and event.ok and at_path(answer, path) is MISSING:
        shown = json.dumps(answer)[:200] if not isinstance(answer, str) else answer[:200]
        path_key = path_key or ("value" if "value" in model.keys else "items")
        raise model.error(path_key, f"{path!r} is not in the answer to {route}: {shown}")


def together(users: list[User], work: Callable[[int, User], None]) -> None:
    """Run work(i, user) for every user in a thread of its own, all released at once."""
    barrier = threading.Barrier(len(users))
    failures: list[BaseException] = []

    def run(index: int, user: User) -> None:
        try:
            barrier.wait()
            work(index, user)
        except BaseException as error:  # raised again in the caller
            failures.append(error)

    threads = [threading.Thread(target=run, args=(i, u), daemon=True) for i, u in enumerate(users)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


def spread(users: list[User], workers: int, attempts: int = 100) -> None:
    """Place the users' kept-alive connections evenly over the worker
    processes, each user's connections on different ones where it can."""
    if workers < 2:
        return
    connections = [(u, c) for u in users for c in u.connections]
    share = -(-len(connections) // workers)
    placed: dict[str, int] = {}
    mine: dict[int, set[str]] = {}  # id(user): the processes its connections are on
    for user, connection in connections:
        for attempt in range(attempts):
            try:
                pid = user.worker(connection)
            except TRANSPORT_ERRORS:
                pid = ""
            taken = mine.setdefault(id(user), set())
            if (placed.get(pid, 0) < share and (pid not in taken or attempt > attempts // 2)) or (
                attempt == attempts - 1
            ):
                taken.add(pid)
                placed[pid] = placed.get(pid, 0) + 1
                break
            connection.close()
            time.sleep(min(0.05, 0.002 * attempt))


class Stream:
    """One subscriber: a streaming answer (server-sent events, a long poll)
    held open on a connection of its own and read in a thread. It records
    "subscribe" (from the request to its headers: listening from then on),
    a "receive" for each token it finds in the stream, and "unsubscribe"
    when it is closed."""

    def __init__(self, name: str, url: str, history: list[Event], tokens: Tokens) -> None:
        self.name, self.history, self.tokens = name, history, tokens
        parts = url.removeprefix("http://").partition(":")
        self.connection = http.client.HTTPConnection(parts[0], int(parts[2]), TIMEOUT_SECONDS)
        self.worker, self.received = "", set()
        self.reader: threading.Thread | None = None
        self.closing = threading.Event()

    def pid(self) -> str:
        """The worker process this connection is on, as /__check__/worker says."""
        try:
            self.connection.request("GET", WORKER_PATH)
            answer = self.connection.getresponse()
            answer.read()
        except TRANSPORT_ERRORS:
            return ""
        return answer.headers.get("X-Worker", "").partition("-")[0]

    def open(self, route: Route) -> tuple[Event, str]:
        """Send the subscribe request; once its headers are in, read on in a thread."""
        start = time.monotonic()
        status, error, shown = 0, "", ""
        try:
            self.connection.request(route.method, route.path.replace(TOKEN, ""))
            answer = self.connection.getresponse()
            status, self.worker = answer.status, answer.headers.get("X-Worker", "")
            if status != 200:
                shown = answer.read(200).decode(errors="replace")
        except TRANSPORT_ERRORS as failure:
            error = str(failure) or type(failure).__name__
        event = Event("subscribe", self.name, None, start, time.monotonic(), status, None,
                      self.worker, error)  # fmt: skip
        event.value = "listening" if status == 200 else None
        self.history.append(event)
        if status == 200:
            self.reader = threading.Thread(target=self.read, args=(answer,), daemon=True)
            self.reader.start()
        return event, shown

    def read(self, answer: http.client.HTTPResponse) -> None:
        pending = ""
        while not self.closing.is_set():
            try:
                chunk = answer.read1(4096)
            except (*TRANSPORT_ERRORS, ValueError, AttributeError):  # closed under it
                return
            if not chunk:
                return
            now = time.monotonic()
            *lines, pending = (pending + chunk.decode(errors="replace")).split("\n")
            for token in self.tokens.found("\n".join(lines)):
                if token not in self.received:
                    self.received.add(token)
                    self.history.append(Event("receive", self.name, token, now, now, 200,
                                              token, self.worker))  # fmt: skip

    def close(self) -> None:
        self.closing.set()
        if self.reader is not None:
            now = time.monotonic()
            self.history.append(Event("unsubscribe", self.name, None, now, now, 200, "closed",
                                      self.worker))  # fmt: skip
        if self.connection.sock is not None:
            with contextlib.suppress(OSError):
                self.connection.sock.shutdown(socket.SHUT_RDWR)  # wakes the reader
        self.connection.close()
        if self.reader is not None:
            self.reader.join(timeout=TIMEOUT_SECONDS)
