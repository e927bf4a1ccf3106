"""fixed_db's database, whichever it is: the backend's choice, the request's
connection, and the write routes' idempotency keys.

Routes call store.query(sql, params) with "?" placeholders and get all rows
back; each statement is its own transaction (autocommit), so `UPDATE ...
RETURNING` reads and writes with nothing in between. DATABASE_URL chooses
the backend: a SQLite file (sqlite.py, the default under var/) or a
PostgreSQL server (postgres.py), siblings behind the Database protocol
below. A connection is borrowed per request, kept on g, and given back at
teardown. A write under @idempotent (plumbing/idempotency.py) with a key is
one transaction instead: KeyedTransactions looks the key up at the view's
first statement, records the answer in the `idempotency` table and commits
both together. A failed write answers what became of it (the backend's
outcome_of()). README.md explains each choice.
"""

import logging
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any, Protocol

from flask import Flask, Response, current_app, g
from werkzeug.exceptions import HTTPException

from fixed_db.sqlite import BUSY_TIMEOUT_MS, database_from_url
from plumbing import setting, unavailable_when
from plumbing.config import FIXED_DB_BACKENDS, FIXED_DB_SQLITE_FILE, default, url_backend
from plumbing.idempotency import (
    HEADER,
    TTL_SECONDS,
    KeyedWrite,
    NotApplied,
    OutcomeUnknown,
    replayed,
)
from plumbing.users import known_user_id

EXPIRE_EVERY = 100  # keyed writes per worker process between two purges of old keys
BACKENDS = FIXED_DB_BACKENDS  # FIXED_DB_BACKEND
log = logging.getLogger(__name__)


class Connection(Protocol):
    """What store.py uses of a connection: sqlite3.Connection's few members."""

    in_transaction: bool
    total_changes: int

    def execute(self, sql: str, params: Any = ()) -> Any: ...  # .fetchall(): the rows
    def commit(self) -> None: ...
    def rollback(self) -> None: ...


class Database(Protocol):
    """A backend: sqlite.SQLiteDatabase or postgres.PostgresDatabase."""

    Error: type[Exception]  # what its driver raises
    unavailable: tuple[type[Exception], ...]  # the errors that mean it is down: 503
    keyed_writes: Any  # itertools.count(), for the purge of old keys

    def prepare(self) -> None:
        """At the app's start: the schema, if the database answers."""

    def acquire(self) -> Connection:
        """A connection for this request; raises Error if there is none."""

    def release(self, conn: Connection) -> None: ...

    def begin_write(self, conn: Connection, scoped_key: str) -> None:
        """Open a keyed write's transaction, after any other with the same key."""

    def outcome_of(self, error: Exception, committing: bool) -> HTTPException:
        """NotApplied, StoreFull or OutcomeUnknown, for a write that failed."""


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
    if "keyed_write" in g and not get_db().in_transaction:
        begin_keyed_write()
    return get_db().execute(sql, params).fetchall()


# Idempotent writes: the Idempotency-Key header (plumbing/idempotency.py).


class Replay(Exception):
    """The key was already used: what was recorded with it (status, body, fingerprint)."""


def begin_keyed_write() -> None:
    """Open the write's transaction, then look the request's key up.

    Raises Replay if a write with this key committed less than TTL_SECONDS
    ago, and what begin_write() raises."""
    conn = get_db()
    database().begin_write(conn, g.keyed_write.scope)
    rows = conn.execute(
        "SELECT status, body, fingerprint FROM idempotency WHERE scoped_key = ? AND created >= ?",
        (g.keyed_write.scope, int(time.time()) - TTL_SECONDS),
    ).fetchall()
    if rows:
        raise Replay(*rows[0])


def record_answer(response: Response) -> None:
    """Store the key with the answer, in the write's transaction; now and then
    delete the keys past their time (the index on created finds them)."""
    now = int(time.time())
    get_db().execute(
        "INSERT INTO idempotency (scoped_key, status, body, created, fingerprint)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (scoped_key) DO UPDATE"  # an expired key used again
        " SET status = excluded.status, body = excluded.body, created = excluded.created,"
        " fingerprint = excluded.fingerprint",
        (
            g.keyed_write.scope,
            response.status_code,
            response.get_data(as_text=True),
            now,
            g.keyed_write.fingerprint,
        ),
    )
    if next(database().keyed_writes) % EXPIRE_EVERY == 0:
        get_db().execute("DELETE FROM idempotency WHERE created < ?", (now - TTL_SECONDS,))


class KeyedTransactions:
    """fixed_db's KeyStore (plumbing.idempotency): the key's look-up, the
    view's statements and the key's record are one transaction, opened by the
    view's first statement (query()), so validation and the view's other
    work run before the write lock is taken. A request that fails records
    nothing, so a retry with the same key runs the write."""

    @staticmethod
    def identity() -> str | None:
        return known_user_id()

    @staticmethod
    def write_once(view: Callable[[], Response], keyed: KeyedWrite | None) -> Response:
        """Raises NotApplied (503), StoreFull (507) or OutcomeUnknown (503)
        when the database fails (outcome_of())."""
        conn = get_db()
        outcome_of, driver_error = database().outcome_of, database().Error
        if keyed is None:  # each statement its own transaction
            changes = conn.total_changes
            try:
                return view()
            except driver_error as error:
                if conn.total_changes != changes:  # an earlier statement wrote, and committed
                    raise failed(error, wrote_before(error)) from error
                raise failed(error, outcome_of(error, committing=True)) from error
        g.keyed_write = keyed
        try:
            response = view()
            if not conn.in_transaction:  # the view ran no statement
                begin_keyed_write()
            record_answer(response)
        except Replay as replay:
            rollback(conn)
            return replayed(*replay.args)
        except driver_error as error:
            rollback(conn)
            raise failed(error, outcome_of(error, committing=False)) from error
        except BaseException:
            rollback(conn)
            raise
        finally:
            del g.keyed_write
        try:
            conn.commit()
        except driver_error as error:
            rollback(conn)  # SQLITE_BUSY leaves the transaction open
            raise failed(error, outcome_of(error, committing=True)) from error
        return response


def rollback(conn: Connection) -> None:
    if conn.in_transaction:  # the database may have rolled it back already
        with suppress(database().Error):
            conn.rollback()


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
    app.extensions["idempotency"] = KeyedTransactions()
    app.teardown_appcontext(release_db)
    unavailable_when(app, database.unavailable, "the database is busy or unavailable; retry")
