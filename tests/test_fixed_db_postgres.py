"""fixed_db's PostgreSQL database class (fixed_db/postgres.py), the READ
COMMITTED half-fix, and fixed_db itself on PostgreSQL under Flask's test
client: the schema made once by concurrent sessions (a barrier lines them up),
a pool per process, an idempotency key waited on (PostgreSQL itself reports
the lock wait, pg_locks), what a failed write answers, a killed or frozen
server within the deadline and the breaker. Fixtures: tests/postgres_fixtures.py.
"""

import inspect
import subprocess
import threading
import time

import psycopg
import pytest

from examples import half_fix_postgres_read_committed
from fixed_db.postgres import (
    BREAKER_FAIL_MAX,
    BREAKER_RESET_SECONDS,
    DEADLINE_SECONDS,
    WAIT_INTERVAL,
    DeadlineExceeded,
    NotConnected,
    PostgresDatabase,
    outcome_of,
)
from tests import test_contract
from tests.conftest import make_app, processes_mentioning
from tests.postgres_fixtures import (
    at_most,
    sessions,
    settled,
    started,
    table_names,
    unavailable,
    wait_for,
)

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
