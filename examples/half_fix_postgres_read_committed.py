"""Half-fix 9: the counter moved to PostgreSQL, read in Python, then written in a transaction.

A transaction does not make a read-then-write atomic by itself. Eight
threads, each with its own connection to one real PostgreSQL server (the
embedded one serve/postgres.py runs), increment a counter five ways:

- BEGIN, SELECT, then UPDATE with the value computed in Python, COMMIT,
  under PostgreSQL's default isolation, READ COMMITTED: every thread reads 0
  and writes 1. The first UPDATE takes the row's lock; the others wait for
  it, then, read committed, apply their own `SET value = 1` to the row the
  first committed (www.postgresql.org/docs/current/transaction-iso.html#XACT-READ-COMMITTED).
  Seven updates lost, every transaction committed, not one error. Where
  SQLite's deferred transaction fails loudly with "database is locked"
  (half_fix_sqlite_read_then_write), PostgreSQL loses the update silently.
- SELECT ... FOR UPDATE: the row's lock is taken by the read, so the others
  wait at their SELECT until the first commits, then read what it wrote.
  Exact; the cost is that the increments run one at a time, each waiting
  for the one before it to commit.
- REPEATABLE READ, and SERIALIZABLE: each reads from its own snapshot, all
  read 0, and the first to write wins; the others fail at their UPDATE with
  "could not serialize access due to concurrent update" (SQLSTATE 40001),
  and must run the whole transaction again. Exact, with a retry loop; the
  cost is the work thrown away: every loser's read, Python work and write
  are done again, at least once per conflict.
- One statement, `UPDATE counter SET value = value + 1 RETURNING value`:
  the read and the write happen inside PostgreSQL under the row's lock.
  Exact, with no retry and no lock held across Python code; this is what
  fixed_db does.

A run (8 increments; the retries are whole transactions run again):

    read committed:   answers [1, 1, 1, 1, 1, 1, 1, 1], final 1, 0 errors (8 between read and write)
    FOR UPDATE:       answers 1..8, final 8 (never more than 1 between read and write)
    REPEATABLE READ:  answers 1..8, final 8, after 26 serialization failures retried
    SERIALIZABLE:     answers 1..8, final 8, after 22 serialization failures retried
    one statement:    answers 1..8, final 8
"""

import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import errors

from examples.race import Gap, Outcome, race
from serve.postgres import EmbeddedPostgres

LABEL = "still broken"
THREADS = 8


def connect(url: str) -> psycopg.Connection:
    # autocommit: no implicit transactions; BEGIN is written out where used.
    return psycopg.connect(url, autocommit=True)


def create(url: str) -> None:
    with connect(url) as db:
        db.execute("CREATE TABLE IF NOT EXISTS counter (id INTEGER PRIMARY KEY, value BIGINT)")
        db.execute(
            "INSERT INTO counter (id, value) VALUES (1, 0)"
            " ON CONFLICT (id) DO UPDATE SET value = excluded.value"
        )


def read_then_write(db: psycopg.Connection, gap: Gap, read: str) -> int:
    [(value,)] = db.execute(read).fetchall()
    with gap:  # the work a handler does with the value: others read the same one
        new_value = value + 1
    db.execute("UPDATE counter SET value = %s WHERE id = 1", (new_value,))
    return new_value


def in_transaction(db: psycopg.Connection, begin: str, body: Callable[[], int]) -> int:
    db.execute(begin)
    try:
        new_value = body()
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return new_value


def read_committed(db: psycopg.Connection, gap: Gap) -> int:
    read = "SELECT value FROM counter WHERE id = 1"
    return in_transaction(db, "BEGIN", lambda: read_then_write(db, gap, read))


def for_update(db: psycopg.Connection, gap: Gap) -> int:
    read = "SELECT value FROM counter WHERE id = 1 FOR UPDATE"  # the others wait here
    return in_transaction(db, "BEGIN", lambda: read_then_write(db, gap, read))


class Retries:
    """A count that several threads add to: with a lock, or it would lose updates too."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def add(self) -> None:
        with self.lock:
            self.count += 1


def isolated(level: str, retries: Retries) -> Callable[[psycopg.Connection, Gap], int]:
    def increment(db: psycopg.Connection, gap: Gap) -> int:
        read = "SELECT value FROM counter WHERE id = 1"
        while True:
            try:
                return in_transaction(
                    db, f"BEGIN ISOLATION LEVEL {level}", lambda: read_then_write(db, gap, read)
                )
            except errors.SerializationFailure:  # another committed first: run it all again
                retries.add()

    return increment


def one_statement(db: psycopg.Connection, gap: Gap) -> int:
    [(new_value,)] = db.execute(
        "UPDATE counter SET value = value + 1 WHERE id = 1 RETURNING value"
    ).fetchall()
    return new_value


Increment = Callable[[psycopg.Connection, Gap], int]


@dataclass
class Result:
    outcome: Outcome
    final: int
    retries: int = 0


def run(increment: Increment, url: str, retries: Retries | None = None) -> Result:
    """THREADS increments at once from a counter at 0, each on its own connection."""
    create(url)

    def one_increment(gap: Gap) -> int:
        with connect(url) as db:
            return increment(db, gap)

    outcome = race(one_increment, THREADS)
    with connect(url) as db:
        [(final,)] = db.execute("SELECT value FROM counter WHERE id = 1").fetchall()
    return Result(outcome, final, retries.count if retries else 0)


def run_isolated(level: str, url: str) -> Result:
    retries = Retries()
    return run(isolated(level, retries), url, retries)


@dataclass
class Finding:
    read_committed: Result
    for_update: Result
    repeatable_read: Result
    serializable: Result
    one_statement: Result

    @property
    def exact(self) -> list[int]:
        return list(range(1, THREADS + 1))

    @property
    def correct(self) -> list[Result]:
        return [self.for_update, self.repeatable_read, self.serializable, self.one_statement]

    @property
    def holds(self) -> bool:
        lost = self.read_committed
        return (
            lost.final < THREADS
            and not lost.outcome.errors
            and lost.outcome.returned == [lost.final] * THREADS
            and all(r.outcome.returned == self.exact and r.final == THREADS for r in self.correct)
            and self.for_update.outcome.most_inside == 1
            and self.repeatable_read.retries >= THREADS - 1
            and self.serializable.retries >= THREADS - 1
        )

    def summary(self) -> str:
        lost = self.read_committed
        return (
            f"{THREADS} threads: read then write in a READ COMMITTED transaction ends at "
            f"{lost.final} ({THREADS - lost.final} updates lost, {len(lost.outcome.errors)} "
            f"errors); SELECT ... FOR UPDATE ends at {self.for_update.final} (at most "
            f"{self.for_update.outcome.most_inside} between read and write); REPEATABLE READ "
            f"and SERIALIZABLE end at {self.repeatable_read.final} and {self.serializable.final} "
            f"after {self.repeatable_read.retries} and {self.serializable.retries} serialization "
            f"failures retried; one UPDATE ... RETURNING ends at {self.one_statement.final}"
        )


def prove() -> Finding:
    with tempfile.TemporaryDirectory() as directory:
        server = EmbeddedPostgres(Path(directory) / "postgres")
        try:
            url = server.start().url
            return Finding(
                read_committed=run(read_committed, url),
                for_update=run(for_update, url),
                repeatable_read=run_isolated("REPEATABLE READ", url),
                serializable=run_isolated("SERIALIZABLE", url),
                one_statement=run(one_statement, url),
            )
        finally:
            server.remove()  # the server killed by PID, and its cluster deleted
