"""The database behind fixed_db: connections per request, reused per worker.

init_app(app) opens the database DATABASE_URL names: a SQLite file
(sqlite:////abs/path.db, the default under var/), or any PostgreSQL server
(postgresql://..., fixed_db/postgres.py). FIXED_DB_BACKEND=postgres without a
URL asks the launchers (python -m serve, AppServer) for an embedded one; they
start it and set the URL (serve/postgres.py). It answers 503 when the
database fails (busy past the timeout, or unavailable); a failed write says
what became of it (outcome_of()). Both backends offer the same few methods
(prepare, acquire, release, begin_write, outcome_of, Error), and a
connection whose execute(sql, params).fetchall() runs the routes' SQL
unchanged.

Routes call store.query(sql, params) with "?" placeholders and get all rows
back. Each statement runs on its own in autocommit mode, so one statement is
one transaction: `UPDATE ... RETURNING` reads and writes under the write lock
with nothing in between. Rows are always fetched to the end, because SQLite
holds its write lock until a statement has been stepped to completion.

Write routes are wrapped in @store.idempotent. Without an Idempotency-Key
header that changes nothing: the same statements, each its own transaction.
With one, the route's statements, the lookup of the key and the record of
the answer are one `BEGIN IMMEDIATE` transaction (see idempotent()), in the
`idempotency` table: the key scoped to the route and the user, the status,
the JSON body and when, in unix seconds; kept IDEMPOTENCY_TTL_SECONDS.

SQLite settings, and why:
- WAL journal: readers never block the writer, nor the writer the readers.
- synchronous=NORMAL: a commit is not fsynced; it survives a crash of the app
  but the last commits may be lost if the machine loses power. Set
  SQLITE_SYNCHRONOUS=FULL to fsync every commit (slower, durable).
- busy timeout: a writer waits up to 5 s (SQLITE_BUSY_TIMEOUT_MS, in
  milliseconds) for another connection's write to end instead of failing at
  once; past that the app answers 503 "not applied".

Connections are pooled per worker process, because opening one per request
(and reading the schema again) costs more than the UPDATE itself. The pool is
made in each worker, after gunicorn forks, never at import. The schema is
created when the app starts (PostgreSQL's under a lock, since workers start
together; if the server is not up yet, by the first request that needs it:
fixed_db/postgres.py).
"""

import functools
import itertools
import logging
import queue
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing, suppress
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from flask import Flask, Response, current_app, g
from werkzeug.exceptions import HTTPException

from plumbing import current_user_id, setting, unavailable_when
from plumbing.config import FIXED_DB_BACKENDS, FIXED_DB_SQLITE_FILE, default, url_backend
from plumbing.idempotency import (
    HEADER,
    NotApplied,
    OutcomeUnknown,
    StoreFull,
    idempotency_key,
    scoped_key,
)

if TYPE_CHECKING:
    from fixed_db.postgres import PostgresConnection, PostgresDatabase

BUSY_TIMEOUT_MS = 5000
IDEMPOTENCY_TTL_SECONDS = 24 * 60 * 60  # a key older than this is forgotten
EXPIRE_EVERY = 100  # keyed writes per worker process between two purges of old keys
log = logging.getLogger(__name__)

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
    created INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS idempotency_by_age ON idempotency (created);
"""


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

    def use_wal(self, conn: sqlite3.Connection) -> None:
        """Switch the file to write-ahead logging, retrying while it is locked.

        The switch reads the file, then needs its write lock. When several
        workers boot at once on a new file, SQLite answers "database is
        locked" at once rather than wait the busy timeout, since waiting while
        holding a read lock could deadlock (sqlite.org/c3ref/busy_handler.html).
        Measured: 17 of 100 rounds of four processes booting together, before
        this retry. The switch is safe to repeat; WAL then stays with the file.
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

    # Writes with an Idempotency-Key (idempotent() below).

    def begin_write(self, conn: sqlite3.Connection, scoped_key: str) -> None:
        """BEGIN IMMEDIATE: the write lock first. A request with the same key
        waits here (up to the busy timeout) until the first one has committed,
        then finds its key. Raises sqlite3.OperationalError, "database is
        locked", past the busy timeout."""
        conn.execute("BEGIN IMMEDIATE")

    @staticmethod
    def outcome_of(error: sqlite3.Error, committing: bool) -> HTTPException:
        return outcome_of(error, committing)


