"""fixed_db on PostgreSQL under real gunicorn: 5,000 operations lose nothing,
workers booting at once on an empty database, `python -m serve` with its own
server and a restart that keeps state, the server restarted or frozen
mid-load, three instances sharing it. Fixtures: tests/postgres_fixtures.py.
"""

import signal
import threading
import time
from pathlib import Path

import psycopg
import pytest
import requests

from fixed_db.postgres import (
    POOL_SIZE,
)
from loadtests.clients.client import Client
from loadtests.clients.transport import KeepAliveSession
from loadtests.judge.history import NOT_APPLIED, UNKNOWN
from loadtests.runs.hammer import hammer_app
from serve.pids import start_time
from serve.postgres import EmbeddedPostgres
from serve.processes import AppServer, free_port
from tests.conftest import launch, processes_mentioning
from tests.postgres_fixtures import (
    sessions,
    settled,
    started,
    table_names,
    wait_for,
)
from tests.test_scale_out import crossed_instances


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
        # Its answer is kept, not the response, which would keep its socket
        # open past the session's close.
        keyed = http.post(
            url + "/visits", json={"article": "a2"}, headers={"Idempotency-Key": "k1"}, timeout=5
        ).json()
        # Closed before each stop: gunicorn would hold an idle kept-alive
        # connection open 2 s as it stops. The session opens new ones after.
        http.close()
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
        assert replay.json() == keyed
        assert replay.headers["Idempotent-Replayed"] == "true"
        del replay  # with it goes the socket it holds: the session's close then closes all
        http.close()
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
            # The value is kept, not the response, which would keep its socket
            # open, and gunicorn would hold that connection 2 s as it stops.
            values: list[int] = []

            def read() -> bool:
                answer = requests.get(server.url + "/counter", timeout=5)
                if answer.ok:
                    values.append(answer.json()["value"])
                return answer.ok

            wait_for(read, "the counter to be read")
            final = values[-1]
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
