"""gevent workers: one process, one thread, and many requests that share its globals.

`gunicorn -k gevent` serves up to worker_connections requests at once in
each worker, every one in a greenlet of the same thread. gevent patches the
blocking calls of the standard library (sockets, time.sleep, ...) to switch
to another greenlet while one waits. So:

- a module-level global is shared by every request of the worker, and any
  call that waits (a query, an HTTP call, a sleep) is a switch: a read, a
  wait, then a write loses the updates of every greenlet that ran meanwhile,
  with a single thread and no lock in sight;
- `g` and `request` are per greenlet, hence per request: Flask keeps its
  contexts in context variables, and each greenlet has its own;
- a call that blocks without going through the patched library (C code that
  waits or computes, such as SQLite waiting for a lock) stops the whole
  worker, every greenlet of it, until it returns.

The proof runs the app under `gunicorn -k gevent -w 1 --worker-connections
50`, and stands up a small HTTP service the views call (the "work" between a
read and a write); it answers once 8 calls are waiting, so 8 requests are
certain to be between their read and their write at once. A run:

    8 increments at once:    all 8 answered 1, from 1 thread of 1 process
    the same with INCR:      answers 1..8
    8 greetings at once:     on g, 8 of 8 right; in a global, 7 of 8 wrong
    a health check:          sent during SQLite's busy wait (in C), answered only after
                             it ended (0.59 s later); during a wait in Python
                             (time.sleep, patched), answered at once (0.00 s)

The fixes are the ones for threads: state shared by requests in a store,
changed in one step (INCR); per-request data on g; and, for gevent, calls
that wait through the patched library (here, retrying with time.sleep)
rather than in C.
"""

import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import redis
import requests
from flask import Flask, g, request

from examples.servers import Gunicorn, dev_server, stamp_worker
from serve.valkey import EmbeddedValkey

LABEL = "proven"
GREENLETS = 8
WORKER_CONNECTIONS = 50
HOLD_SECONDS = 0.5  # how long the proof holds SQLite's lock
LOCK_RETRY_SECONDS = 0.01

counter = 0
name_to_greet = ""

app = stamp_worker(Flask(__name__))


def call_other_service(phase: str) -> None:
    """The work between a read and a write: an HTTP call, which gevent makes a switch."""
    requests.get(f"{os.environ['SERVICE_URL']}/{phase}", timeout=10).raise_for_status()


@app.post("/increment")
def increment():
    global counter
    new_value = counter + 1  # read
    call_other_service("increment")  # the other greenlets run here
    counter = new_value  # write
    return {"value": new_value, "thread": threading.get_native_id(), "pid": os.getpid()}


@app.post("/increment/store")
def increment_in_store():
    call_other_service("store")
    return {"value": valkey().incr("counter")}


_valkey: redis.Redis | None = None


def valkey() -> redis.Redis:
    global _valkey
    if _valkey is None:  # first use, in the worker
        _valkey = redis.Redis.from_url(os.environ["REDIS_URL"])
    return _valkey


@app.get("/greet/g")
def greet_from_g():
    g.name = request.args["name"]
    call_other_service("greet-g")
    return {"greeting": f"Hello, {g.name}!"}


@app.get("/greet/global")
def greet_from_global():
    global name_to_greet
    name_to_greet = request.args["name"]
    call_other_service("greet-global")
    return {"greeting": f"Hello, {name_to_greet}!"}


