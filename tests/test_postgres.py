"""fixed_db on PostgreSQL, run for real: the embedded server (serve/postgres.py),
the database class (fixed_db/postgres.py) and the READ COMMITTED half-fix.

Every test runs against a real PostgreSQL server: one embedded server for the
session (a fresh database per test), and a server of its own for a test that
kills, restarts or interrupts it. If the embedded server cannot start, the
tests are skipped with the reason, except in CI (CI set), where they fail:
CI must run them. With DATABASE_URL=postgresql://... set, the tests that need
no server of their own run against that server instead.

Races are made certain, not waited for: a barrier lines up the sessions that
create the schema, a test waits until PostgreSQL itself reports a session
waiting for a lock (pg_locks), and a Ctrl-C is sent while the launcher is
held inside start().
"""

import itertools
import os
import pwd
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
import pytest

from examples import half_fix_postgres_read_committed
from fixed_db.postgres import (
    NotConnected,
    PostgresDatabase,
    outcome_of,
)
from plumbing.config import REPO_ROOT
from serve.postgres import ROOT_HOME, SERVER_ACCOUNT, EmbeddedPostgres, running_as_root
from tests.conftest import processes_mentioning

IN_CI = bool(os.environ.get("CI"))
GIVEN_URL = os.environ.get("DATABASE_URL", "")  # read before the tests clear it
GIVEN_URL = GIVEN_URL if GIVEN_URL.startswith(("postgresql://", "postgres://")) else ""


def unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"the embedded PostgreSQL server must start in CI: {reason}")
    pytest.skip(
        f"the embedded PostgreSQL server could not start here ({reason}); "
        "set DATABASE_URL=postgresql://... to run the tests that need no server of their own"
    )


def started(server: EmbeddedPostgres) -> EmbeddedPostgres:
    try:
        return server.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as error:
        unavailable(f"{type(error).__name__}: {error}")


def in_schema(url: str, schema: str) -> str:
    """The URL, with the schema first in the search path (libpq's `options`)."""
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query), ("options", f"-c search_path={schema}")]
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


class Cluster:
    """A server to make fresh schemas on: the session's embedded one, or the
    one DATABASE_URL names. An empty schema stands for an empty database
    here (tables are created in it, in the same catalog), without the cost of
    CREATE DATABASE, which copies and flushes a template each time."""

    names = itertools.count()

    def __init__(self, url: str) -> None:
        self.url = url

    def new_schema(self) -> str:
        name = f"test_{os.getpid()}_{next(self.names)}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("CREATE SCHEMA {}").format(psycopg.sql.Identifier(name)))
        return in_schema(self.url, name)


@pytest.fixture(scope="session")
def template(tmp_path_factory):
    """A stopped cluster, made by initdb once, that the tests' servers copy."""
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "template")
    try:
        server.start().stop()
    except (RuntimeError, OSError, subprocess.SubprocessError) as error:
        server.remove()
        yield error  # the tests that need a server of their own skip, or fail in CI
        return
    yield server
    server.remove()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory, template):
    if isinstance(template, Exception):
        if not GIVEN_URL:
            unavailable(f"{type(template).__name__}: {template}")
        yield Cluster(GIVEN_URL)
        return
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "server", template=template)
    try:
        yield Cluster(started(server).url)
    finally:
        server.remove()


@pytest.fixture
def database_url(cluster) -> str:
    """A new, empty schema for this test, and a URL that uses it."""
    return cluster.new_schema()


@pytest.fixture
def own_server(tmp_path, template):
    """A server of this test's own, which it may kill or restart, copied from
    the template; removed at the end."""
    if isinstance(template, Exception):
        unavailable(f"{type(template).__name__}: {template}")
    servers: list[EmbeddedPostgres] = []

    def make(directory: Path | None = None) -> EmbeddedPostgres:
        directory = directory or tmp_path / "var" / "postgres"
        servers.append(EmbeddedPostgres(directory, template=template))
        return servers[-1]

    yield make
    for server in servers:
        server.remove()


