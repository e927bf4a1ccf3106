"""A live update that reaches one worker's browsers: server-sent events with an announcer.

The announcer pattern for server-sent events, as widely copied: every open
`/events` stream puts a queue in a module-level list, and `POST /publish`
puts the message on every queue in the list. The list is the worker's own.
Under gunicorn with 2 gthread workers of 4 threads, a browser whose stream
was taken by worker A hears what is published through A; a browser whose
stream is on worker B never does, and the publish answers 200 all the same
(it counted 1 listener). Which users miss an update depends on which worker
took their stream.

    python -m gunicorn --workers 2 --threads 4 examples.live_update_reaches_one_worker:app

The proof opens one browser's stream on A and another's on B (pausing the
other worker with SIGSTOP), then publishes through A. A run:

    announcer:       1 listener counted; A's browser got it, B's did not
    Valkey pub/sub:  2 listeners counted; both browsers got it

The fix: publish through the store (here Valkey's PUBLISH/SUBSCRIBE, with
redis-py): every stream subscribes, whichever worker holds it. Flask-SocketIO
has the same trap and the same fix, its message queue
(socketio_without_message_queue.py).
"""

import contextlib
import os
import queue
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis
import requests
from flask import Flask, Response, request

from examples.servers import Gunicorn, at_once, stamp_worker, worker_of
from plumbing.http import worker_id
from serve.valkey import EmbeddedValkey

LABEL = "proven"
KEEPALIVE_SECONDS = 0.5  # a comment this often keeps proxies from closing an idle stream
CHANNEL = "announcements"
MESSAGE = "the price of tea went up"
# Each browser is given this long from the publish's answer, the same for
# both: a message that arrives ends its wait at once, a missed one costs the
# whole of it (a busy machine delayed one delivery past a shorter window).
DELIVERY_SECONDS = 8.0


def format_sse(data: str, event: str | None = None) -> str:
    message = f"data: {data}\n\n"
    return f"event: {event}\n{message}" if event else message


class MessageAnnouncer:
    """Who is listening: one list per process."""

    def __init__(self) -> None:
        self.listeners: list[queue.Queue] = []

    def listen(self) -> queue.Queue:
        messages: queue.Queue = queue.Queue(maxsize=5)
        self.listeners.append(messages)
        return messages

    def announce(self, message: str) -> int:
        for i in reversed(range(len(self.listeners))):
            try:
                self.listeners[i].put_nowait(message)
            except queue.Full:  # a browser that went away: drop its queue
                del self.listeners[i]
        return len(self.listeners)


announcer = MessageAnnouncer()
app = stamp_worker(Flask(__name__))


@app.get("/events")
def events():
    messages = announcer.listen()

    def stream() -> Iterator[str]:
        yield f": connected to {worker_id()}\n\n"
        while True:
            try:
                yield messages.get(timeout=KEEPALIVE_SECONDS)
            except queue.Empty:
                yield ": keep-alive\n\n"

    return Response(stream(), mimetype="text/event-stream")


@app.post("/publish")
def publish():
    listeners = announcer.announce(format_sse(request.json["message"], "announcement"))
    return {"listeners": listeners}  # this worker's listeners only


def create_shared_app() -> Flask:
    """The fix: the same two routes on Valkey's publish/subscribe (REDIS_URL)."""
    shared = stamp_worker(Flask(__name__))
    valkey = redis.Redis.from_url(os.environ["REDIS_URL"], decode_responses=True)

    @shared.get("/events")
    def events():
        pubsub = valkey.pubsub()
        pubsub.subscribe(CHANNEL)
        pubsub.get_message(timeout=5)  # the server's reply: subscribed from here on

        def stream() -> Iterator[str]:
            try:
                yield f": connected to {worker_id()}\n\n"
                while True:
                    message = pubsub.get_message(timeout=KEEPALIVE_SECONDS)
                    if message and message["type"] == "message":
                        yield format_sse(message["data"], "announcement")
                    else:
                        yield ": keep-alive\n\n"
            finally:
                pubsub.close()  # the browser went away

        return Response(stream(), mimetype="text/event-stream")

    @shared.post("/publish")
    def publish():
        return {"listeners": valkey.publish(CHANNEL, request.json["message"])}

    return shared


