"""Run one increment in several threads at once, certain to interleave where it can.

An increment that reads, works, then writes calls `with gap:` for its work.
The first time through, a thread waits in the gap until every thread has
read, so all the reads come before any write: the interleaving that real
concurrency produces sooner or later, made certain. Where a strategy lets
only one thread into the gap at a time (BEGIN IMMEDIATE), nobody else can
arrive: the first thread waits out `timeout` and the rest go straight
through. `most_inside` says which of the two happened.
"""

import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from types import TracebackType

GAP_TIMEOUT_SECONDS = 0.5


class Gap:
    def __init__(self, parties: int, timeout: float = GAP_TIMEOUT_SECONDS) -> None:
        self.everyone = threading.Barrier(parties)
        self.timeout = timeout
        self.lock = threading.Lock()
        self.inside = 0
        self.most_inside = 0

    def __enter__(self) -> "Gap":
        with self.lock:
            self.inside += 1
            self.most_inside = max(self.most_inside, self.inside)
        # If not everyone can get here together, the barrier breaks: no more waiting, for anyone.
        with suppress(threading.BrokenBarrierError):
            self.everyone.wait(self.timeout)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self.lock:
            self.inside -= 1


@dataclass
class Outcome:
    returned: list[int] = field(default_factory=list)  # what each successful call returned
    errors: list[str] = field(default_factory=list)
    error_seconds: list[float] = field(default_factory=list)  # how long each failed call took
    most_inside: int = 0  # the most threads in the gap at one time

    @property
    def twice(self) -> int:
        """How many answers repeat one given before (each one a lost update)."""
        return len(self.returned) - len(set(self.returned))


def race(increment: Callable[[Gap], int], threads: int) -> Outcome:
    """Start `threads` calls of increment(gap) at the same moment; collect what happened."""
    start, gap = threading.Barrier(threads), Gap(threads)
    outcome, lock = Outcome(), threading.Lock()

    def run() -> None:
        start.wait(timeout=10)
        began = time.monotonic()
        try:
            value = increment(gap)
        except Exception as error:
            with lock:
                outcome.errors.append(f"{type(error).__name__}: {error}")
                outcome.error_seconds.append(time.monotonic() - began)
        else:
            with lock:
                outcome.returned.append(value)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    outcome.returned.sort()
    outcome.most_inside = gap.most_inside
    return outcome