SYNCHRONOUS_LEVELS = {"OFF", "NORMAL", "FULL", "EXTRA"}
BACKENDS = FIXED_DB_BACKENDS  # FIXED_DB_BACKEND
Database: TypeAlias = "SQLiteDatabase | PostgresDatabase"
Connection: TypeAlias = "sqlite3.Connection | PostgresConnection"


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


def database_from_settings(app: Flask) -> Database:
    """The database DATABASE_URL names, or FIXED_DB_BACKEND's default.

    Raises ValueError for a URL of neither kind, a backend that is neither
    sqlite nor postgres or that contradicts the URL, and for postgres with
    no URL (nothing started a server for it)."""
    backend = setting(app, "FIXED_DB_BACKEND", "")
    if backend and backend not in BACKENDS:
        raise ValueError(f"FIXED_DB_BACKEND must be one of {', '.join(BACKENDS)}, got {backend!r}")
    url = setting(app, "DATABASE_URL", "")
    if url_backend(url) == "postgres":
        if backend == "sqlite":
            raise ValueError(f"FIXED_DB_BACKEND=sqlite, but DATABASE_URL is PostgreSQL's: {url!r}")
        from fixed_db.postgres import PostgresDatabase  # psycopg, only when it is used

        threads = int(setting(app, "GUNICORN_THREADS", default("GUNICORN_THREADS")))
        return PostgresDatabase(url, pool_size=int(setting(app, "POSTGRES_POOL_SIZE", threads)))
    if backend == "postgres":
        raise ValueError(
            f"FIXED_DB_BACKEND=postgres needs DATABASE_URL=postgresql://..., got {url!r}: "
            "`make run APP=fixed_db DB=postgres` (python -m serve) starts an embedded "
            "PostgreSQL server and sets it, or point it at yours"
        )
    return database_from_url(
        url or f"sqlite:///{app.config['VAR_DIR']}/{FIXED_DB_SQLITE_FILE}",
        setting(app, "SQLITE_SYNCHRONOUS", "NORMAL"),
        int(setting(app, "SQLITE_BUSY_TIMEOUT_MS", BUSY_TIMEOUT_MS)),
    )


def database() -> Database:
    return current_app.extensions["fixed_db"]


def get_db() -> Connection:
    """This request's connection, borrowed from the pool and kept on g.

    Raises NotApplied (503) when there is none to borrow (PostgreSQL down or
    restarting, a file that cannot be opened): nothing was sent."""
    if "db" not in g:
        try:
            g.db = database().acquire()
        except database().Error as error:
            raise failed(error, NotApplied(f"no connection to the database ({error})")) from error
    return g.db


def release_db(_error: BaseException | None = None) -> None:
    conn = g.pop("db", None)
    if conn is not None:
        current_app.extensions["fixed_db"].release(conn)


def query(sql: str, params: tuple = ()) -> list[tuple]:
    """Run one statement and return all its rows.

    Outside a write with an Idempotency-Key, the statement is its own
    transaction. Inside one, the first statement first opens the write's
    transaction and looks the key up (begin_keyed_write()); the statements
    after it join that transaction. Raises the driver's Error as the
    database reports it (database().Error)."""
    if "idempotency_key" in g and not get_db().in_transaction:
        begin_keyed_write()
    return get_db().execute(sql, params).fetchall()


# Idempotent writes: the Idempotency-Key header (plumbing/idempotency.py).