@dataclass
class Browser:
    """An EventSource: one open stream, read in a thread of its own."""

    url: str
    worker: int = 0
    received: list[str] = field(default_factory=list)
    got_one: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.response = requests.get(self.url + "/events", stream=True, timeout=(5, 5))
        self.response.raise_for_status()
        self.worker = worker_of(self.response)
        self.lines = self.response.iter_lines(chunk_size=None, decode_unicode=True)
        next(line for line in self.lines if line.startswith(": connected"))  # registered
        self.closing = threading.Event()
        self.reader = threading.Thread(target=self.read, daemon=True)
        self.reader.start()

    def read(self) -> None:
        with contextlib.suppress(requests.RequestException, AttributeError, ValueError):
            for line in self.lines:
                if self.closing.is_set():
                    return
                if line.startswith("data: "):
                    self.received.append(line.removeprefix("data: "))
                    self.got_one.set()

    def close(self) -> None:
        self.closing.set()
        self.response.close()
        self.reader.join(timeout=KEEPALIVE_SECONDS * 4)


@dataclass
class Run:
    workers: tuple[int, int]  # (A, B)
    browsers_on: tuple[int, int]  # the workers holding each browser's stream
    listeners_counted: int  # what the publish through A answered
    published_by: int
    on_a: list[str]  # what each browser received
    on_b: list[str]

    @property
    def placed(self) -> bool:
        return self.browsers_on == self.workers and self.published_by == self.workers[0]


def publish_through_a(target: str, env: dict[str, str]) -> Run:
    with Gunicorn(target, workers=2, threads=4, env=env) as server:
        a, b = server.worker_pids
        with server.only(a):
            browser_a = Browser(server.url)
        with server.only(b):
            browser_b = Browser(server.url)
        try:
            with server.only(a):
                published = requests.post(
                    server.url + "/publish", json={"message": MESSAGE}, timeout=5
                )
            published.raise_for_status()
            deadline = time.monotonic() + DELIVERY_SECONDS
            for browser in (browser_a, browser_b):
                browser.got_one.wait(max(0.0, deadline - time.monotonic()))
        finally:
            browser_a.close()
            browser_b.close()
        return Run(
            (a, b),
            (browser_a.worker, browser_b.worker),
            published.json()["listeners"],
            worker_of(published),
            list(browser_a.received),
            list(browser_b.received),
        )


@dataclass
class Finding:
    announcer: Run
    pubsub: Run

    @property
    def holds(self) -> bool:
        broken, fixed = self.announcer, self.pubsub
        return (
            broken.placed
            and broken.listeners_counted == 1
            and broken.on_a == [MESSAGE]
            and broken.on_b == []
            and fixed.placed
            and fixed.listeners_counted == 2
            and fixed.on_a == fixed.on_b == [MESSAGE]
        )

    def summary(self) -> str:
        def got(run: Run) -> str:
            heard = [side for side, got in (("A's", run.on_a), ("B's", run.on_b)) if got]
            return f"{' and '.join(heard) or 'no'} browser{'s' * (len(heard) > 1)} got it"

        broken, fixed = self.announcer, self.pubsub
        return (
            f"2 gthread workers, one browser streaming from each, a publish through A: "
            f"announcer list counted {broken.listeners_counted} listener, {got(broken)}; "
            f"Valkey pub/sub counted {fixed.listeners_counted}, {got(fixed)}"
        )


def prove() -> Finding:
    this = "examples.live_update_reaches_one_worker"

    def on_valkey() -> Run:
        with tempfile.TemporaryDirectory() as directory, contextlib.ExitStack() as stack:
            valkey = stack.enter_context(EmbeddedValkey(Path(directory) / "valkey"))
            return publish_through_a(f"{this}:create_shared_app()", {"REDIS_URL": valkey.url})

    announcer_run, pubsub_run = at_once(lambda: publish_through_a(f"{this}:app", {}), on_valkey)
    return Finding(announcer_run, pubsub_run)
