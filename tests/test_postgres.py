"""fixed_db on PostgreSQL, run for real: the embedded server (serve/postgres.py),
the database class (fixed_db/postgres.py) and the READ COMMITTED half-fix.

Every test runs against a real PostgreSQL server: one embedded server for the
session (a fresh database per test), and a server of its own for a test that
kills, restarts, freezes or interrupts it. If the embedded server cannot
start, the tests are skipped with the reason, except in CI (CI set), where
they fail: CI must run them. With DATABASE_URL=postgresql://... set, the
tests that need no server of their own run against that server instead.

Races are made certain, not waited for: a barrier lines up the sessions that
create the schema, a test waits until PostgreSQL itself reports a session
waiting for a lock (pg_locks), and a Ctrl-C is sent while the launcher is
held inside start().
"""

import inspect
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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
import pytest
import requests

from examples import half_fix_postgres_read_committed
from fixed_db.postgres import (
    BREAKER_FAIL_MAX,
    BREAKER_RESET_SECONDS,
    DEADLINE_SECONDS,
    POOL_SIZE,
    WAIT_INTERVAL,
    DeadlineExceeded,
    NotConnected,
    PostgresDatabase,
    outcome_of,
)
from loadtests.clients.client import Client
from loadtests.clients.transport import KeepAliveSession
from loadtests.judge.history import NOT_APPLIED, UNKNOWN
from loadtests.runs.hammer import hammer_app
from plumbing.config import REPO_ROOT
from serve.postgres import (
    ROOT_HOME,
    SERVER_ACCOUNT,
    EmbeddedPostgres,
    has_exited,
    running_as_root,
    start_time,
)
from serve.processes import AppServer, free_port
from tests import test_contract
from tests.conftest import launch, make_app, processes_mentioning
from tests.test_scale_out import crossed_instances

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


class Hung(BaseException):
    """Raised by at_most(): a BaseException, so that neither the app nor
    psycopg turns it into an answer."""


