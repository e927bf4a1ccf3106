"""fixed_db on PostgreSQL: a pool per worker process, atomic statements.

PostgresDatabase is the sibling of sqlite.SQLiteDatabase behind
store.Database: it lends a connection per request (PostgresConnection,
whose execute() takes the routes' "?" SQL, rewritten once to psycopg's
"%s"), creates the schema under an advisory lock (workers boot together),
and opens a keyed write's transaction behind an advisory lock on the key,
since PostgreSQL has no BEGIN IMMEDIATE. The pool is made in each worker
after gunicorn forks, never at import. A dead, restarting or frozen server
is a 503 within about a second, never a hang: a pool timeout, a statement
timeout, a deadline of the client's own on every wait (DeadlineConnection),
and a circuit breaker per worker (plumbing/breaker.py). outcome_of() says
what became of a failed write; nothing is ever sent twice. README.md
("PostgreSQL") says why each setting is what it is.
"""

import functools
import itertools
import logging
import os
import select
import threading
from collections.abc import Sequence
from contextlib import closing
from typing import Any

import psycopg
import pybreaker
from psycopg import errors
from psycopg.abc import PQGen
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool
from werkzeug.exceptions import HTTPException

from plumbing.breaker import circuit_breaker, counted, guarded, refusing
from plumbing.idempotency import NotApplied, OutcomeUnknown, StoreFull

POOL_SIZE = 4  # gunicorn's threads per worker by default: one connection each
POOL_TIMEOUT_SECONDS = 1.0
CONNECT_TIMEOUT_SECONDS = 2
STATEMENT_TIMEOUT_MS = 500
DEADLINE_SECONDS = 1.0
RECONNECT_TIMEOUT_SECONDS = 1.0
BREAKER_FAIL_MAX = 3
BREAKER_RESET_SECONDS = 0.5
WAIT_INTERVAL = 0.1  # psycopg's own default (connection.py): how often a wait lets Ctrl-C in
SCHEMA_LOCK = (0x66697865, 0x645F6462)  # "fixe", "d_db": two int4 keys, apart from the key locks

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS counter (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        value BIGINT NOT NULL
    )""",
    "INSERT INTO counter (id, value) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
    """CREATE TABLE IF NOT EXISTS visits (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        user_id TEXT NOT NULL,
        article TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS visits_by_user ON visits (user_id, id)",
    """CREATE TABLE IF NOT EXISTS idempotency (
        scoped_key TEXT PRIMARY KEY,
        status INTEGER NOT NULL,
        body TEXT NOT NULL,
        created BIGINT NOT NULL,
        fingerprint TEXT NOT NULL DEFAULT ''
    )""",
    "CREATE INDEX IF NOT EXISTS idempotency_by_age ON idempotency (created)",
    # A database made before keys had a fingerprint.
    "ALTER TABLE idempotency ADD COLUMN IF NOT EXISTS fingerprint TEXT NOT NULL DEFAULT ''",
)

log = logging.getLogger(__name__)

# The session ended under the statement: a cancel, a termination or a crash.
ENDED_UNDER_IT = frozenset({"57014", "57P01", "57P02", "57P03", "57P04", "57P05"})
WRITES = ("INSERT", "UPDATE", "DELETE", "MERGE")


@functools.lru_cache(maxsize=256)
def to_pyformat(sql: str) -> str:
    """The routes' SQL ("?" placeholders, SQLite's and DB-API's qmark style)
    in psycopg's style: each "?" outside a quoted string or identifier becomes
    "%s", and each "%" is doubled, since psycopg reads "%" as a placeholder.

    >>> to_pyformat("SELECT article FROM visits WHERE user_id = ? AND article LIKE '?%'")
    "SELECT article FROM visits WHERE user_id = %s AND article LIKE '?%%'"
    """
    out, quote = [], None
    for char in sql:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "?":
            char = "%s"
        out.append("%%" if char == "%" else char)
    return "".join(out)


