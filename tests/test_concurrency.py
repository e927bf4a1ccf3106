"""Real gunicorn, real concurrency: broken_global breaks every time, and
fixed_session only where one user's requests overlap (fixed_db's and
fixed_cache's runs are in test_fixed_db.py and test_fixed_cache.py).

Each server runs under the shared config (2 workers x 4 threads) on a free
port, started and stopped by PID. The race is certain, not lucky: every user
starts a scope at the same barrier, handlers hold the read-write window open
for WORK_MS, and a run holds hundreds of overlapping requests.
"""

import re
import signal
import threading
import time

import pytest
import redis
import requests

from loadtests.judge.checker import check
from loadtests.runs.hammer import run_scenarios
from serve.pids import pid_alive
from serve.processes import AppServer, free_port
from tests.conftest import launch, serve

pytestmark = pytest.mark.gunicorn


def test_broken_global_loses_diverges_and_leaks(isolated_var_dir):
    with serve("broken_global", isolated_var_dir) as server:
        verdict = check(run_scenarios(server.url, users=32, ops=20, workers=server.workers()))
    assert verdict.errors == 0
    assert verdict.workers == 2
    assert verdict.lost_updates > 0  # threads in one process
    assert verdict.divergence > 0  # two processes, two counters
    assert verdict.final_reads_wrong > 0
    assert verdict.visits_lost > 0
    assert verdict.visits_leaked > 0  # one list for everybody
    assert verdict.greet_leaks > 0  # request data in a global


@pytest.mark.parametrize(("app", "remembers"), [("broken_global", False), ("fixed_db", True)])
def test_a_restart_forgets_only_the_globals(isolated_var_dir, app, remembers):
    with serve(app, isolated_var_dir) as server:
        requests.post(server.url + "/counter/reset", timeout=5)
        for _ in range(3):
            requests.post(server.url + "/counter/increment", timeout=5)
    with serve(app, isolated_var_dir) as server:
        value = requests.get(server.url + "/counter", timeout=5).json()["value"]
    assert value == (3 if remembers else 0)


def test_ctrl_c_stops_every_server_it_started(isolated_var_dir):
    port = free_port()
    launcher = launch("fixed_db", port, env={"VAR_DIR": str(isolated_var_dir)})
    try:
        line = launcher.stdout.readline()
        master = int(re.search(r"gunicorn pid (\d+)", line)[1])
        worker = int(
            requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
            .headers["X-Worker"]
            .split("-")[0]
        )
        launcher.send_signal(signal.SIGINT)
        assert launcher.wait(timeout=15) == 0
    finally:
        if launcher.poll() is None:
            launcher.kill()
    deadline = time.monotonic() + 5
    while (pid_alive(master) or pid_alive(worker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(master)
    assert not pid_alive(worker)


def test_fixed_session_keeps_every_users_sequential_appends(isolated_var_dir):
    with serve("fixed_session", isolated_var_dir) as server:
        history = run_scenarios(
            server.url, users=24, ops=90, scopes=("visits", "greet"), workers=server.workers()
        )
    verdict = check(history)
    appends = [e for e in history if e.op == "add_visit" and e.ok]
    assert len(appends) >= 2000
    assert len({e.user for e in appends}) >= 20
    assert verdict.workers == 2  # users on both processes (each keeps its connection to one)
    assert verdict.errors == 0
    assert verdict.anomalies == 0, verdict.examples  # nothing lost, nothing leaked


def test_fixed_session_loses_one_users_concurrent_appends(isolated_var_dir):
    """The known limit: the session is saved whole, last writer wins. Sixteen
    tabs of one user append at the same moment; the 8 server threads load the
    same session, so at most one of each overlapping batch survives."""
    with serve("fixed_session", isolated_var_dir) as server:
        verdict = check(
            run_scenarios(server.url, users=16, scopes=("tabs",), workers=server.workers())
        )
    assert verdict.errors == 0
    assert verdict.tabs_lost > 0
    assert verdict.visits_leaked == 0  # lost, but never shown to anyone else


def test_a_flood_of_new_sessions_stays_within_the_file_limit(isolated_var_dir):
    limit, workers = 200, 2
    env = {"VAR_DIR": str(isolated_var_dir), "SESSION_FILE_LIMIT": str(limit), "WORK_MS": "0"}
    with AppServer("fixed_session", free_port(), env=env) as server:

        def flood() -> None:
            for _ in range(100):  # a new cookieless user every time
                requests.post(server.url + "/visits", json={"article": "x"}, timeout=5)

        threads = [threading.Thread(target=flood) for _ in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    files = list((isolated_var_dir / "sessions").iterdir())
    assert len(files) <= limit + workers * (limit // 10)


def test_fixed_session_keeps_appends_in_redis_too(isolated_var_dir, redis_url):
    with serve("fixed_session", isolated_var_dir, SESSION_REDIS_URL=redis_url) as server:
        history = run_scenarios(
            server.url, users=20, ops=30, scopes=("visits",), workers=server.workers()
        )
    verdict = check(history)
    assert verdict.errors == 0
    assert verdict.anomalies == 0, verdict.examples
    sessions = redis.Redis.from_url(redis_url).keys("session:*")
    assert len(sessions) == 20  # one per user, in Redis...
    assert not (isolated_var_dir / "sessions").exists()  # ...and none in files
