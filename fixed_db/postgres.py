"""fixed_db on PostgreSQL: a pool per worker process, atomic statements.

`DATABASE_URL=postgresql://...` points fixed_db at any PostgreSQL server (11
or later); serve/postgres.py runs an embedded one when none is given. The
routes do not change: PostgresDatabase offers store.py what SQLiteDatabase
does (acquire() a connection for a request, release() it, create_schema()),
and a connection's execute(sql, params).fetchall() takes the same SQL with
"?" placeholders, rewritten once to psycopg's "%s" (to_pyformat()). Each
statement outside an explicit transaction is its own transaction
(autocommit), so `UPDATE counter SET value = value + 1 ... RETURNING value`
reads and writes under the row's lock with nothing in between, as on SQLite.

The pool (psycopg_pool.ConnectionPool) is made by each worker process on
first use, after gunicorn forks, never at import: a pool's sockets and
threads do not survive a fork, so the owning PID is checked on every
acquire(), as fixed_cache/store.py does. It holds POOL_SIZE connections,
one per gunicorn thread, so a request never waits for another's; the server
must accept workers x threads x instances of them (max_connections, 100 by
default, less 3 reserved for superusers).

Schema: created by each worker process as it starts (prepare(), on a
connection of its own, not the pool's), or, if the server does not answer
then, by its first request that gets a connection; either way idempotently.
`CREATE TABLE IF NOT EXISTS` alone is not safe when several workers boot at
once on an empty database: two sessions can both find the table missing and
both insert it into the catalog, and the second fails (seen with 8 sessions
at a barrier on fresh databases, PostgreSQL 18.6, not kept) with
`duplicate key value violates unique constraint
"pg_type_typname_nsp_index"`, `type "counter" already exists` or `relation
"counter" already exists`. So the schema is created in one transaction that
first takes a transaction-scoped advisory lock, pg_advisory_xact_lock
(www.postgresql.org/docs/current/explicit-locking.html#ADVISORY-LOCKS): the
others wait, then find every table there. The lock is released at COMMIT.

Idempotency keys: the same `idempotency` table as on SQLite, written in the
write's own transaction. SQLite serialises keyed writes with BEGIN
IMMEDIATE, its one write lock; PostgreSQL has row locks, so two requests
with the same key would both find it missing and both apply the write.
begin_write() therefore takes an advisory lock on the key's 64-bit hash
(hashtextextended) after BEGIN: a request with the same key waits until the
first commits, then finds its answer. Other keys do not wait (a hash
collision only makes two keys wait for each other).

Timeouts, so that a dead, restarting or frozen server is a 503 within about
a second, and a worker never hangs on it:
- POOL_TIMEOUT_SECONDS (1 s): the longest acquire() waits for a connection.
  While the server is down the pool keeps reconnecting in the background,
  and requests fail with NotApplied (nothing was sent); once it is back, they
  get new connections without a restart of the app.
- RECONNECT_TIMEOUT_SECONDS (1 s): how long the pool retries one connection
  with its back-off (1, 2, 4 s...) before it gives up and lets the next
  request start a new attempt at once. Measured with a server killed for
  1.5 s under requests: connections again 0.02 s after it was back, against
  up to 0.5 s with 5 s (the next step of the back-off).
- CONNECT_TIMEOUT_SECONDS (2 s, libpq's minimum): one connection attempt.
- STATEMENT_TIMEOUT_MS (0.5 s): the server cancels a statement that runs, or
  waits for a lock, longer than that (57014;
  www.postgresql.org/docs/current/runtime-config-client.html#GUC-STATEMENT-TIMEOUT).
  The long legitimate waits are for the counter row's lock behind other
  increments, and for a key's advisory lock behind a write with the same
  key. The slowest statements, commit included, in the server's log
  (log_min_duration_statement) under the hammer, the bench and 64 threads
  sending keyed increments (the row's lock is held across a keyed write's
  INSERT and COMMIT) took tens of milliseconds at most (seen by hand, not
  kept); 0.5 s leaves a wide margin.
  It was 5 s, as SQLite's busy timeout, but it must stay under the deadline:
- DEADLINE_SECONDS (1 s): the longest the client waits for any answer
  (DeadlineConnection). A frozen server (every process stopped: a paused
  VM, a stalled disk, a network partition) never answers, cannot run its
  statement_timeout, and its kernel still accepts what is sent, so without
  a deadline of the client's own a statement waits forever, and soon every
  thread with it. Twice the statement timeout, so that a server that is
  only slow answers first, with its own cancel; the other 0.5 s is for what
  statement_timeout does not count (the commit's flush, the round trip, a
  busy client). Past it the connection is closed, its statement in flight:
  never used again, nothing re-sent.
- A circuit breaker per worker process (plumbing/breaker.py, as fixed_cache
  has): BREAKER_FAIL_MAX (3) unanswered statements in a row (past the
  deadline, a connection lost, none within the pool timeout) open it, and
  requests fail at once with NotApplied, nothing sent, instead of each
  waiting for the deadline; after BREAKER_RESET_SECONDS (0.5 s) one trial
  statement goes through, and a server that answers it closes the breaker.
  acquire() asks it before the pool: a frozen server's connections are
  closed at their deadline and no new one can open, so each request would
  otherwise wait out the pool timeout. A stall makes the 4 threads of a
  worker fail within one deadline, so 3 opens it after that first wave.
  A dead server's pool timeouts open it too: its requests then fail at once,
  and once it is back a worker answers again up to 0.5 s after its pool can
  connect (the next trial).
  `python -m loadtests.stall fixed_db` times it (kept run: docs/faults.md);
  before the deadline, no request was answered until SIGCONT.
- A pooled connection is checked before it is lent: between statements
  nothing is due on it, so a readable socket means the server closed it (a
  restart, or a fast shutdown's "terminating connection" notice). It is
  discarded before anything is sent on it: a select() that does not wait,
  not a round trip (the pool's own check would send a query every time).

What a failed write answers (outcome_of()), from PostgreSQL's documentation:
a transaction is all or nothing, and a transaction that has not committed
is rolled back when its connection ends
(www.postgresql.org/docs/current/tutorial-transactions.html); it is durable
once its commit record is flushed to the WAL
(www.postgresql.org/docs/current/wal-intro.html), which happens after the
client sent COMMIT and before the server answers it. So:
- no connection (refused, pool timeout), or the breaker is open: nothing was
  sent. NotApplied;
- disk_full (SQLSTATE 53100): the statement failed and was undone. StoreFull;
- an error the server reports for a statement before COMMIT, or for an
  autocommit statement (a constraint, a serialization failure or deadlock,
  class 40): that statement's transaction was rolled back. NotApplied;
- the connection lost, a statement_timeout cancel (57014) or the server
  terminating the session (57P01-57P05), during a COMMIT or an autocommit
  write: the commit record may have been flushed before the answer was lost
  (a cancel or a termination can arrive after the flush). OutcomeUnknown;
  the same before COMMIT: the transaction can no longer commit. NotApplied.
- no answer within the deadline: the same as a lost connection. During a
  COMMIT or an autocommit write, OutcomeUnknown: the statement was sent,
  and a frozen server runs it once resumed (tests/test_postgres.py shows it
  does); before COMMIT, NotApplied: the connection is closed, so the
  transaction never commits. A read is a 503 either way.
Nothing is ever sent twice: psycopg does not retry, and neither does this.
"""

