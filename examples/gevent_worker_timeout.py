"""`[CRITICAL] WORKER TIMEOUT` under gevent: a call that blocks in C stops the whole worker.

A gevent worker serves every request in greenlets of one thread, and tells
gunicorn's arbiter it is alive from one more greenlet. A call that waits in
C code gevent cannot patch (a database driver without gevent support, here
libc's usleep standing in for one) holds that thread: no other request is
served, and no heartbeat is sent. Past `--timeout`, the arbiter logs
`[CRITICAL] WORKER TIMEOUT (pid:...)` and kills the worker, and every request
it held fails; the ones waiting are answered late, by its replacement.

    python -m gunicorn -k gevent --timeout 2 examples.gevent_worker_timeout:app

The proof sends a slow report request, then a health check while it runs.
A run:

    waiting in C:                 WORKER TIMEOUT logged, the report failed, the
                                  health check answered after 5.0 s by a new worker
    the same wait in gevent's     no timeout; the health check answered at once,
    thread pool:                  the report after its 4 s, by the same worker

The fix: let the blocking call run in gevent's thread pool (or use a driver
that cooperates with gevent, or a gthread worker); never raise `--timeout`
to hide it.
"""

import ctypes
import ctypes.util
import threading
import time
from dataclasses import dataclass

import requests
from flask import Flask

from examples.servers import Gunicorn, at_once, stamp_worker, worker_of

LABEL = "proven"
BLOCK_SECONDS = 4.0  # the call in C: longer than --timeout
WORKER_TIMEOUT = "2"
libc = ctypes.CDLL(ctypes.util.find_library("c"))


def wait_in_c(seconds: float) -> None:
    """A wait gevent cannot see: it holds the thread, and every greenlet in it."""
    libc.usleep(int(seconds * 1_000_000))


app = stamp_worker(Flask(__name__))


@app.get("/")
@app.get("/healthz")
def healthz():
    return {"ok": True}


@app.get("/report")
def report():
    wait_in_c(BLOCK_SECONDS)
    return {"report": "ready"}


@app.get("/report-in-threadpool")
def report_in_threadpool():
    import gevent  # the worker has it imported and patched by now

    gevent.get_hub().threadpool.apply(wait_in_c, (BLOCK_SECONDS,))  # a real thread waits
    return {"report": "ready"}


@dataclass
class Run:
    worker: int  # the worker before the slow request
    report: str  # what became of the slow request
    health_seconds: float  # how long the health check sent meanwhile took
    health_worker: int  # who answered it
    timed_out: bool  # gunicorn logged WORKER TIMEOUT for the worker

    def describe(self) -> str:
        by = "the same worker" if self.health_worker == self.worker else "a new worker"
        return (
            f"{'WORKER TIMEOUT logged' if self.timed_out else 'no WORKER TIMEOUT'}, the report "
            f"{self.report}, the health check answered after {self.health_seconds:.1f} s by {by}"
        )


def slow_request_and_health_check(route: str) -> Run:
    options = ["--timeout", WORKER_TIMEOUT]
    target = "examples.gevent_worker_timeout:app"
    with Gunicorn(target, workers=1, worker_class="gevent", options=options) as server:
        [worker] = server.worker_pids
        outcome: list[str] = []

        def slow() -> None:
            try:
                response = requests.get(server.url + route, timeout=BLOCK_SECONDS + 10)
                outcome.append(f"answered {response.status_code}")
            except requests.RequestException as error:
                outcome.append(f"failed ({type(error).__name__})")

        thread = threading.Thread(target=slow)
        thread.start()
        time.sleep(0.5)  # the slow request is in its call by now
        sent = time.monotonic()
        health = requests.get(server.url + "/healthz", timeout=BLOCK_SECONDS + 10)
        health_seconds = time.monotonic() - sent
        thread.join(timeout=BLOCK_SECONDS + 15)
        timed_out = f"WORKER TIMEOUT (pid:{worker})" in server.log_tail(lines=100)
    return Run(worker, outcome[0], health_seconds, worker_of(health), timed_out)


@dataclass
class Finding:
    in_c: Run
    in_threadpool: Run

    @property
    def holds(self) -> bool:
        broken, fixed = self.in_c, self.in_threadpool
        return (
            broken.timed_out
            and broken.report.startswith("failed")
            and broken.health_worker != broken.worker
            and not fixed.timed_out
            and fixed.report == "answered 200"
            and fixed.health_worker == fixed.worker
            and fixed.health_seconds < 1.0
        )

    def summary(self) -> str:
        return (
            f"1 gevent worker, --timeout {WORKER_TIMEOUT}, a {BLOCK_SECONDS:.0f} s wait: "
            f"in C: {self.in_c.describe()}; in gevent's thread pool: "
            f"{self.in_threadpool.describe()}"
        )


def prove() -> Finding:
    in_c, in_threadpool = at_once(
        lambda: slow_request_and_health_check("/report"),
        lambda: slow_request_and_health_check("/report-in-threadpool"),
    )
    return Finding(in_c, in_threadpool)