@contextmanager
def at_most(seconds: float, what: str) -> Iterator[None]:
    """Fail, rather than hang, if the block takes longer (SIGALRM; the main
    thread only). psycopg's waits wake up every WAIT_INTERVAL to let it in."""

    def expired(_signum, _frame):
        raise Hung(f"{what} took over {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def sessions(url: str) -> set[int]:
    """The backend PIDs of the server's client sessions, but the asker's."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity"
            " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
        return {pid for (pid,) in rows}


def settled(url: str, before: set[int]) -> None:
    """Wait until the sessions open before the freeze have ended, their
    clients having closed them: a resumed backend runs what it was sent
    before it sees that its connection was closed, then exits. (Connection
    attempts made meanwhile are other sessions, which ran nothing.)"""
    wait_for(lambda: not before & sessions(url), "the sessions of closed connections to end")


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


def test_a_start_waits_for_ready_without_a_refused_try_in_the_log(own_server):
    """After a crash the server replays its WAL before it is ready; a start
    that tried to connect meanwhile left one "FATAL: the database system is
    starting up" line per try (25 after one crash, measured)."""
    server = started(own_server())
    server.kill()
    server.start()
    try:
        assert "starting up" not in server.log_path().read_text()
    finally:
        server.stop()


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


FIRST_START = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from serve.postgres import EmbeddedPostgres

    server = EmbeddedPostgres(Path(sys.argv[1]))
    try:
        server.start()
    except RuntimeError as error:
        print("refused:", str(error).replace("\\n", " "), flush=True)
        sys.exit(3)
    print("started", server.process.pid, flush=True)
    sys.stdin.read()  # until the test closes it
    server.stop()
    """
)


def test_two_first_starts_on_a_new_cluster_make_one_server_and_refuse_the_other(
    own_server, tmp_path
):
    """Two launchers at once on a folder with no cluster yet: both used to run
    initdb into the same scratch folder, and one failed on the other's files."""
    directory = tmp_path / "new" / "postgres"
    own_server(directory)  # removed at the end, whatever is left of it
    launchers = [
        subprocess.Popen(
            [sys.executable, "-c", FIRST_START, str(directory)],
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        refused, started = sorted(launcher.stdout.readline() for launcher in launchers)
        assert refused.startswith("refused: ") and "in use by another" in refused, refused
        assert started.startswith("started "), started
    finally:
        for launcher in launchers:
            launcher.stdin.close()
            launcher.wait(timeout=20)
    assert sorted(launcher.returncode for launcher in launchers) == [0, 3]
    assert not processes_mentioning(str(directory.absolute()))


def sysv_segments() -> set[str]:
    """The ids of the System V shared memory segments that exist now."""
    return {line.split()[1] for line in Path("/proc/sysvipc/shm").read_text().splitlines()[1:]}


def test_a_second_server_on_the_same_cluster_is_refused_and_never_mistaken_for_ours(own_server):
    # The first server's socket answers: the second launcher must not take
    # that answer for its own server, which exits at once (lock file taken).
    first = own_server().start()
    second = own_server(first.directory)
    with pytest.raises(
        RuntimeError, match=f"in use by another PostgreSQL server.*{first.process.pid}"
    ):
        second.start()
    assert second.process is None or has_exited(second.process)
    assert first.running_postmaster() == first.process.pid


def test_a_killed_server_leaves_no_shared_memory_once_removed(own_server):
    server = own_server().start()
    maps = Path(f"/proc/{server.process.pid}/maps").read_text()
    assert "/dev/shm/PostgreSQL" not in maps, "dynamic shared memory under /dev/shm"
    server.kill()  # a crash: nothing frees the segment
    segment = (server.data_dir / "postmaster.pid").read_text().split("\n")[6].split()[1]
    assert segment in sysv_segments()
    server.remove()
    assert segment not in sysv_segments()


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
    assert start_time(child) is None
    assert not processes_mentioning(str(directory.absolute()))
    if during == "initdb":
        assert not (server.data_dir / "PG_VERSION").exists()  # never taken for a cluster


def test_a_launcher_killed_with_sigkill_takes_its_server_down(own_server, tmp_path):
    """SIGKILL runs no clean-up; the kernel's parent-death signal (SIGINT,
    PostgreSQL's fast shutdown) stops the server anyway (Linux)."""
    directory = tmp_path / "var" / "postgres"
    started(own_server(directory)).stop()  # a cluster there, copied
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path\n"
            "from serve.postgres import EmbeddedPostgres\n"
            "server = EmbeddedPostgres(Path(sys.argv[1])).start()\n"
            "print(server.process.pid, flush=True); time.sleep(60)",
            str(directory),
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        postmaster = int(launcher.stdout.readline())
    finally:
        launcher.kill()
        launcher.wait()
    wait_for(lambda: not processes_mentioning(str(directory.absolute())), "the server to stop")
    assert start_time(postmaster) is None  # exited (a zombie at most, for PID 1 to reap)
    assert "received fast shutdown request" in (directory / "postgres.log").read_text()


# The database class.


def test_sessions_creating_the_schema_at_once_on_an_empty_database_all_succeed(cluster):
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
    # Timeouts longer than the wait the test holds, however slow the machine.
    database = PostgresDatabase(database_url, statement_timeout_ms=20_000, deadline_seconds=30)
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


def test_the_psycopg_internals_the_deadline_relies_on_are_still_there():
    """DeadlineConnection (fixed_db/postgres.py) overrides Connection.wait and
    catches errors._WaitTimeout, which psycopg (3.3.9) keeps private: an
    upgrade that renames either fails here first, not on a frozen server."""
    assert issubclass(psycopg.errors._WaitTimeout, psycopg.OperationalError)
    parameters = inspect.signature(psycopg.Connection.wait).parameters
    assert list(parameters) == ["self", "gen", "interval", "timeout"]
    assert (parameters["interval"].default, parameters["timeout"].default) == (WAIT_INTERVAL, None)


def test_a_frozen_server_is_a_deadline_and_what_was_sent_is_unknown(own_server):
    """A statement on a frozen server (paused(): the postmaster and every
    process below it SIGSTOPped, as a paused VM, a stalled disk or a network
    partition looks: connections stay open and the kernel still takes what
    is sent, but nothing answers, and the server's own statement_timeout
    cannot fire) ends at the deadline, its connection closed and never lent
    again. What it answers, checked against what the
    server did once resumed: an autocommit write and a COMMIT ran after all
    (unknown), a write before COMMIT never committed (not applied)."""
    server = started(own_server())
    database = PostgresDatabase(server.url, pool_size=2, deadline_seconds=0.5)
    conn = database.acquire()
    first = conn.conn
    assert conn.execute("SELECT value FROM counter").fetchall() == [(0,)]
    before = sessions(server.url)
    update = "UPDATE counter SET value = value + ? WHERE id = 1"
    with server.paused(), at_most(5, "a statement on the frozen server"):
        began = time.monotonic()
        with pytest.raises(DeadlineExceeded) as timed_out:
            conn.execute(update, (1,))
        assert database.deadline_seconds <= time.monotonic() - began < database.deadline_seconds + 1
        assert first.closed
        database.release(conn)
    assert outcome_of(timed_out.value, committing=True).outcome == "unknown"
    again = database.acquire()
    try:
        assert again.conn is not first  # the pool replaced it
        assert again.execute("SELECT 1").fetchall() == [(1,)]
    finally:
        database.release(again)
        database.close()

    committing, writing = database.connect(), database.connect()
    before |= sessions(server.url)
    committing.begin()
    committing.execute(update, (10,))
    writing.begin()
    with server.paused(), at_most(5, "statements on the frozen server"):
        with pytest.raises(DeadlineExceeded) as at_commit:
            committing.commit()
        with pytest.raises(DeadlineExceeded) as before_commit:
            writing.execute(update, (100,))
    assert outcome_of(at_commit.value, committing=True).outcome == "unknown"
    assert outcome_of(before_commit.value, committing=False).outcome == "not applied"
    assert committing.conn.closed and writing.conn.closed
    settled(server.url, before)
    with psycopg.connect(server.url) as conn:
        assert conn.execute("SELECT value FROM counter").fetchone() == (1 + 10,)


def test_on_a_frozen_server_the_breaker_opens_fails_fast_and_closes_once_it_answers(
    own_server, monkeypatch
):
    server = started(own_server())
    monkeypatch.setenv("DATABASE_URL", server.url)
    monkeypatch.setenv("WORK_MS", "0")
    app = make_app("fixed_db")
    database = app.extensions["fixed_db"]
    client = app.test_client()
    try:
        assert client.post("/counter/increment").json == {"value": 1}
        database.pool.wait(timeout=10)  # every pooled connection open
        before = sessions(server.url)
        with (
            server.paused(),
            at_most(BREAKER_FAIL_MAX * DEADLINE_SECONDS + 5, "the requests"),
        ):
            # Each sent on a pooled connection, which the deadline closes.
            failed = [client.post("/counter/increment") for _ in range(BREAKER_FAIL_MAX)]
            assert database.breaker.current_state == "open"
            began = time.monotonic()
            fast = [client.post("/counter/increment") for _ in range(20)]
            fast += [client.get("/counter"), client.post("/visits", json={"article": "a"})]
            assert time.monotonic() - began < DEADLINE_SECONDS  # none waited for the server
        assert [(r.status_code, r.json["outcome"]) for r in failed] == [(503, "unknown")] * 3
        assert {r.status_code for r in fast} == {503}
        assert {r.json.get("outcome") for r in fast if r.request.method == "POST"} == {
            "not applied"
        }
        time.sleep(BREAKER_RESET_SECONDS)  # then one trial goes through, and closes it
        assert client.post("/counter/increment").status_code == 200
        assert database.breaker.current_state == "closed"
    finally:
        database.close()
    settled(server.url, before)
    with psycopg.connect(server.url) as conn:
        # The 3 "unknown" ran once the server was resumed; nothing else did.
        assert conn.execute("SELECT value FROM counter").fetchone() == (1 + 3 + 1,)
        assert conn.execute("SELECT count(*) FROM visits").fetchone() == (0,)


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


# fixed_db itself on PostgreSQL: the Flask test client, then real gunicorn.


@pytest.fixture
def fixed_db_on_postgres(database_url, monkeypatch):
    """fixed_db's app on a fresh schema, made as each worker makes it."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("WORK_MS", "0")
    app = make_app("fixed_db")
    yield app
    app.extensions["fixed_db"].close()


def contract_checks():
    """Every check of tests/test_contract.py that applies to fixed_db, with
    the parameters its own marks give it."""
    for name, check in vars(test_contract).items():
        if not name.startswith("test_") or not callable(check):
            continue
        cases = [{}]
        for mark in getattr(check, "pytestmark", []):
            if mark.name != "parametrize":
                continue
            names, values = mark.args[0], mark.args[1]
            names = [n.strip() for n in names.split(",")] if isinstance(names, str) else names
            rows = [v if len(names) > 1 else (v,) for v in values]
            cases = [
                {**case, **dict(zip(names, row, strict=True))} for case in cases for row in rows
            ]
        for case in cases:
            if case.get("app_name", "fixed_db") == "fixed_db":
                shown = ",".join(str(v) for k, v in case.items() if k != "app_name")
                yield pytest.param(check, case, id=f"{name}[{shown}]" if shown else name)


@pytest.mark.parametrize(("check", "case"), list(contract_checks()))
def test_the_contract_holds_on_postgresql(check, case, fixed_db_on_postgres):
    app = fixed_db_on_postgres
    given = {"app": app, "client": app.test_client(), "app_name": "fixed_db", **case}
    check(**{name: given[name] for name in inspect.signature(check).parameters})


def test_the_backend_follows_the_url_and_a_mismatch_is_refused(database_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", database_url)
    app = make_app("fixed_db")
    assert isinstance(app.extensions["fixed_db"], PostgresDatabase)
    assert app.extensions["fixed_db"].pool is None  # made on first use, in the worker
    monkeypatch.setenv("FIXED_DB_BACKEND", "sqlite")
    with pytest.raises(ValueError, match="FIXED_DB_BACKEND"):
        make_app("fixed_db")
    monkeypatch.delenv("DATABASE_URL")
    monkeypatch.setenv("FIXED_DB_BACKEND", "postgres")
    with pytest.raises(ValueError, match="DATABASE_URL"):
        make_app("fixed_db")  # nobody started a server for it: say how to get one


def test_an_idempotency_key_applies_a_write_once(fixed_db_on_postgres):
    client = fixed_db_on_postgres.test_client()
    client.get("/")  # the cookie a keyed write needs
    first = client.post("/counter/increment", headers={"Idempotency-Key": "k1"})
    again = client.post("/counter/increment", headers={"Idempotency-Key": "k1"})
    assert first.json == again.json == {"value": 1}
    assert again.headers["Idempotent-Replayed"] == "true"
    assert client.get("/counter").json == {"value": 1}


def test_a_key_is_never_a_credential_on_postgresql(fixed_db_on_postgres):
    # tests/test_key_identity.py, on PostgreSQL: a stranger's same key hands out
    # neither a cookie nor data, needs a cookie first, and another body is a 422.
    alice, bob = (fixed_db_on_postgres.test_client() for _ in range(2))
    key = {"Idempotency-Key": "9b1f6a0e-3c2d-4f7a-8e5b-0c4d2a1f6e3b"}
    refused = alice.post("/visits", json={"article": "alice-secret"}, headers=key)
    assert refused.status_code == 428 and refused.headers.getlist("Set-Cookie") == []
    alice.get("/")
    assert alice.post("/visits", json={"article": "alice-secret"}, headers=key).status_code == 201
    theirs = bob.post("/visits", json={"article": "bob-own"}, headers=key)
    assert theirs.status_code == 428 and "alice-secret" not in theirs.get_data(as_text=True)
    bob.get("/")
    theirs = bob.post("/visits", json={"article": "bob-own"}, headers=key)
    assert theirs.json == {"visits": ["bob-own"]} and "Idempotent-Replayed" not in theirs.headers
    reused = alice.post("/visits", json={"article": "other"}, headers=key)
    assert reused.status_code == 422
    assert alice.get("/visits").json == {"visits": ["alice-secret"]}


def test_a_full_disk_is_a_507_that_applies_nothing(fixed_db_on_postgres, database_url):
    """PostgreSQL's own disk_full error (SQLSTATE 53100), raised by the server
    from a trigger on the counter (a full disk itself is not made here)."""
    client = fixed_db_on_postgres.test_client()
    client.get("/")  # the cookie a keyed write needs
    client.post("/counter/increment")  # the schema exists
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION disk_is_full() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'no space' USING ERRCODE = 'disk_full'; END $$"
        )
        conn.execute(
            "CREATE TRIGGER disk_is_full BEFORE UPDATE ON counter"
            " FOR EACH ROW EXECUTE FUNCTION disk_is_full()"
        )
    for headers in ({}, {"Idempotency-Key": "k1"}):
        response = client.post("/counter/increment", headers=headers)
        assert response.status_code == 507
        assert response.json["outcome"] == "not applied"
    assert client.get("/counter").json == {"value": 1}


def serve_on(url: str, var_dir: Path, **env: str) -> AppServer:
    env = {"VAR_DIR": str(var_dir), "DATABASE_URL": url, **env}
    return AppServer("fixed_db", free_port(), env=env, log_path=var_dir / "fixed_db.log")


@pytest.mark.gunicorn
def test_fixed_db_on_postgresql_loses_nothing_over_5000_operations(database_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", database_url)
    verdict, history, _ = hammer_app("fixed_db", users=40, ops=42, max_seconds=60)
    assert verdict.operations >= 5000
    assert {e.op for e in history} >= {"increment", "add_visit", "list_visits", "greet"}
    assert any(e.scenario == "tabs" for e in history)  # one user's 40 tabs at once
    assert verdict.errors == 0
    assert verdict.workers == 2  # both processes served, and agreed
    assert verdict.anomalies == 0, verdict.examples
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT value FROM counter").fetchone() == (40 * 42,)


@pytest.mark.gunicorn
def test_workers_booting_at_once_on_an_empty_database_all_come_up(database_url, isolated_var_dir):
    """Four gunicorn workers start together, and each creates the schema as
    it starts, on an empty database: all of them come up and serve."""
    workers = 4
    with serve_on(database_url, isolated_var_dir, GUNICORN_WORKERS=str(workers)) as server:
        assert len(server.worker_pids) == workers  # every one answered
        assert table_names(database_url) >= {"counter", "visits", "idempotency"}
        together = threading.Barrier(2 * workers)
        events: list = []

        def increment(n: int) -> None:
            client = Client(server.url, f"u{n}")
            together.wait()
            events.append(client.increment())
            client.close()

        threads = [threading.Thread(target=increment, args=(n,)) for n in range(2 * workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    log = server.log_path.read_text()
    assert "Traceback" not in log
    assert "not reachable" not in log  # each worker created (or found) the schema at start
    assert sorted(e.value for e in events if e.ok) == list(range(1, 2 * workers + 1))


@pytest.mark.gunicorn
def test_python_m_serve_runs_its_own_postgresql_and_a_restart_keeps_every_state(
    own_server, isolated_var_dir
):
    """`FIXED_DB_BACKEND=postgres` and no URL: `python -m serve` starts the
    embedded server under var/postgres before gunicorn, prints its PID, and
    stops it on Ctrl-C; AppServer then starts it again on the same cluster,
    which has the counter, the visits and a key's answer."""
    started(own_server(isolated_var_dir / "postgres")).stop()  # a cluster there, copied
    env = {"VAR_DIR": str(isolated_var_dir), "FIXED_DB_BACKEND": "postgres"}
    port = free_port()
    launcher = launch("fixed_db", port, env=env)
    try:
        line = launcher.stdout.readline()
        postgres = int(line.split("postgres pid ")[1].split()[0])
        http, url = requests.Session(), f"http://127.0.0.1:{port}"
        for _ in range(3):
            http.post(url + "/counter/increment", timeout=5)
        http.post(url + "/visits", json={"article": "a1"}, timeout=5)
        keyed = http.post(
            url + "/visits", json={"article": "a2"}, headers={"Idempotency-Key": "k1"}, timeout=5
        )
        launcher.send_signal(signal.SIGINT)
        assert launcher.wait(timeout=20) == 0
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert start_time(postgres) is None
    assert not processes_mentioning(str(isolated_var_dir))  # gunicorn and PostgreSQL
    with AppServer("fixed_db", free_port(), env=env) as server:
        assert isinstance(server.backing, EmbeddedPostgres)
        url = server.url
        assert http.get(url + "/counter", timeout=5).json() == {"value": 3}
        assert http.get(url + "/visits", timeout=5).json() == {"visits": ["a1", "a2"]}
        replay = http.post(
            url + "/visits", json={"article": "a2"}, headers={"Idempotency-Key": "k1"}, timeout=5
        )
        assert replay.json() == keyed.json()
        assert replay.headers["Idempotent-Replayed"] == "true"
    assert server.backing.process.returncode == 0  # stopped with the app, by PID


@pytest.mark.gunicorn
def test_a_restart_of_postgresql_mid_load_is_503s_then_recovery_losing_nothing(
    own_server, isolated_var_dir
):
    """SIGKILL the server under 8 users' increments: 503 JSON answers (never
    a 500, never a hang) while it is down, 200s again once it is back, without
    a restart of the app or of a worker; and no acknowledged increment lost."""
    postgres = started(own_server())
    history: list = []
    stop = threading.Event()
    try:
        with serve_on(postgres.url, isolated_var_dir) as server:

            def load(n: int) -> None:
                client = Client(server.url, f"u{n}", http=KeepAliveSession())
                while not stop.is_set():
                    history.append(client.increment())
                client.close()

            threads = [threading.Thread(target=load, args=(n,)) for n in range(8)]
            for thread in threads:
                thread.start()
            wait_for(lambda: sum(e.ok for e in history) > 50, "increments before the kill")
            postgres.kill()
            killed = time.monotonic()
            wait_for(
                lambda: sum(e.start > killed + 0.1 and e.status == 503 for e in history) > 8,
                "503s while the server is down",
            )
            restarting = time.monotonic()
            postgres.start()  # the same cluster: crash recovery from the WAL
            restarted = time.monotonic()
            wait_for(
                lambda: sum(e.start > restarted and e.ok for e in history) > 50,
                "increments after the restart",
                timeout=20,
            )
            stop.set()
            for thread in threads:
                thread.join()
            # A worker whose pool timed out just after the restart (its reconnection
            # in back-off) has its breaker open a moment longer: read once it answers.
            reads: list = []

            def read() -> bool:
                reads.append(requests.get(server.url + "/counter", timeout=5))
                return reads[-1].ok

            wait_for(read, "the counter to be read")
            final = reads[-1].json()["value"]
            still = {e.pid for e in history if e.start > restarted and e.ok}
            assert still <= {str(pid) for pid in server.worker_pids}  # no worker restarted
    finally:
        stop.set()
    assert {e.status for e in history} <= {200, 503}  # no 500, and every request answered
    assert max(e.end - e.start for e in history) < 5  # no hang: a 503 within about a second
    down = [e for e in history if e.start > killed + 0.1 and e.end < restarting]
    assert down and all(e.status == 503 and e.outcome in (NOT_APPLIED, UNKNOWN) for e in down)
    acknowledged = sum(e.ok for e in history)
    assert acknowledged <= final <= len(history)  # none acknowledged was lost


FROZEN_ANSWER_SECONDS = 3.0  # the deadline (1 s) and a pool timeout (1 s), and a margin


@pytest.mark.gunicorn
def test_a_frozen_postgresql_is_503s_within_seconds_then_200s_applying_nothing_twice(
    own_server, isolated_var_dir
):
    """The server frozen (SIGSTOP) under 16 users' increments: each request is
    a 503 with its outcome within FROZEN_ANSWER_SECONDS, never a hang; at most
    one per pooled connection was sent (unknown), the rest were not (the
    breaker, or no connection to be had); once resumed (SIGCONT), 200s again
    without a restart; and the final counter is every acknowledged increment
    plus at most the unknown ones."""
    postgres = started(own_server())
    users, freeze_seconds = 16, 2.0
    history: list = []
    with serve_on(postgres.url, isolated_var_dir) as server:
        clients = [
            Client(server.url, f"u{n}", timeout=FROZEN_ANSWER_SECONDS + 5, http=KeepAliveSession())
            for n in range(users)
        ]

        def each(work) -> None:
            threads = [threading.Thread(target=work, args=(c,)) for c in clients]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

        each(lambda client: history.append(client.increment()))  # every pool connected
        assert [e.status for e in history] == [200] * users
        before = sessions(postgres.url)
        with postgres.paused():
            froze = time.monotonic()

            def load(client: Client) -> None:
                while time.monotonic() < froze + freeze_seconds:
                    history.append(client.increment())

            each(load)
        resumed = time.monotonic()

        def until_200(client: Client) -> None:
            while time.monotonic() < resumed + 10:
                history.append(event := client.increment())
                if event.ok:
                    return
                time.sleep(0.01)

        each(until_200)
        workers = {str(pid) for pid in server.worker_pids}
        for client in clients:
            client.close()
    during = [e for e in history if froze <= e.start < resumed]
    after = [e for e in history if e.start >= resumed]
    assert during and {(e.status, bool(e.outcome)) for e in during} == {(503, True)}
    assert max(e.end - e.start for e in during) < FROZEN_ANSWER_SECONDS
    outcomes = [e.outcome for e in during]
    assert set(outcomes) <= {NOT_APPLIED, UNKNOWN}
    pooled = 2 * POOL_SIZE  # gunicorn's 2 workers: no new connection while frozen
    assert outcomes.count(UNKNOWN) <= pooled < len(outcomes)
    assert sum(e.ok for e in after) == users  # every user answered 200 again
    assert max(e.end for e in after if e.ok) - resumed < FROZEN_ANSWER_SECONDS
    assert {e.worker.partition("-")[0] for e in after if e.ok} <= workers  # none restarted
    settled(postgres.url, before)
    with psycopg.connect(postgres.url) as conn:
        [(final,)] = conn.execute("SELECT value FROM counter")
    acknowledged = sum(e.ok for e in history)
    assert acknowledged <= final <= acknowledged + outcomes.count(UNKNOWN)


@pytest.mark.gunicorn
def test_three_instances_sharing_one_postgresql_stay_correct(database_url, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", database_url)
    verdict, history, _ = hammer_app("fixed_db", users=12, ops=8, max_seconds=60, instances=3)
    assert verdict.errors == 0
    assert verdict.workers == 2 * 3
    assert crossed_instances(history)
    assert verdict.anomalies == 0, verdict.examples