import functools
import itertools
import logging
import os
import select
import threading
from collections.abc import Sequence
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
        created BIGINT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS idempotency_by_age ON idempotency (created)",
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
    it (notifies(timeout=None), unused here, gets the deadline). Connecting
    is not a wait() (libpq's connect_timeout bounds it), nor is psycopg's
    handling of Ctrl-C, which cancels the query and waits up to 5 s by
    itself, unchanged. Pipeline mode (unused here): a deadline inside it
    closes the connection too, and leaving the pipeline then fails on a
    closed connection, the first error kept.

    errors._WaitTimeout, which wait() raises, is private to psycopg (checked
    against 3.3.9; tests/test_postgres.py fails if it goes)."""

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


class Result:
    """What execute() returns: every row, already fetched, as sqlite3's
    cursor.fetchall() gives them; no rows for a statement that returns none."""

    def __init__(self, rows: list[tuple]) -> None:
        self.rows = rows

    def fetchall(self) -> list[tuple]:
        return self.rows


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
        return self.conn.info.transaction_status in (
            TransactionStatus.INTRANS,
            TransactionStatus.INERROR,
        )

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
        # What the URL does not set; what it sets wins.
        self.connect_kwargs = {
            name: value
            for name, value in {
                "connect_timeout": CONNECT_TIMEOUT_SECONDS,
                "application_name": "fixed_db",
            }.items()
            if name not in given
        }
        self.keyed_writes = itertools.count()  # next() is atomic under the GIL
        self.lock = threading.Lock()
        self.pid: int | None = None
        self.pool: ConnectionPool | None = None
        self.breaker: pybreaker.CircuitBreaker | None = None
        self.schema_ready = False

    # Connections.

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

        Raises NotConnected (a psycopg.OperationalError) at once while the
        breaker is open (a frozen server's connections are closed at their
        deadline, and the pool cannot open others: each request would wait
        out the pool timeout), and when none is ready within the pool timeout
        or the schema cannot be created: nothing of the request was sent."""
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

    # Schema.

    def create_schema(self) -> None:
        """Create the tables if they are missing, on a connection of its own."""
        conn = self.connect()
        try:
            self.create_schema_on(conn.conn)
        finally:
            conn.close()

    def prepare(self) -> None:
        """At the app's start (in each gunicorn worker, after the fork): create
        the schema now if the server answers, so that the first requests find
        it; if it does not, the first request that gets a connection will."""
        try:
            self.create_schema()
        except psycopg.Error as error:
            log.warning(
                "PostgreSQL is not reachable at start-up (%s); the schema will be "
                "created by the first request that needs it",
                error,
            )

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
        """What became of a write that failed with `error` (see the module
        docstring): NotApplied (503), StoreFull (507) or OutcomeUnknown (503).

        committing: the failed statement was a COMMIT, or an autocommit
        statement, which commits itself."""
        return outcome_of(error, committing)


def outcome_of(error: psycopg.Error, committing: bool) -> HTTPException:
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
