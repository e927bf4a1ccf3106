"""Why a bare `counter += 1` seldom loses an update, and a real handler does.

`counter += 1` on a global is three steps: load the value, add one, store
it. Another thread that runs between the load and the store overwrites the
result. On CPython 3.10+ with the GIL, a thread lets another one run only at
certain points (a call, the backward jump of a loop, a blocking call), and
none of them falls between that load and that store. So threads hammering a
bare `+= 1` almost never lose one, and a test of it proves nothing.

Real handlers do something between reading and writing: a query, an API
call, a template. That is a blocking call, the GIL is released, and another
thread reads the same old value. Here `time.sleep(0)` stands in for it, the
smallest such gap there is.

On a free-threaded build (Python 3.13t and later, with the GIL disabled)
threads really run at once, and even the bare `+= 1` loses updates: the
only safe increment is one made atomic by something else (a lock in one
process; a database or a Redis-protocol server across processes).

Eight threads, started together. A run on CPython 3.11 (with the GIL):

    bare `counter += 1`:          1,600,000 of 1,600,000 kept
    read, sleep(0), then write:   1,000 of 8,000 kept
"""

import sys
import threading
import time
from dataclasses import dataclass

LABEL = "proven"
THREADS = 8
BARE_EACH = 200_000
WITH_WORK_EACH = 1_000

counter = 0


def bare_increments(times: int) -> None:
    global counter
    for _ in range(times):
        counter += 1


def increments_with_work(times: int) -> None:
    global counter
    for _ in range(times):
        value = counter  # read
        time.sleep(0)  # work: the GIL is released, another thread reads the same value
        counter = value + 1  # write


def run(increment, each: int) -> int:
    """THREADS threads run `increment(each)` together; return the final count."""
    global counter
    counter = 0
    start = threading.Barrier(THREADS)

    def worker() -> None:
        start.wait(timeout=10)
        increment(each)

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return counter


def gil_enabled() -> bool:
    is_enabled = getattr(sys, "_is_gil_enabled", None)  # Python 3.13+
    return True if is_enabled is None else is_enabled()


@dataclass
class Finding:
    gil: bool
    bare: int
    with_work: int

    @property
    def holds(self) -> bool:
        work_loses = self.with_work < THREADS * WITH_WORK_EACH
        if self.gil:  # the GIL hides the race of the bare increment, never the real one
            return self.bare == THREADS * BARE_EACH and work_loses
        return self.bare < THREADS * BARE_EACH and work_loses  # free-threaded: both lose

    def summary(self) -> str:
        build = "with the GIL" if self.gil else "free-threaded, GIL disabled"
        return (
            f"{sys.implementation.name} {sys.version.split()[0]} ({build}), {THREADS} threads: "
            f"bare `counter += 1` kept {self.bare:,} of {THREADS * BARE_EACH:,}; "
            f"read, sleep(0), write kept {self.with_work:,} of {THREADS * WITH_WORK_EACH:,}"
        )


def prove() -> Finding:
    bare = run(bare_increments, BARE_EACH)
    with_work = run(increments_with_work, WITH_WORK_EACH)
    return Finding(gil_enabled(), bare, with_work)
