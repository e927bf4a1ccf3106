"""Flask-SocketIO without a message queue: an emit reaches one process's clients.

Flask-SocketIO keeps its connected clients, and each client's Socket.IO
session, in the process that accepted them. So:

- under gunicorn with 2 workers and no sticky routing, a browser's long-poll
  requests land on either worker, and the one that did not make its session
  answers 400 ("Invalid session"): the client reconnects, again and again;
- with sticky routing (each browser always reaches the same process; here,
  two instances of one worker each, as its docs deploy it), every client
  stays connected, but `socketio.emit()` from a view reaches only the clients
  of the process that ran the view.

    python -m gunicorn --workers 1 --threads 4 \
        'examples.socketio_without_message_queue:create_app()'

A run, two instances with a browser on each, the emit through the first:

    no message queue:        the first instance's browser got it, the other not
    message queue on Valkey: both got it
    and either way, 2 workers without sticky routing: the second worker
    answers 400 to a session the first one made

The fix is both halves of Flask-SocketIO's deployment docs: a message queue
(`message_queue="redis://..."`; here python-socketio's RedisManager, which
it makes from that URL, given Valkey's unix socket) and sticky routing.
"""

import contextlib
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests
import socketio
from flask import Flask, request
from flask_socketio import SocketIO

from examples.servers import Gunicorn, at_once, stamp_worker
from serve.valkey import EmbeddedValkey

LABEL = "proven"
MESSAGE = "the price of tea went up"
# Each browser is given this long from the publish's answer, the same for
# both: a message that arrives ends its wait at once, a missed one costs the
# whole of it. Through the queue, a delivery to the second browser once took
# over 3 s after the first's on a busy 2-core machine (make test).
DELIVERY_SECONDS = 8.0

sockets = SocketIO()


def create_app() -> Flask:
    """One route that emits to every connected client; MESSAGE_QUEUE, when set,
    is the Redis-protocol server all processes publish their emits through."""
    app = stamp_worker(Flask(__name__))
    options = {}
    if url := os.environ.get("MESSAGE_QUEUE"):
        # What message_queue="redis://..." makes; Flask-SocketIO maps only
        # redis:// URLs to it, and Valkey listens here on a unix socket.
        options["client_manager"] = socketio.RedisManager(url, channel="flask-socketio")
    sockets.init_app(app, async_mode="threading", **options)

    @app.get("/")
    def index():
        return {"ok": True}

    @app.post("/publish")
    def publish():
        sockets.emit("announcement", request.json["message"])
        return {"published": True}

    return app


class Browser:
    """A Socket.IO client on long-polling, as a browser falls back to."""

    def __init__(self, url: str) -> None:
        self.received: list[str] = []
        self.got_one = threading.Event()
        self.client = socketio.Client(reconnection=False)
        self.client.on("announcement", self.hear)
        self.client.connect(url, transports=["polling"], wait_timeout=DELIVERY_SECONDS)

    def hear(self, message: str) -> None:
        self.received.append(message)
        self.got_one.set()

    def close(self) -> None:
        self.client.disconnect()


@dataclass
class Sticky:
    on_first: list[str]  # what the browser on each instance received
    on_second: list[str]


def emit_through_the_first(env: dict[str, str]) -> Sticky:
    """Two instances of one worker each; a browser on each; an emit through the first."""
    target = "examples.socketio_without_message_queue:create_app()"
    first = Gunicorn(target, workers=1, threads=4, env=env)
    second = Gunicorn(target, workers=1, threads=4, env=env)
    with first, second:
        browsers = at_once(lambda: Browser(first.url), lambda: Browser(second.url))
        try:
            published = requests.post(first.url + "/publish", json={"message": MESSAGE}, timeout=5)
            published.raise_for_status()
            deadline = time.monotonic() + DELIVERY_SECONDS
            for browser in browsers:
                browser.got_one.wait(max(0.0, deadline - time.monotonic()))
        finally:
            for browser in browsers:
                browser.close()
    return Sticky(list(browsers[0].received), list(browsers[1].received))


def session_on_the_other_worker(env: dict[str, str]) -> tuple[int, int]:
    """The Engine.IO handshake on worker A, its next poll on worker B: the statuses."""
    target = "examples.socketio_without_message_queue:create_app()"
    polling = "/socket.io/?EIO=4&transport=polling"
    with Gunicorn(target, workers=2, threads=4, env=env) as server:
        a, b = server.worker_pids
        with server.only(a):
            handshake = requests.get(server.url + polling, timeout=5)
        sid = handshake.text.partition('"sid":"')[2].partition('"')[0]
        with server.only(b):
            poll = requests.post(f"{server.url}{polling}&sid={sid}", data="40", timeout=5)
        return handshake.status_code, poll.status_code


@dataclass
class Finding:
    no_queue: Sticky
    queue: Sticky
    unsticky: tuple[int, int]  # (handshake on A, poll on B), no queue
    unsticky_with_queue: tuple[int, int]

    @property
    def holds(self) -> bool:
        return (
            self.no_queue.on_first == [MESSAGE]
            and self.no_queue.on_second == []
            and self.queue.on_first == self.queue.on_second == [MESSAGE]
            and self.unsticky == self.unsticky_with_queue == (200, 400)
        )

    def summary(self) -> str:
        def got(run: Sticky) -> str:
            sides = (("first", run.on_first), ("second", run.on_second))
            heard = [name for name, received in sides if received]
            return (
                f"{' and '.join(heard) or 'no'} instance's browser{'s' * (len(heard) > 1)} got it"
            )

        return (
            f"two instances, a browser on each, an emit through the first: without a message "
            f"queue {got(self.no_queue)}; with one on Valkey {got(self.queue)}; 2 workers "
            f"without sticky routing: handshake on A {self.unsticky[0]}, its next request on B "
            f"{self.unsticky[1]} ({self.unsticky_with_queue[1]} with the queue too)"
        )


def prove() -> Finding:
    def with_queue() -> tuple[Sticky, tuple[int, int]]:
        with tempfile.TemporaryDirectory() as directory, contextlib.ExitStack() as stack:
            valkey = stack.enter_context(EmbeddedValkey(Path(directory) / "valkey"))
            env = {"MESSAGE_QUEUE": valkey.url}
            return both(env)

    def both(env: dict[str, str]) -> tuple[Sticky, tuple[int, int]]:
        sticky, unsticky = at_once(
            lambda: emit_through_the_first(env), lambda: session_on_the_other_worker(env)
        )
        return sticky, unsticky

    (no_queue, unsticky), (queue, unsticky_with_queue) = at_once(lambda: both({}), with_queue)
    return Finding(no_queue, queue, unsticky, unsticky_with_queue)
