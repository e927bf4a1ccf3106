"""Half-fix 2: a multiprocessing.Value created before gunicorn forks its workers.

With --preload, gunicorn imports the app once, in its master process, then
forks the workers from it. A multiprocessing.Value made at import lives in
shared memory that every forked worker inherits, so the workers of one
server do share one counter, and its lock makes increments exact. It even
survives a worker recycled by --max-requests, since the replacement is
forked from the same master. What it does not survive:

- a full restart: the master goes, and the memory with it;
- a second instance (another port here, another host in production): a
  second master has a Value of its own and counts from 0 again;
- leaving out --preload: each worker then imports the app and makes its own.

    python -m gunicorn --preload --workers 2 --max-requests 5 examples.half_fix_preload_value:app

A run: 24 increments from 4 clients at once answered 1..24, served by 6
worker processes as they were recycled; a second instance answered 1; after
a restart the counter read 0; without --preload, two workers each answered 1.

The real fix keeps the counter where every process, instance and restart
finds it: fixed_db or fixed_cache.
"""

import multiprocessing
from dataclasses import dataclass

import requests
from flask import Flask

from examples.servers import Gunicorn, increments_at_once, stamp_worker, worker_of

LABEL = "still broken"
CLIENTS, EACH = 4, 6
MAX_REQUESTS = 5  # each worker is replaced after this many requests

app = stamp_worker(Flask(__name__))
counter = multiprocessing.Value("q", 0)  # shared memory, inherited by forked workers


@app.post("/increment")
def increment():
    with counter.get_lock():  # a lock that works across processes, as the memory is shared
        counter.value += 1
        new_value = counter.value
    return {"value": new_value}


@app.get("/counter")
def read_counter():
    return {"value": counter.value}


TARGET = "examples.half_fix_preload_value:app"


def serve() -> Gunicorn:
    return Gunicorn(TARGET, workers=2, options=["--preload", "--max-requests", str(MAX_REQUESTS)])


@dataclass
class Finding:
    values: list[int]  # what the first instance answered
    workers: set[int]  # the worker processes that gave those answers
    second_instance: int  # what another instance answered to one increment
    after_restart: int  # what the first instance read after a restart
    without_preload: list[int]  # one increment from each of two workers, no --preload

    @property
    def holds(self) -> bool:
        return (
            self.values == list(range(1, CLIENTS * EACH + 1))
            and len(self.workers) > 2  # recycled by max_requests, and still counting on
            and self.second_instance == 1
            and self.after_restart == 0
            and self.without_preload == [1, 1]
        )

    def summary(self) -> str:
        return (
            f"shared by one server's workers ({len(self.values)} increments at once answered "
            f"1..{max(self.values, default=0)} by {len(self.workers)} worker processes, "
            f"recycled every {MAX_REQUESTS} requests); a second instance answered "
            f"{self.second_instance}; after a restart it read {self.after_restart}; "
            f"without --preload two workers each answered {self.without_preload}"
        )


def prove() -> Finding:
    with serve() as first:
        values, workers = increments_at_once(first.url, CLIENTS, EACH)
        with serve() as second:
            second_instance = requests.post(second.url + "/increment", timeout=5).json()["value"]
    with serve() as restarted:
        after_restart = requests.get(restarted.url + "/counter", timeout=5).json()["value"]
    with Gunicorn(TARGET, workers=2) as not_preloaded:
        one = requests.post(not_preloaded.url + "/increment", timeout=5)
        with not_preloaded.paused(worker_of(one)):  # so that the other worker answers
            other = requests.post(not_preloaded.url + "/increment", timeout=5)
    without_preload = [one.json()["value"], other.json()["value"]]
    return Finding(values, workers, second_instance, after_restart, without_preload)