class DeadlineExceeded(psycopg.OperationalError):
    """The server did not answer within the deadline, so the connection was
    closed with the statement in flight: it may have run, or may yet run."""


class DeadlineConnection(psycopg.Connection):
    """A psycopg connection whose every wait for the server ends at a deadline.

    psycopg (3.3) runs each statement as one wait() on its socket, which can
    take a timeout but is given none by execute(), commit() or the pool's
    rollback. Here a wait without one gets deadline_seconds; past it the
    connection is closed (its statement in flight, its state unknown, so it is
    never used again) and DeadlineExceeded is raised. It is not cancelled
    first: a cancel request is another connection to the same server, which
    a frozen server cannot answer either. A wait given its own timeout keeps
    it. Connecting is not a wait() (libpq's connect_timeout bounds it).

    errors._WaitTimeout is private to psycopg: tests/test_fixed_db_postgres.py fails if it goes."""

    deadline_seconds = DEADLINE_SECONDS

    def wait(self, gen: PQGen, interval: float = WAIT_INTERVAL, timeout: float | None = None):
        seconds = self.deadline_seconds if timeout is None else timeout
        try:
            return super().wait(gen, interval, seconds)
        except errors._WaitTimeout:
            if timeout is not None:
                raise  # the caller's own timeout, for it to handle
            self.pgconn.finish()  # what psycopg does to a connection it cannot cancel
            raise DeadlineExceeded(
                f"PostgreSQL did not answer within {seconds:g} s; the connection was closed"
            ) from None


class NotSent(psycopg.OperationalError):
    """Nothing was sent: the circuit breaker refused the statement (or, as
    NotConnected, no connection was lent)."""


class Result(list):
    """What execute() returns: every row, already fetched; fetchall() gives
    them as sqlite3's cursor does (none for a statement that returns none)."""

    def fetchall(self) -> list[tuple]:
        return list(self)


class PostgresConnection:
    """One pooled connection, lent to one request: the part of
    sqlite3.Connection that store.py uses. Each statement goes through the
    worker's circuit breaker, if it is given one."""

    def __init__(
        self, conn: psycopg.Connection, breaker: pybreaker.CircuitBreaker | None = None
    ) -> None:
        self.conn = conn
        self.breaker = breaker
        self.total_changes = 0  # rows written by this connection, as sqlite3 counts them

    def sent(self, sql: str, params: tuple | None = None) -> psycopg.Cursor:
        """The statement, sent and answered. Raises NotSent at once while the
        breaker is open, and DeadlineExceeded if the server does not answer."""
        if self.breaker is None:
            return self.conn.execute(sql, params)
        return guarded(
            self.breaker,
            lambda: self.conn.execute(sql, params),
            refused=lambda: NotSent("PostgreSQL has not been answering (circuit breaker open)"),
        )

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Result:
        cursor = self.sent(to_pyformat(sql), tuple(params))  # "%%" read as "%"
        rows = cursor.fetchall() if cursor.description is not None else []
        if (cursor.statusmessage or "").startswith(WRITES):
            self.total_changes += max(cursor.rowcount, 0)
        return Result(rows)

    @property
    def in_transaction(self) -> bool:
        status = self.conn.info.transaction_status
        return status in (TransactionStatus.INTRANS, TransactionStatus.INERROR)

    def begin(self) -> None:
        self.sent("BEGIN")

    def commit(self) -> None:
        self.sent("COMMIT")

    def rollback(self) -> None:
        self.sent("ROLLBACK")

    def close(self) -> None:
        self.conn.close()


class NotConnected(NotSent):
    """acquire() found no connection to lend, or the breaker was open: nothing
    of the request was sent."""


def unanswered(error: BaseException) -> bool:
    """What the breaker counts: the server did not answer (a deadline, a lost
    connection, none to be had). An error it reports (it has a SQLSTATE)
    shows it is up."""
    return isinstance(error, psycopg.OperationalError) and getattr(error, "sqlstate", None) is None