class Replay(Exception):
    """The key was already used: the answer recorded with it, to send again."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(status)
        self.status, self.body = status, body

    def response(self) -> Response:
        response = current_app.response_class(self.body, self.status, mimetype="application/json")
        response.headers["Idempotent-Replayed"] = "true"
        return response


def begin_keyed_write() -> None:
    """Open the write's transaction, then look the request's key up.

    Raises Replay if a write with this key committed less than
    IDEMPOTENCY_TTL_SECONDS ago, and what begin_write() raises."""
    conn = get_db()
    database().begin_write(conn, g.idempotency_key)
    rows = conn.execute(
        "SELECT status, body FROM idempotency WHERE scoped_key = ? AND created >= ?",
        (g.idempotency_key, int(time.time()) - IDEMPOTENCY_TTL_SECONDS),
    ).fetchall()
    if rows:
        raise Replay(*rows[0])


def record_answer(response: Response) -> None:
    """Store the key with the answer, in the write's transaction; now and then
    delete the keys past their time (the index on created finds them)."""
    now = int(time.time())
    get_db().execute(
        "INSERT INTO idempotency (scoped_key, status, body, created) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (scoped_key) DO UPDATE"  # an expired key used again
        " SET status = excluded.status, body = excluded.body, created = excluded.created",
        (g.idempotency_key, response.status_code, response.get_data(as_text=True), now),
    )
    if next(database().keyed_writes) % EXPIRE_EVERY == 0:
        get_db().execute(
            "DELETE FROM idempotency WHERE created < ?", (now - IDEMPOTENCY_TTL_SECONDS,)
        )


def idempotent(view: Callable) -> Callable:
    """Make a write route answer once per Idempotency-Key.

    Without the header the view runs as it did: each statement its own
    transaction, nothing added. With it, one transaction, opened by the view's
    first statement with BEGIN IMMEDIATE, so validation and the view's other
    work run before the write lock is taken: look the key (scoped to the route
    and the user) up and send its recorded answer again, with
    `Idempotent-Replayed: true`; else run the write, record the key with the
    answer (status and JSON body), COMMIT. A request that fails records
    nothing, so a retry with the same key runs the write.

    Raises BadRequest (400) for a malformed key, and NotApplied (503),
    StoreFull (507) or OutcomeUnknown (503) when SQLite fails (outcome_of())."""

    @functools.wraps(view)
    def write(*args, **kwargs):
        key = idempotency_key()
        conn = get_db()
        outcome_of, driver_error = database().outcome_of, database().Error
        if key is None:
            changes = conn.total_changes
            try:
                return view(*args, **kwargs)
            except driver_error as error:
                if conn.total_changes != changes:  # an earlier statement wrote, and committed
                    raise failed(error, wrote_before(error)) from error
                raise failed(error, outcome_of(error, committing=True)) from error
        g.idempotency_key = scoped_key(current_user_id(), key)
        try:
            response = current_app.make_response(view(*args, **kwargs))
            if not conn.in_transaction:  # the view ran no statement
                begin_keyed_write()
            record_answer(response)
        except Replay as replay:
            rollback(conn)
            return replay.response()
        except driver_error as error:
            rollback(conn)
            raise failed(error, outcome_of(error, committing=False)) from error
        except BaseException:
            rollback(conn)
            raise
        finally:
            del g.idempotency_key
        try:
            conn.commit()
        except driver_error as error:
            rollback(conn)  # SQLITE_BUSY leaves the transaction open
            raise failed(error, outcome_of(error, committing=True)) from error
        return response

    return write


def rollback(conn: Connection) -> None:
    if conn.in_transaction:  # the database may have rolled it back already
        with suppress(database().Error):
            conn.rollback()


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


def wrote_before(error: Exception) -> OutcomeUnknown:
    """A statement failed after an earlier one of the same request committed."""
    return OutcomeUnknown(
        f"the write may have been committed before a later statement failed ({error}). "
        f"Retry with the same {HEADER} header to apply it at most once"
    )


def failed(error: Exception, answer: HTTPException) -> HTTPException:
    log.warning("write failed (%s): %s", answer.outcome, error)
    return answer


def init_app(app: Flask) -> None:
    database = database_from_settings(app)
    database.prepare()  # the schema; PostgreSQL's later if the server is not up yet
    app.extensions["fixed_db"] = database
    app.teardown_appcontext(release_db)
    unavailable_when(app, database.unavailable, "the database is busy or unavailable; retry")