@app.post("/write/busy-wait-in-c")
def write_waiting_in_c():
    """SQLite waits for a lock in C (its busy timeout): gevent cannot switch."""
    began = time.monotonic()
    db = sqlite3.connect(os.environ["DATABASE"], timeout=5, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    db.execute("COMMIT")
    db.close()
    return {"began": began, "ended": time.monotonic()}


@app.post("/write/wait-in-python")
def write_waiting_in_python():
    """The same write, retried in Python with time.sleep, which gevent patches."""
    began = time.monotonic()
    db = sqlite3.connect(os.environ["DATABASE"], timeout=0, isolation_level=None)
    while True:
        try:
            db.execute("BEGIN IMMEDIATE")
            break
        except sqlite3.OperationalError:  # database is locked
            time.sleep(LOCK_RETRY_SECONDS)
    db.execute("COMMIT")
    db.close()
    return {"began": began, "ended": time.monotonic()}


@app.get("/healthz")
def healthz():
    return {"at": time.monotonic()}


def other_service() -> tuple[Flask, dict[str, threading.Barrier]]:
    """The service the views call: it answers once GREENLETS calls of a phase are waiting."""
    service = Flask(__name__)
    phases = {
        phase: threading.Barrier(GREENLETS)
        for phase in ("increment", "store", "greet-g", "greet-global")
    }

    @service.get("/<phase>")
    def wait(phase: str):
        with suppress(threading.BrokenBarrierError):  # fewer came: answer anyway
            phases[phase].wait(timeout=5)
        return {"phase": phase}

    return service, phases


def all_at_once(call: Callable[[int], dict]) -> list[dict]:
    results: list[dict] = [{}] * GREENLETS
    start = threading.Barrier(GREENLETS)

    def run(n: int) -> None:
        start.wait(timeout=10)
        results[n] = call(n)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(GREENLETS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


@dataclass
class Stall:
    """A health check sent while a write waited for the lock the proof held."""

    sent: float  # when the health check was sent
    released: float  # when the proof released the lock
    write: dict  # when the write began and ended, in the worker
    answered: float  # when the worker handled the health check

    @property
    def overlapped(self) -> bool:
        return self.write["began"] < self.sent < self.released

    @property
    def stalled(self) -> bool:
        return self.answered >= self.write["ended"]

    @property
    def late(self) -> float:
        """How long the health check waited after being sent."""
        return self.answered - self.sent


def health_check_during(url: str, route: str, database: Path) -> Stall:
    """Hold SQLite's write lock, have the worker wait for it, send a health check,
    release. Again if the write had not begun when the check was sent."""
    for _ in range(3):
        if (stall := try_health_check_during(url, route, database)).overlapped:
            break
    return stall


def try_health_check_during(url: str, route: str, database: Path) -> Stall:
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # the lock the write will wait for
    write: dict = {}
    writer = threading.Thread(
        target=lambda: write.update(requests.post(url + route, timeout=10).json())
    )
    writer.start()
    time.sleep(HOLD_SECONDS / 2)  # the write has begun by now, and Stall.overlapped checks
    sent = time.monotonic()
    health: dict = {}
    checker = threading.Thread(
        target=lambda: health.update(requests.get(url + "/healthz", timeout=10).json())
    )
    checker.start()
    time.sleep(HOLD_SECONDS)
    released = time.monotonic()
    holder.execute("COMMIT")
    holder.close()
    writer.join(timeout=10)
    checker.join(timeout=10)
    return Stall(sent, released, write, health["at"])


@dataclass
class Finding:
    increments: list[dict]
    increments_in_store: list[int]
    greeted_from_g: list[str]
    greeted_from_global: list[str]
    names: list[str]
    in_c: Stall
    in_python: Stall

    @property
    def holds(self) -> bool:
        values = [answer["value"] for answer in self.increments]
        return (
            values == [1] * GREENLETS  # every read before any write
            and len({(a["pid"], a["thread"]) for a in self.increments}) == 1  # one thread
            and sorted(self.increments_in_store) == list(range(1, GREENLETS + 1))
            and self.greeted_from_g == self.names
            and self.wrong_from_global >= GREENLETS - 1
            and self.in_c.overlapped
            and self.in_c.stalled
            and self.in_python.overlapped
            and not self.in_python.stalled
        )

    @property
    def wrong_from_global(self) -> int:
        return sum(
            got != name for got, name in zip(self.greeted_from_global, self.names, strict=True)
        )

    def summary(self) -> str:
        values = sorted({answer["value"] for answer in self.increments})
        threads = len({(a["pid"], a["thread"]) for a in self.increments})
        right_g = sum(a == b for a, b in zip(self.greeted_from_g, self.names, strict=True))
        stall = "waited for it" if self.in_c.stalled else "did not wait"
        python = "waited for it" if self.in_python.stalled else "did not wait"
        return (
            f"1 gevent worker, {GREENLETS} increments at once from {threads} thread: "
            f"answers {values}; with INCR {sorted(self.increments_in_store)}; "
            f"greetings on g {right_g} of {GREENLETS} right, in a global "
            f"{self.wrong_from_global} wrong; a health check during SQLite's busy wait in C "
            f"{stall} ({self.in_c.late:.2f} s), during a wait in Python (time.sleep) "
            f"{python} ({self.in_python.late:.2f} s)"
        )


def prove() -> Finding:
    service, _ = other_service()
    names = [f"u{n}" for n in range(GREENLETS)]
    with (
        tempfile.TemporaryDirectory() as directory,
        EmbeddedValkey(Path(directory) / "valkey") as store,
        dev_server(service) as service_url,
    ):
        database = Path(directory) / "app.sqlite3"
        sqlite3.connect(database).close()
        env = {"SERVICE_URL": service_url, "REDIS_URL": store.url, "DATABASE": str(database)}
        with Gunicorn(
            "examples.gevent_greenlets_share_globals:app",
            workers=1,
            worker_class="gevent",
            options=["--worker-connections", str(WORKER_CONNECTIONS)],
            env=env,
        ) as server:
            url = server.url

            def post(path: str) -> dict:
                return requests.post(url + path, timeout=10).json()

            def greet(path: str, n: int) -> str:
                response = requests.get(url + path, params={"name": names[n]}, timeout=10)
                return response.json()["greeting"].removeprefix("Hello, ").rstrip("!")

            increments = all_at_once(lambda n: post("/increment"))
            in_store = [a["value"] for a in all_at_once(lambda n: post("/increment/store"))]
            from_g = [r["name"] for r in all_at_once(lambda n: {"name": greet("/greet/g", n)})]
            from_global = all_at_once(lambda n: {"name": greet("/greet/global", n)})
            in_c = health_check_during(url, "/write/busy-wait-in-c", database)
            in_python = health_check_during(url, "/write/wait-in-python", database)
    return Finding(
        increments,
        in_store,
        from_g,
        [r["name"] for r in from_global],
        names,
        in_c,
        in_python,
    )