def fit_to_send(conn: psycopg.Connection) -> bool:
    """Open, idle, and nothing to read: between statements the server sends
    nothing, so a readable socket was closed by it or holds something unasked."""
    if conn.closed or conn.broken or conn.info.transaction_status != TransactionStatus.IDLE:
        return False
    readable, _, _ = select.select([conn.pgconn.socket], [], [], 0)
    return not readable


class PostgresDatabase:
    """A PostgreSQL database, with a connection pool for this worker process."""

    Error = psycopg.Error  # what its driver raises
    unavailable = (psycopg.OperationalError,)  # PoolTimeout is one too

    def __init__(
        self,
        url: str,
        pool_size: int = POOL_SIZE,
        pool_timeout: float = POOL_TIMEOUT_SECONDS,
        statement_timeout_ms: int = STATEMENT_TIMEOUT_MS,
        deadline_seconds: float = DEADLINE_SECONDS,
    ) -> None:
        try:
            given = psycopg.conninfo.conninfo_to_dict(url)
        except psycopg.ProgrammingError as error:
            raise ValueError(f"DATABASE_URL is not a PostgreSQL URL: {error}") from None
        self.url = url
        self.pool_size = pool_size
        self.pool_timeout = pool_timeout
        self.statement_timeout_ms = statement_timeout_ms
        self.deadline_seconds = deadline_seconds
        defaults = {"connect_timeout": CONNECT_TIMEOUT_SECONDS, "application_name": "fixed_db"}
        self.connect_kwargs = {k: v for k, v in defaults.items() if k not in given}  # URL wins
        self.keyed_writes = itertools.count()  # next() is atomic under the GIL
        self.lock = threading.Lock()
        self.pid: int | None = None
        self.pool: ConnectionPool | None = None
        self.breaker: pybreaker.CircuitBreaker | None = None
        self.schema_ready = False

    def configure(self, conn: DeadlineConnection) -> None:
        conn.deadline_seconds = self.deadline_seconds
        conn.autocommit = True  # one statement, one transaction, unless BEGIN says otherwise
        conn.execute(f"SET statement_timeout = {int(self.statement_timeout_ms)}")

    def connect(self) -> PostgresConnection:
        """A connection of its own, outside the pool and the breaker (schema,
        tests, tools), with the same deadline."""
        conn = DeadlineConnection.connect(self.url, **self.connect_kwargs)
        try:
            self.configure(conn)
        except BaseException:
            conn.close()
            raise
        return PostgresConnection(conn)

    def this_process(self) -> ConnectionPool:
        """This worker process's pool, made on its first use here."""
        if self.pid != os.getpid():
            with self.lock:
                if self.pid != os.getpid():
                    self.pool = ConnectionPool(
                        self.url,
                        connection_class=DeadlineConnection,
                        kwargs=self.connect_kwargs,
                        configure=self.configure,
                        min_size=self.pool_size,
                        max_size=self.pool_size,
                        timeout=self.pool_timeout,
                        reconnect_timeout=RECONNECT_TIMEOUT_SECONDS,
                        name=f"fixed_db-{os.getpid()}",
                        open=False,
                    )
                    self.pool.open(wait=False)  # connects in the background
                    self.breaker = circuit_breaker(
                        "PostgreSQL", BREAKER_FAIL_MAX, BREAKER_RESET_SECONDS, counts=unanswered
                    )
                    self.pid = os.getpid()
        return self.pool

    def acquire(self) -> PostgresConnection:
        """A connection fit to send on, from this process's pool, the schema
        created first if this process has not yet.

        Raises NotConnected (a psycopg.OperationalError), nothing of the
        request sent: at once while the breaker is open (else each request
        would wait out the pool timeout on a frozen server), and when none is
        ready within the pool timeout or the schema cannot be created."""
        pool = self.this_process()
        if refusing(self.breaker):
            raise NotConnected("PostgreSQL has not been answering (circuit breaker open)")
        try:
            while True:
                conn = pool.getconn()
                if fit_to_send(conn):
                    break
                conn.close()  # closed, the pool discards it and opens another
                pool.putconn(conn)
        except psycopg.Error as error:  # PoolTimeout
            raise self.not_connected(f"no connection to PostgreSQL: {error}", error) from error
        try:
            if not self.schema_ready:
                self.create_schema_on(conn)
        except psycopg.Error as error:
            pool.putconn(conn)
            raise self.not_connected(f"could not create the schema: {error}", error) from error
        except BaseException:
            pool.putconn(conn)
            raise
        return PostgresConnection(conn, self.breaker)

    def not_connected(self, why: str, error: psycopg.Error) -> NotConnected:
        """NotConnected, counted by the breaker if the server did not answer
        (a pool timeout, a deadline), not if it refused (a bad password)."""
        failure = NotConnected(why)
        if unanswered(error):
            counted(self.breaker, failure)
        return failure

    def release(self, conn: PostgresConnection) -> None:
        """Back to the pool, which replaces a connection that was closed or
        lost. One still in a transaction (its ROLLBACK failed or was refused)
        is closed first, which ends the transaction on the server: the
        pool's ROLLBACK would wait on a server that does not answer."""
        if conn.in_transaction:
            conn.close()
        self.pool.putconn(conn.conn)

    def close(self) -> None:
        """Close this process's pool (a test's app, at its end)."""
        if self.pool is not None and self.pid == os.getpid():
            self.pool.close()
        self.pid = self.pool = None

    def create_schema(self) -> None:
        """Create the tables if they are missing, on a connection of its own."""
        with closing(self.connect()) as conn:
            self.create_schema_on(conn.conn)

    def prepare(self) -> None:
        """At the app's start (in each gunicorn worker, after the fork): create
        the schema now if the server answers, so that the first requests find
        it; if it does not, the first request that gets a connection will."""
        try:
            self.create_schema()
        except psycopg.Error as error:
            log.warning("PostgreSQL is not reachable at start-up (%s); the schema will "
                        "be created by the first request that needs it", error)  # fmt: skip

    def create_schema_on(self, conn: psycopg.Connection) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", SCHEMA_LOCK)
            for statement in SCHEMA:
                conn.execute(statement)
        self.schema_ready = True

    # Writes with an Idempotency-Key.

    def begin_write(self, conn: PostgresConnection, scoped_key: str) -> None:
        """BEGIN, then wait for any other request with the same key to end."""
        conn.begin()
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))", (scoped_key,))

    @staticmethod
    def outcome_of(error: psycopg.Error, committing: bool) -> HTTPException:
        return outcome_of(error, committing)


def outcome_of(error: psycopg.Error, committing: bool) -> HTTPException:
    """What became of a write that failed with `error`: NotApplied (503),
    StoreFull (507) or OutcomeUnknown (503). committing: the failed statement
    was a COMMIT, or an autocommit statement, which commits itself.

    A transaction is all or nothing, rolled back if its connection ends
    before it commits (www.postgresql.org/docs/current/tutorial-transactions.html),
    and durable once its commit record is flushed to the WAL, after the client
    sent COMMIT and before the server answers (.../wal-intro.html). So a
    failure before COMMIT applied nothing; a lost connection, a cancel or a
    termination during a commit may have come after the flush; an error the
    server reports for an autocommit statement undid it."""
    sqlstate = getattr(error, "sqlstate", None)
    if isinstance(error, NotSent):  # NotConnected too
        return NotApplied(f"nothing was sent to PostgreSQL ({error}): retry")
    if isinstance(error, errors.DiskFull):
        return StoreFull()
    if not committing:
        return NotApplied()  # its transaction never committed
    if sqlstate is not None and sqlstate not in ENDED_UNDER_IT:
        return NotApplied()  # the server reported an error, and undid the statement
    return OutcomeUnknown()
