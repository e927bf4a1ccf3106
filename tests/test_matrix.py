"""The correctness matrix on a reduced size: the shape of server decides what
breaks in broken_global (gevent's greenlets as surely as threads), and
nothing breaks in fixed_db. uWSGI's shape starts every worker, stops them all,
and breaks broken_global as gunicorn's 2 x 4 does, though it loads the app
before the fork; the fixed apps, which connect after it, stay clean."""

import csv
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from loadtests.runs import matrix
from plumbing.config import REPO_ROOT
from serve import uwsgi
from serve.processes import MATRIX_SHAPES, AppServer, free_port

SHAPES = ["sync-1", "sync-4", "gthread-1x8", "gevent-1x50"]
needs_uwsgi = pytest.mark.skipif(
    not uwsgi.available(), reason="uWSGI is not installed: pip install uwsgi"
)


def test_the_matrix_tells_threads_from_processes(isolated_var_dir, tmp_path, capsys):
    apps = ["--apps", "broken_global", "fixed_db", "--shapes", *SHAPES]
    exit_code = matrix.main([*apps, "--users", "8", "--ops", "6", "--out", str(tmp_path)])
    assert exit_code == 0  # no anomaly in the fixed app
    with (tmp_path / "matrix.csv").open() as f:
        cell = {(r["app"], r["shape"]): r for r in csv.DictReader(f)}
    assert (tmp_path / "matrix.png").stat().st_size > 10_000
    assert "results:" in capsys.readouterr().out

    one_sync_worker = cell["broken_global", "sync-1"]
    assert one_sync_worker["lost updates"] == one_sync_worker["divergence"] == "0"
    assert one_sync_worker["greet"] == "0"  # one request at a time: exact...
    assert int(one_sync_worker["visits"]) > 0  # ...except one list for every user

    processes = cell["broken_global", "sync-4"]
    assert processes["lost updates"] == "0"
    assert int(processes["divergence"]) > 0

    threads = cell["broken_global", "gthread-1x8"]
    assert int(threads["lost updates"]) > 0
    assert threads["divergence"] == "0"
    assert int(threads["greet"]) > 0

    greenlets = cell["broken_global", "gevent-1x50"]  # one thread, yet globals break
    assert int(greenlets["lost updates"]) > 0
    assert greenlets["divergence"] == "0"
    assert int(greenlets["greet"]) > 0

    for shape in SHAPES:
        row = cell["fixed_db", shape]
        assert [row[g] for g in matrix.GROUPS] == ["0"] * len(matrix.GROUPS)


def running(pid: int) -> bool:
    """Alive, and not a zombie: a process whose parent died is reaped by init."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):  # gone before, or while, it was read
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text() if entry.name.isdigit() else ""
        except OSError:
            continue  # gone meanwhile
        if stat and int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


@pytest.mark.gunicorn
@needs_uwsgi
def test_uwsgi_loads_the_app_forks_every_worker_and_stops_them_all(isolated_var_dir):
    env = {"VAR_DIR": str(isolated_var_dir)}
    with AppServer("broken_global", free_port(), shape="uwsgi-2x4", env=env) as server:
        master = server.process.pid
        assert server.workers() == 2
        assert server.shape() == "uWSGI 2 processes x 4 threads, app loaded before fork"
        # Both workers answered /healthz before start() returned, and they are
        # the master's children: nothing else was started.
        assert server.worker_pids == children_of(master)
        assert len(server.worker_pids) == 2
        # The app was loaded once, in the master, before the fork.
        log = server.log_path.read_text()
        assert re.search(rf"WSGI app 0 .* ready in .* pid: {master} ", log), log
        response = requests.get(server.url + "/healthz", timeout=5)
        assert response.json()["strategy"] == "broken_global"
        assert response.headers["Connection"] == "close"  # as uWSGI closes it
    # stop() returns once the master has exited; it buries its workers first.
    assert [pid for pid in (master, *server.worker_pids) if running(pid)] == []


STARTS_UWSGI_AND_WAITS = """
import time
from serve.processes import AppServer, free_port
server = AppServer("broken_global", free_port(), shape="uwsgi-2x4").start()
print(server.process.pid, *server.worker_pids, flush=True)
time.sleep(60)
"""


@pytest.mark.gunicorn
@needs_uwsgi
def test_a_sigkilled_parent_takes_uwsgi_and_its_workers_down(isolated_var_dir):
    # A SIGKILL runs no clean-up: the parent-death signal (SIGTERM, serve/pids.py)
    # reaches the master, which --die-on-term makes stop rather than reload.
    parent = subprocess.Popen(
        [sys.executable, "-c", STARTS_UWSGI_AND_WAITS],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        pids = [int(pid) for pid in parent.stdout.readline().split()]
        assert len(pids) == 3, pids  # the master and 2 workers
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()
    deadline = time.monotonic() + 10
    while (left := [pid for pid in pids if running(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert left == []


@pytest.mark.gunicorn
@needs_uwsgi
def test_uwsgi_breaks_broken_global_like_gthread_and_no_fixed_app(isolated_var_dir, tmp_path):
    assert "uwsgi-2x4" in MATRIX_SHAPES  # `make matrix` runs it
    apps = ["--apps", "broken_global", "fixed_db", "fixed_cache", "--shapes", "uwsgi-2x4"]
    exit_code = matrix.main([*apps, "--users", "8", "--ops", "6", "--out", str(tmp_path)])
    assert exit_code == 0  # no anomaly in the fixed apps
    with (tmp_path / "matrix.csv").open() as f:
        cell = {r["app"]: r for r in csv.DictReader(f)}

    # Each worker got its own copy of the globals at the fork: threads of one
    # process lose updates, the two processes hand out the same values.
    broken = cell["broken_global"]
    assert broken["errors"] == "0"
    assert broken["workers"] == "2"
    assert int(broken["lost updates"]) > 0
    assert int(broken["divergence"]) > 0
    assert int(broken["visits"]) > 0
    assert int(broken["greet"]) > 0

    # Their pools and connections are made in each worker on first use, after
    # the fork: loading the app in the master shares none of them.
    for app in ("fixed_db", "fixed_cache"):
        row = cell[app]
        assert (row["errors"], row["workers"]) == ("0", "2"), app
        assert [row[g] for g in matrix.GROUPS] == ["0"] * len(matrix.GROUPS), app