def table_names(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        return {name for (name,) in rows}


def wait_for(condition, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.01)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# The embedded server.


def test_the_server_is_our_child_on_a_private_socket_and_stops_by_pid(own_server):
    server = started(own_server())
    pid = server.process.pid
    status = Path(f"/proc/{pid}/status").read_text()
    assert f"PPid:\t{os.getpid()}\n" in status  # our child, not a detached daemon
    with psycopg.connect(server.url) as conn:
        listen, sync = (
            conn.execute(f"SHOW {name}").fetchone()[0]
            for name in ("listen_addresses", "synchronous_commit")
        )
    assert sync == "on"
    if server.port is None:
        assert listen == ""  # no TCP at all
        assert mode(server.socket_dir) == 0o700
    else:  # the socket's path was too long here: 127.0.0.1, with a password
        assert listen == "127.0.0.1"
        assert mode(server.password_file()) == 0o600
    environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert not [v for v in environment if v.startswith((b"SECRET_KEY=", b"DATABASE_URL="))]
    assert mode(server.directory) == 0o700
    if running_as_root():
        account = pwd.getpwnam(SERVER_ACCOUNT)
        assert f"Uid:\t{account.pw_uid}\t" in status  # PostgreSQL refuses to run as root
        assert server.data_dir.stat().st_uid == account.pw_uid
        assert mode(server.data_dir) == 0o700
        for folder in (ROOT_HOME, server.home):  # passable, not listable, root's
            assert (mode(folder), folder.stat().st_uid) == (0o711, 0)
        assert (server.directory / "data").resolve() == server.data_dir
    server.stop()
    assert server.process.returncode == 0  # a clean fast shutdown
    assert not processes_mentioning(str(server.directory))


HELD_START = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from serve.postgres import EmbeddedPostgres

    class Held(EmbeddedPostgres):
        # Holds start() at one point, so that the Ctrl-C lands there.
        def _spawn(self, command, log=True):
            process = super()._spawn(command, log)
            if sys.argv[2] == "initdb" and "--pgdata" in command:
                print("held", process.pid, flush=True)
                time.sleep(60)
            return process

        def _create_database(self, name):
            if sys.argv[2] == "server":
                print("held", self.process.pid, flush=True)
                time.sleep(60)
            super()._create_database(name)

    Held(Path(sys.argv[1])).start()
    """
)


@pytest.mark.parametrize("during", ["initdb", "server"])
def test_ctrl_c_during_start_up_leaves_nothing_running(own_server, tmp_path, during):
    directory = tmp_path / "var" / "postgres"
    server = own_server(directory)  # removed at the end, whatever is left of it
    if during == "server":  # a cluster already there: the Ctrl-C comes as the server starts
        started(server).stop()
    launcher = subprocess.Popen(
        [sys.executable, "-c", HELD_START, str(directory), during],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = launcher.stdout.readline()
        assert line.startswith("held "), launcher.stderr.read()
        child = int(line.split()[1])
        assert processes_mentioning(str(directory.absolute()))  # initdb or postgres is running
        launcher.send_signal(signal.SIGINT)
        launcher.wait(timeout=20)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert "KeyboardInterrupt" in launcher.stderr.read()
    assert not Path(f"/proc/{child}").exists()
    assert not processes_mentioning(str(directory.absolute()))
    if during == "initdb":
        assert not (server.data_dir / "PG_VERSION").exists()  # never taken for a cluster


# The database class.


def test_workers_booting_at_once_on_an_empty_database_all_create_the_schema(cluster):
    """Eight sessions at a barrier, five empty schemas: without the advisory
    lock most of them fail on the catalog (see fixed_db/postgres.py)."""
    failures = []
    for _ in range(5):
        url = cluster.new_schema()
        workers = [PostgresDatabase(url) for _ in range(8)]
        together = threading.Barrier(len(workers))

        def boot(database: PostgresDatabase, together: threading.Barrier = together) -> None:
            together.wait()
            try:
                database.create_schema()
            except psycopg.Error as error:
                failures.append(error)

        threads = [threading.Thread(target=boot, args=(db,)) for db in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert table_names(url) >= {"counter", "visits", "idempotency"}
    assert failures == []


def test_a_pool_is_made_in_each_process_on_first_use(database_url):
    database = PostgresDatabase(database_url, pool_size=2)
    assert database.pool is None  # nothing at construction, as at import
    conn = database.acquire()
    try:
        assert conn.execute("SELECT value FROM counter WHERE id = ?", (1,)).fetchall() == [(0,)]
        [(value,)] = conn.execute(
            "UPDATE counter SET value = value + 1 WHERE id = 1 RETURNING value"
        ).fetchall()
        assert (value, conn.total_changes) == (1, 1)
        assert conn.execute("UPDATE counter SET value = 0 WHERE id = 1").fetchall() == []
        assert not conn.in_transaction
    finally:
        database.release(conn)
    pool = database.pool
    database.release(database.acquire())
    assert database.pool is pool  # kept in this process
    database.pid = -1  # as a forked child sees it: another process's pool
    database.release(database.acquire())
    assert database.pool is not pool
    pool.close()
    database.close()


def test_the_same_idempotency_key_waits_for_the_first_write_and_others_do_not(database_url):
    database = PostgresDatabase(database_url)
    database.create_schema()
    first, second, other = (database.connect() for _ in range(3))
    try:
        database.begin_write(first, "POST /counter/increment u1 k1")
        database.begin_write(other, "POST /counter/increment u1 k2")  # another key: no wait
        done = threading.Event()

        def same_key() -> None:
            database.begin_write(second, "POST /counter/increment u1 k1")
            done.set()

        thread = threading.Thread(target=same_key)
        thread.start()
        backend = second.conn.info.backend_pid

        def waiting() -> bool:
            with psycopg.connect(database_url) as conn:
                rows = conn.execute(
                    "SELECT 1 FROM pg_locks WHERE pid = %s AND locktype = 'advisory'"
                    " AND NOT granted",
                    (backend,),
                )
                return rows.fetchone() is not None

        wait_for(waiting, "the second request to wait for the key's lock")
        assert not done.is_set()
        first.commit()  # the lock is released at COMMIT
        thread.join(timeout=10)
        assert done.is_set()
        for conn in (second, other):
            conn.rollback()
    finally:
        for conn in (first, second, other):
            conn.close()


def failure_of(database: PostgresDatabase, sql: str, in_transaction: bool = False):
    conn = database.connect()
    try:
        if in_transaction:
            conn.begin()
        conn.execute(sql)
    except psycopg.Error as error:
        return error
    finally:
        conn.close()
    raise AssertionError(f"{sql!r} did not fail")


def test_what_a_failed_write_answers(database_url):
    database = PostgresDatabase(database_url, statement_timeout_ms=200)
    database.create_schema()
    # An error the server reports: the statement was undone.
    duplicate = failure_of(database, "INSERT INTO counter (id, value) VALUES (1, 5)")
    assert outcome_of(duplicate, committing=True).outcome == "not applied"
    # The server's disk_full (SQLSTATE 53100), raised for real by the server
    # (a full disk itself is not made here): 507.
    full = failure_of(
        database, "DO $$ BEGIN RAISE EXCEPTION 'no space' USING ERRCODE = 'disk_full'; END $$"
    )
    answer = outcome_of(full, committing=True)
    assert (answer.code, answer.outcome) == (507, "not applied")
    # A write cancelled by statement_timeout while it waits for the row's lock:
    # unknown in autocommit (a cancel can come after the commit), not applied
    # inside a transaction that never reached COMMIT.
    holder = database.connect()
    holder.begin()
    holder.execute("UPDATE counter SET value = value + 1 WHERE id = 1")
    try:
        update = "UPDATE counter SET value = value + 1 WHERE id = 1"
        cancelled = failure_of(database, update)
        assert cancelled.sqlstate == "57014"
        assert outcome_of(cancelled, committing=True).outcome == "unknown"
        cancelled = failure_of(database, update, in_transaction=True)
        assert outcome_of(cancelled, committing=False).outcome == "not applied"
    finally:
        holder.rollback()
        holder.close()
    # The session terminated under a statement (57P01), as on a fast shutdown.
    victim = database.connect()
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (victim.conn.info.backend_pid,))
    with pytest.raises(psycopg.OperationalError) as terminated:
        victim.execute("UPDATE counter SET value = value + 1 WHERE id = 1")
    assert outcome_of(terminated.value, committing=True).outcome == "unknown"
    assert outcome_of(terminated.value, committing=False).outcome == "not applied"
    victim.close()
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT value FROM counter").fetchone() == (0,)  # none applied


def test_a_killed_server_is_not_applied_at_once_then_back_with_every_commit(own_server):
    server = started(own_server())
    database = PostgresDatabase(server.url, pool_size=2)
    conn = database.acquire()
    for n in range(100):  # each acknowledged after its commit reached the WAL on disk
        conn.execute("INSERT INTO visits (user_id, article) VALUES (?, ?)", ("u1", str(n)))
    database.release(conn)
    server.kill()  # SIGKILL, the postmaster and its backends at once, as a crash
    assert not processes_mentioning(str(server.directory))
    began = time.monotonic()
    with pytest.raises(NotConnected) as refused:
        database.acquire()  # its pooled connections are dead: none is lent
    assert time.monotonic() - began < 3 * database.pool_timeout  # a 503 soon, not a hang
    assert outcome_of(refused.value, committing=True).outcome == "not applied"
    server.start()  # crash recovery from the WAL
    deadline = time.monotonic() + 15
    while True:  # the same pool, no restart of the app: it reconnects by itself
        try:
            conn = database.acquire()
            break
        except NotConnected:
            assert time.monotonic() < deadline, "the pool did not reconnect"
    try:
        assert conn.execute("SELECT count(*) FROM visits").fetchall() == [(100,)]
    finally:
        database.release(conn)
        database.close()


def test_a_url_that_is_not_postgresql_is_refused():
    with pytest.raises(ValueError, match="DATABASE_URL"):
        PostgresDatabase("postgresql://host/db?no_such_option=1")


# The half-fix.


def test_read_committed_loses_updates_silently_and_four_ways_do_not():
    try:
        finding = half_fix_postgres_read_committed.prove()
    except (RuntimeError, OSError, subprocess.SubprocessError) as error:
        unavailable(f"{type(error).__name__}: {error}")
    threads = half_fix_postgres_read_committed.THREADS
    lost = finding.read_committed
    assert lost.outcome.most_inside == threads  # every read before any write
    assert lost.outcome.returned == [1] * threads
    assert lost.final == 1
    assert lost.outcome.errors == []  # lost without a trace: every transaction committed
    exact = list(range(1, threads + 1))
    assert finding.for_update.outcome.most_inside == 1  # the others waited at their SELECT
    for result in finding.correct:
        assert result.outcome.returned == exact
        assert result.final == threads
        assert result.outcome.errors == []
    # The first writer wins; every other one fails at least once and runs again.
    assert finding.repeatable_read.retries >= threads - 1
    assert finding.serializable.retries >= threads - 1
    assert finding.holds
