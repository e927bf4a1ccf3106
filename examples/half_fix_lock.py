"""Half-fix 1: a threading.Lock around the global counter.

The lock makes read-work-write one step for the threads of one process, and
with one gunicorn worker of 8 threads the counter is exact. But a lock, like
the counter it guards, lives in one process. Split the same 8 threads over 2
worker processes (the project's shared gunicorn shape) and each worker counts
on its own, under its own lock: both hand out 1, 2, 3, ...

    python -m gunicorn --workers 1 --threads 8 examples.half_fix_lock:app   # exact
    python -m gunicorn --workers 2 --threads 4 examples.half_fix_lock:app   # diverges

A run: 1 worker x 8 threads, 80 increments answered 1..80, each once;
2 workers x 4 threads, 80 increments, 37 values handed out twice (both
workers returned 1 to 37), and no reader can tell which count is right.

The real fix keeps the counter outside the processes and changes it in one
atomic step: fixed_db (UPDATE ... RETURNING) or fixed_cache (INCR).
"""

import threading
import time
from collections import Counter
from dataclasses import dataclass

from flask import Flask

from examples.servers import Gunicorn, increments_at_once, stamp_worker

LABEL = "still broken"
WORK_SECONDS = 0.002  # a query or an API call between the read and the write
CLIENTS, EACH = 8, 10

app = stamp_worker(Flask(__name__))
counter = 0
counter_lock = threading.Lock()  # one per process, like the counter


@app.post("/increment")
def increment():
    global counter
    with counter_lock:  # no other thread of this process gets in between...
        new_value = counter + 1
        time.sleep(WORK_SECONDS)
        counter = new_value  # ...but another process has a counter of its own
    return {"value": new_value}


@dataclass
class Hammered:
    values: list[int]  # every answer, sorted
    workers: set[int]

    @property
    def twice(self) -> list[int]:
        """The values handed out more than once."""
        return sorted(value for value, n in Counter(self.values).items() if n > 1)

    @property
    def exact(self) -> bool:
        return self.values == list(range(1, len(self.values) + 1))


def hammer(url: str) -> Hammered:
    values, workers = increments_at_once(url, CLIENTS, EACH)
    return Hammered(values, workers)


@dataclass
class Finding:
    one_process: Hammered
    two_processes: Hammered

    @property
    def holds(self) -> bool:
        total = CLIENTS * EACH
        return (
            len(self.one_process.values) == len(self.two_processes.values) == total
            and self.one_process.exact
            and len(self.one_process.workers) == 1
            and len(self.two_processes.workers) == 2
            and len(self.two_processes.twice) > 0
        )

    def summary(self) -> str:
        one, two = self.one_process, self.two_processes
        if one.exact:
            in_one = (
                f"exact with 8 threads in one process (answers 1..{len(one.values)}, each once)"
            )
        else:
            in_one = f"8 threads in one process handed out {len(one.twice)} values twice"
        in_two = (
            f"2 workers x 4 threads diverge ({len(two.twice)} values handed out twice, "
            f"both returned {two.twice[-1]})"
            if two.twice
            else "2 workers x 4 threads handed out no value twice"
        )
        return f"{in_one}; {in_two}"


def prove() -> Finding:
    target = "examples.half_fix_lock:app"
    with Gunicorn(target, workers=1, threads=8) as server:
        one_process = hammer(server.url)
    with Gunicorn(target, workers=2, threads=4) as server:
        two_processes = hammer(server.url)
    return Finding(one_process, two_processes)
