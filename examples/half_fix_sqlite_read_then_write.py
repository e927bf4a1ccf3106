"""Half-fix 5: the counter moved to SQLite, but still read in Python, then written.

A database does not make a read-then-write atomic by itself. Eight threads,
each with its own connection to one SQLite file (WAL, a 5 s busy timeout, as
fixed_db uses), increment a counter four ways:

- SELECT, then UPDATE with the value computed in Python (each statement its
  own transaction): every thread reads 0 and writes 1. Seven updates lost,
  without a single error.
- The same inside a plain (deferred) BEGIN ... COMMIT: the transaction starts
  as a reader and must become a writer at the UPDATE. One does; the others
  fail with "database is locked" at once. The busy timeout does not help: a
  transaction that has read cannot wait for a writer, since whatever it read
  is stale once that writer commits.
- BEGIN IMMEDIATE, then SELECT and UPDATE: the write lock is taken first, so
  the others wait at BEGIN (that is what the busy timeout is for), and each
  reads what the previous one wrote. Exact.
- One statement, `UPDATE counter SET value = value + 1 RETURNING value`:
  the read and the write happen inside SQLite under its write lock. Exact;
  this is what fixed_db does.

A run:

    read then write:  answers [1, 1, 1, 1, 1, 1, 1, 1], final 1 (8 at once between read and write)
    deferred:         1 committed; 7 x "database is locked", each within 0.003 s
    BEGIN IMMEDIATE:  answers 1..8, final 8 (never more than 1 between read and write)
    one statement:    answers 1..8, final 8
"""

import sqlite3
import tempfile
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from examples.race import Gap, Outcome, race

LABEL = "still broken"
THREADS = 8
BUSY_TIMEOUT_SECONDS = 5.0


def connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: no implicit transactions; BEGIN is written out where used.
    return sqlite3.connect(path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None)


def create(path: Path) -> None:
    with closing(connect(path)) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS counter (id INTEGER PRIMARY KEY, value INTEGER)")
        db.execute("INSERT OR REPLACE INTO counter (id, value) VALUES (1, 0)")


def read_then_write(db: sqlite3.Connection, gap: Gap) -> int:
    [(value,)] = db.execute("SELECT value FROM counter WHERE id = 1").fetchall()
    with gap:  # the work a handler does with the value: others read the same one
        new_value = value + 1
    db.execute("UPDATE counter SET value = ? WHERE id = 1", (new_value,))
    return new_value


def in_deferred_transaction(db: sqlite3.Connection, gap: Gap) -> int:
    db.execute("BEGIN")  # deferred: a reader until the first write
    try:
        new_value = read_then_write(db, gap)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return new_value


def in_immediate_transaction(db: sqlite3.Connection, gap: Gap) -> int:
    db.execute("BEGIN IMMEDIATE")  # the write lock first: the others wait here
    try:
        new_value = read_then_write(db, gap)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return new_value


def one_statement(db: sqlite3.Connection, gap: Gap) -> int:
    [(new_value,)] = db.execute(
        "UPDATE counter SET value = value + 1 WHERE id = 1 RETURNING value"
    ).fetchall()
    return new_value


Increment = Callable[[sqlite3.Connection, Gap], int]


@dataclass
class Result:
    outcome: Outcome
    final: int


def run(increment: Increment, path: Path) -> Result:
    """THREADS increments at once from a counter at 0, each on its own connection."""
    create(path)

    def one_increment(gap: Gap) -> int:
        with closing(connect(path)) as db:
            return increment(db, gap)

    outcome = race(one_increment, THREADS)
    with closing(connect(path)) as db:
        [(final,)] = db.execute("SELECT value FROM counter WHERE id = 1").fetchall()
    return Result(outcome, final)


@dataclass
class Finding:
    read_then_write: Result
    deferred: Result
    immediate: Result
    one_statement: Result

    @property
    def exact(self) -> list[int]:
        return list(range(1, THREADS + 1))

    @property
    def holds(self) -> bool:
        lost, deferred = self.read_then_write, self.deferred.outcome
        return (
            lost.final < THREADS
            and not lost.outcome.errors
            and len(deferred.returned) == self.deferred.final == 1
            and len(deferred.errors) == THREADS - 1
            and all("database is locked" in error for error in deferred.errors)
            and max(deferred.error_seconds) < BUSY_TIMEOUT_SECONDS / 5
            and self.immediate.outcome.returned == self.exact == self.one_statement.outcome.returned
            and self.immediate.final == self.one_statement.final == THREADS
        )

    def summary(self) -> str:
        lost, deferred = self.read_then_write, self.deferred.outcome
        return (
            f"{THREADS} threads: read then write ends at {lost.final} "
            f"({THREADS - lost.final} updates lost, {len(lost.outcome.errors)} errors); in a "
            f"deferred transaction {len(deferred.errors)} fail "
            f"({', '.join(sorted(set(deferred.errors)))}) within "
            f"{max(deferred.error_seconds or [0]):.3f} s despite a {BUSY_TIMEOUT_SECONDS:.0f} s "
            f"busy timeout; BEGIN IMMEDIATE and one UPDATE ... RETURNING end at "
            f"{self.immediate.final} and {self.one_statement.final}"
        )


def prove() -> Finding:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "counter.sqlite3"
        return Finding(
            read_then_write=run(read_then_write, path),
            deferred=run(in_deferred_transaction, path),
            immediate=run(in_immediate_transaction, path),
            one_statement=run(one_statement, path),
        )
