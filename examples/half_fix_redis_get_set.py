"""Half-fix 6: the counter moved to a Redis-protocol server, but read with GET, then SET.

Every worker now talks to the same server, so nothing diverges; but a GET
followed by a SET is still two steps, and eight threads that GET before any
of them SETs all write the same value. The server runs one command at a
time; it cannot know that two commands belong together. The fixes:

- INCR: the read and the write are one command (fixed_cache does this);
- WATCH, GET, then MULTI/SET/EXEC: a transaction that the server refuses if
  the key changed after the WATCH; the loser reads again and retries.

All three against a real Valkey server (the one serve/valkey.py runs). A run:

    GET then SET:  answers [1, 1, 1, 1, 1, 1, 1, 1], final 1 (8 between GET and SET at once)
    INCR:          answers 1..8, final 8
    WATCH/MULTI:   answers 1..8, final 8, after 21 conflicts caught and retried
"""

import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

from examples.race import Gap, Outcome, race
from serve.valkey import EmbeddedValkey

LABEL = "still broken"
THREADS = 8
KEY = "counter"


def get_then_set(server: redis.Redis, gap: Gap) -> int:
    value = int(server.get(KEY) or 0)
    with gap:  # the work between the two commands: the others GET the same value
        new_value = value + 1
    server.set(KEY, new_value)
    return new_value


def incr(server: redis.Redis, gap: Gap) -> int:
    return server.incr(KEY)  # one command: no gap to be in


class Retries:
    """A count that several threads add to: with a lock, or it would lose updates too."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def add(self) -> None:
        with self.lock:
            self.count += 1


def watched_transaction(retries: Retries) -> Callable[[redis.Redis, Gap], int]:
    def increment(server: redis.Redis, gap: Gap) -> int:
        with server.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(KEY)  # EXEC will fail if anyone changes KEY from here on
                    value = int(pipe.get(KEY) or 0)
                    with gap:
                        new_value = value + 1
                    pipe.multi()
                    pipe.set(KEY, new_value)
                    pipe.execute()
                    return new_value
                except redis.WatchError:
                    retries.add()

    return increment


@dataclass
class Result:
    outcome: Outcome
    final: int


def run(server: redis.Redis, increment: Callable[[redis.Redis, Gap], int]) -> Result:
    server.set(KEY, 0)
    outcome = race(lambda gap: increment(server, gap), THREADS)
    return Result(outcome, int(server.get(KEY)))


@dataclass
class Finding:
    get_then_set: Result
    incr: Result
    transaction: Result
    retries: int

    @property
    def holds(self) -> bool:
        exact = list(range(1, THREADS + 1))
        return (
            self.get_then_set.final < THREADS
            and not self.get_then_set.outcome.errors
            and self.incr.outcome.returned == exact == self.transaction.outcome.returned
            and self.incr.final == self.transaction.final == THREADS
            and self.retries > 0
        )

    def summary(self) -> str:
        lost = self.get_then_set
        return (
            f"{THREADS} threads: GET then SET ends at {lost.final} "
            f"({lost.outcome.twice} answers repeated, {len(lost.outcome.errors)} errors); "
            f"INCR ends at "
            f"{self.incr.final}; WATCH/MULTI ends at {self.transaction.final} "
            f"after {self.retries} conflicts retried"
        )


def prove() -> Finding:
    with (
        tempfile.TemporaryDirectory() as directory,
        EmbeddedValkey(Path(directory)) as valkey,
    ):
        server = redis.Redis.from_url(valkey.url, socket_timeout=5)
        retries = Retries()
        finding = Finding(
            get_then_set=run(server, get_then_set),
            incr=run(server, incr),
            transaction=run(server, watched_transaction(retries)),
            retries=retries.count,
        )
        server.close()
    return finding
