"""The database behind fixed_db: connections per request, reused per worker.

init_app(app) opens the database DATABASE_URL names, creates the schema and
answers 503 when SQLite fails (busy past the timeout, or unavailable).

Routes call store.query(sql, params) with "?" placeholders and get all rows
back. Each statement runs on its own in autocommit mode, so one statement is
one transaction: `UPDATE ... RETURNING` reads and writes under the write lock
with nothing in between. Rows are always fetched to the end, because SQLite
holds its write lock until a statement has been stepped to completion.

SQLite settings, and why:
- WAL journal: readers never block the writer, nor the writer the readers.
- synchronous=NORMAL: a commit is not fsynced; it survives a crash of the app
  but the last commits may be lost if the machine loses power. Set
  SQLITE_SYNCHRONOUS=FULL to fsync every commit (slower, durable).
- busy timeout: a writer waits up to 5 s for another connection's write to end
  instead of failing at once; past that the app answers 503.

Connections are pooled per worker process, because opening one per request
(and reading the schema again) costs more than the UPDATE itself. The pool is
made in each worker, after gunicorn forks, never at import.
"""

import queue
import sqlite3
from contextlib import closing
from pathlib import Path

from flask import Flask, current_app, g

from plumbing import setting, unavailable_when

BUSY_TIMEOUT_SECONDS = 5.0

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
"""


class SQLiteDatabase:
    """A SQLite file, with an idle-connection pool for this worker process."""

    def __init__(self, path: Path, synchronous: str = "NORMAL") -> None:
        self.path = path
        self.synchronous = synchronous
        self.idle: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()

    def connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=BUSY_TIMEOUT_SECONDS,
            isolation_level=None,  # autocommit: each statement is a transaction
            check_same_thread=False,  # pooled: used by one thread at a time
        )
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        return conn

    def create_schema(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self.connect()) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)

    def acquire(self) -> sqlite3.Connection:
        try:
            return self.idle.get_nowait()
        except queue.Empty:
            return self.connect()

    def release(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            conn.rollback()
        self.idle.put(conn)


SYNCHRONOUS_LEVELS = {"OFF", "NORMAL", "FULL", "EXTRA"}


def database_from_url(url: str, synchronous: str) -> SQLiteDatabase:
    if synchronous.upper() not in SYNCHRONOUS_LEVELS:
        raise ValueError(f"SQLITE_SYNCHRONOUS must be one of {sorted(SYNCHRONOUS_LEVELS)}")
    scheme, sep, rest = url.partition("://")
    if scheme == "sqlite" and sep and rest.startswith("/"):
        return SQLiteDatabase(Path(rest[1:]), synchronous.upper())
    raise ValueError(f"DATABASE_URL must look like sqlite:////absolute/path.db, got {url!r}")


def get_db() -> sqlite3.Connection:
    """This request's connection, borrowed from the pool and kept on g."""
    if "db" not in g:
        g.db = current_app.extensions["fixed_db"].acquire()
    return g.db


def release_db(_error: BaseException | None = None) -> None:
    conn = g.pop("db", None)
    if conn is not None:
        current_app.extensions["fixed_db"].release(conn)


def query(sql: str, params: tuple = ()) -> list[tuple]:
    """Run one statement as its own transaction and return all its rows."""
    return get_db().execute(sql, params).fetchall()


def init_app(app: Flask) -> None:
    default_url = f"sqlite:///{app.config['VAR_DIR']}/fixed_db.sqlite3"
    database = database_from_url(
        setting(app, "DATABASE_URL", default_url),
        setting(app, "SQLITE_SYNCHRONOUS", "NORMAL"),
    )
    database.create_schema()
    app.extensions["fixed_db"] = database
    app.teardown_appcontext(release_db)
    unavailable_when(app, (sqlite3.OperationalError,), "the database is busy or unavailable; retry")
