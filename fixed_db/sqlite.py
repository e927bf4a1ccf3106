"""fixed_db on SQLite: a file, a pool of connections per worker process.

SQLiteDatabase is one of the two siblings behind store.Database (the other:
postgres.py). Each statement runs in autocommit mode, so one statement is
one transaction; a keyed write is one `BEGIN IMMEDIATE` transaction, so a
second request with the same key waits for the write lock, then finds it.
Connections are pooled per worker, made after gunicorn forks, because
opening one per request costs more than the UPDATE itself. The settings
(WAL, synchronous, busy timeout) and what a failed write answers, with
SQLite's documentation for each, are in README.md; outcome_of() cites it.
"""

import itertools
import queue
import sqlite3
import time
from contextlib import closing, suppress
from pathlib import Path

from werkzeug.exceptions import HTTPException

from plumbing.idempotency import HEADER, NotApplied, OutcomeUnknown, StoreFull

BUSY_TIMEOUT_MS = 5000
SYNCHRONOUS_LEVELS = {"OFF", "NORMAL", "FULL", "EXTRA"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS counter (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    value INTEGER NOT NULL
);
INSERT INTO counter (id, value) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
CREATE TABLE IF NOT EXISTS visits (
    id INTEGER PRIMARY KEY,
    user_id TEXT NOT NULL,
    article TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS visits_by_user ON visits (user_id, id);
CREATE TABLE IF NOT EXISTS idempotency (
    scoped_key TEXT PRIMARY KEY,
    status INTEGER NOT NULL,
    body TEXT NOT NULL,
    created INTEGER NOT NULL,
    fingerprint TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS idempotency_by_age ON idempotency (created);
"""
ADD_FINGERPRINT = "ALTER TABLE idempotency ADD COLUMN fingerprint TEXT NOT NULL DEFAULT ''"


class SQLiteDatabase:
    """A SQLite file, with an idle-connection pool for this worker process."""

    Error = sqlite3.Error  # what its driver raises
    unavailable = (sqlite3.OperationalError,)  # busy, or the file cannot be opened

    def __init__(
        self, path: Path, synchronous: str = "NORMAL", busy_timeout_ms: int = BUSY_TIMEOUT_MS
    ) -> None:
        self.path = path
        self.synchronous = synchronous
        self.busy_timeout_ms = busy_timeout_ms
        self.idle: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self.keyed_writes = itertools.count()  # next() is atomic under the GIL

    def connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout_ms / 1000,
            isolation_level=None,  # autocommit: each statement is a transaction
            check_same_thread=False,  # pooled: used by one thread at a time
        )
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        return conn

    def prepare(self) -> None:
        """At the app's start: the schema (a file is always there to open)."""
        self.create_schema()

    def create_schema(self) -> None:
        """Raises ValueError if the file's folder does not exist: a mistyped
        DATABASE_URL must not make folders anywhere (the default's, under
        var/, is made private by plumbing.config.var_dir())."""
        if not self.path.parent.is_dir():
            raise ValueError(
                f"DATABASE_URL names {self.path}, in a folder that does not exist: "
                "create the folder first, or correct the URL"
            )
        with closing(self.connect()) as conn:
            self.use_wal(conn)
            conn.executescript(SCHEMA)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(idempotency)")}
            if "fingerprint" not in columns:  # a file made before keys had one
                with suppress(sqlite3.OperationalError):  # another worker added it
                    conn.execute(ADD_FINGERPRINT)

    def use_wal(self, conn: sqlite3.Connection) -> None:
        """Switch the file to write-ahead logging, retrying while it is locked.

        The switch reads the file, then needs its write lock. When several
        workers boot at once on a new file, SQLite answers "database is
        locked" at once rather than wait the busy timeout, since waiting while
        holding a read lock could deadlock (sqlite.org/c3ref/busy_handler.html).
        The switch is safe to repeat; WAL then stays with the file.
        Raises sqlite3.OperationalError once the busy timeout has passed.
        """
        deadline = time.monotonic() + self.busy_timeout_ms / 1000
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or time.monotonic() > deadline:
                    raise
            else:
                if mode == "wal":
                    return
                if time.monotonic() > deadline:
                    raise sqlite3.OperationalError(f"journal_mode stayed {mode!r}, not 'wal'")
            time.sleep(0.005)

    def acquire(self) -> sqlite3.Connection:
        try:
            return self.idle.get_nowait()
        except queue.Empty:
            return self.connect()

    def release(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            conn.rollback()
        self.idle.put(conn)

    # Writes with an Idempotency-Key (store.KeyedTransactions).

    def begin_write(self, conn: sqlite3.Connection, scoped_key: str) -> None:
        """BEGIN IMMEDIATE: the write lock first. A request with the same key
        waits here (up to the busy timeout) until the first one has committed,
        then finds its key. Raises sqlite3.OperationalError, "database is
        locked", past the busy timeout."""
        conn.execute("BEGIN IMMEDIATE")

    @staticmethod
    def outcome_of(error: sqlite3.Error, committing: bool) -> HTTPException:
        return outcome_of(error, committing)


def database_from_url(url: str, synchronous: str, busy_timeout_ms: int) -> SQLiteDatabase:
    if synchronous.upper() not in SYNCHRONOUS_LEVELS:
        raise ValueError(f"SQLITE_SYNCHRONOUS must be one of {sorted(SYNCHRONOUS_LEVELS)}")
    scheme, sep, rest = url.partition("://")
    if scheme == "sqlite" and sep and rest.startswith("/"):
        return SQLiteDatabase(Path(rest[1:]), synchronous.upper(), busy_timeout_ms)
    raise ValueError(
        "DATABASE_URL must look like sqlite:////absolute/path.db or "
        f"postgresql://user@host/database, got {url!r}"
    )


def outcome_of(error: sqlite3.Error, committing: bool) -> HTTPException:
    """What became of a write that failed with `error`: the answer to raise.

    committing: the failed statement was a COMMIT, or an autocommit statement,
    which commits itself. From SQLite's documentation:

    - A transaction is atomic: all of its changes happen or none
      (https://www.sqlite.org/atomiccommit.html). In WAL mode it commits when
      a commit record is appended to the WAL; changes without one are ignored
      (https://www.sqlite.org/wal.html). So a transaction that failed before
      its COMMIT changed nothing: NotApplied, or StoreFull for lack of space.
    - SQLITE_BUSY, "database is locked": another connection held the write
      lock past the busy timeout, and nothing was written; a COMMIT that fails
      this way leaves its transaction open, to be rolled back
      (https://www.sqlite.org/rescode.html#busy,
      https://www.sqlite.org/lang_transaction.html). NotApplied.
    - SQLITE_FULL, "database or disk is full": a write could not complete for
      lack of space, and SQLite undid the statement or the whole transaction
      (https://www.sqlite.org/rescode.html#full). StoreFull.
    - Anything else during a commit (SQLITE_IOERR, an I/O error the operating
      system reported; SQLITE_CORRUPT; SQLITE_NOMEM): SQLite may or may not
      have rolled the transaction back (https://www.sqlite.org/c3ref/get_autocommit.html),
      and its commit record may already be in the WAL. OutcomeUnknown.

    Returns NotApplied (503), StoreFull (507) or OutcomeUnknown (503)."""
    code = getattr(error, "sqlite_errorcode", None)
    primary = code & 0xFF if code is not None else None  # the extended code's low byte
    if primary == sqlite3.SQLITE_FULL:
        return StoreFull()
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return NotApplied(
            "another write held the database past the busy timeout; nothing was written: retry"
        )
    if committing:
        return OutcomeUnknown(
            f"the database failed while committing the write ({error}): it may or may not "
            f"have been applied. Retry with the same {HEADER} header to apply it at most once"
        )
    return NotApplied(f"the database failed before committing ({error}); nothing was written")
