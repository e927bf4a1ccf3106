"""Launchers side by side, as a user runs them: a harness tool never touches
the data `make run` serves, nor another run's; a known failure is one
paragraph and exit code 2; a port taken names who holds it; which database
fixed_db ran on is printed and recorded."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loadtests.clients.client import Client
from loadtests.clients.transport import KeepAliveSession
from plumbing.config import REPO_ROOT
from serve.pids import free_port, pid_alive, pids_mentioning
from serve.processes import AppServer
from tests.conftest import launch

pytestmark = pytest.mark.gunicorn


def run(module: str, *args: str, env: dict[str, str] | None = None, timeout: float = 240):
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def counter(server: AppServer) -> int:
    client = Client(server.url, user="reader", http=KeepAliveSession())
    try:
        return client.read_counter().value
    finally:
        client.close()


def bump(server: AppServer, times: int) -> int:
    client = Client(server.url, user="served", http=KeepAliveSession())
    try:
        return [client.increment() for _ in range(times)][-1].value
    finally:
        client.close()


# The smallest run of every harness tool that starts servers of its own, on
# fixed_cache: `make run`'s Valkey holds the lock of var/valkey, so a tool
# that shares var/ with it cannot even start. OUT: the results folder.
TOOLS = {
    "demo": "loadtests.runs.hammer fixed_cache --users 2 --ops 2 --out OUT",
    "scale-out": "loadtests.runs.hammer fixed_cache --users 2 --ops 2 --instances 2 --out OUT",
    "matrix": "loadtests.runs.matrix --apps fixed_cache --shapes sync-1 --users 2 --ops 2"
    " --out OUT",
    "bench": "loadtests.runs.bench fixed_cache --seconds 0.3 --rounds 1 --profile-seconds 0.2"
    " --out OUT",
    "stall": "loadtests.faults.stall fixed_cache --connections 2 --seconds 0.2",
    "locust": "loadtests.swarm.locust_run fixed_cache --app-port 0 --headless --run-time 2s"
    " --users 2",
    "slow_clients": "loadtests.runs.slow_clients fixed_cache --sockets 1 --attempts 1",
    "faults": "loadtests.faults.run fixed_cache --seconds 1 --users 2 --out OUT",
}


@pytest.mark.parametrize("tool", TOOLS)
def test_a_harness_tool_runs_beside_make_run_and_leaves_its_data_alone(
    tool, isolated_var_dir, tmp_path
):
    # `make run APP=fixed_cache`: the app on var/ itself, its counter at 3.
    with AppServer("fixed_cache", free_port()) as served:
        assert bump(served, 3) == 3
        lock = served.backing.lock_path.read_text()
        module, *args = (str(tmp_path / "out") if a == "OUT" else a for a in TOOLS[tool].split())
        done = run(module, *args)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        assert counter(served) == 3
        assert served.backing.lock_path.read_text() == lock
    assert not list((isolated_var_dir / "runs").iterdir())  # its own folder, removed


def test_the_demo_does_not_reset_the_served_counter(isolated_var_dir, tmp_path):
    # The bug: `make demo` beside `make run-fixed` reset fixed_db's counter (161 -> 800).
    with AppServer("fixed_db", free_port()) as served:
        assert bump(served, 5) == 5
        done = run("loadtests.runs.hammer", "fixed_db", "--users", "4", "--ops", "5")
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        assert counter(served) == 5
    assert (isolated_var_dir / "fixed_db.sqlite3").exists()  # the served one, still there


def test_two_harness_runs_at_once_keep_apart(isolated_var_dir, tmp_path):
    # On one SQLite file, each run's reset and reads ran into the other's
    # increments: "final read wrong", "applied twice", an exit code of 1.
    args = ("fixed_db", "--users", "8", "--ops", "60")
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "loadtests.runs.hammer", *args, "--out", str(tmp_path / str(n))],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for n in range(2)
    ]
    outputs = [process.communicate(timeout=240)[0] for process in runs]
    for process, output in zip(runs, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]
        assert "UNEXPECTED" not in output


def test_a_run_folder_is_fresh_its_own_and_removed_and_an_abandoned_one_is_swept(
    isolated_var_dir,
):
    from serve.processes import run_folder

    runs = isolated_var_dir / "runs"
    runs.mkdir(parents=True)
    abandoned = runs / "hammer-999999999-abcd"  # no such PID: a run that was killed
    (abandoned / "valkey").mkdir(parents=True)
    live = runs / f"matrix-{os.getppid()}-abcd"  # a run still going
    live.mkdir()
    with run_folder("demo") as first, run_folder("demo") as second:
        assert first != second and first.parent == second.parent == runs
        assert list(first.iterdir()) == []
        (first / "fixed_db.sqlite3").write_text("")
        assert not abandoned.exists()
        assert live.exists()
    assert not first.exists() and not second.exists()
    assert live.exists()


def test_a_killed_runs_paused_server_is_ended_and_its_folder_swept(isolated_var_dir):
    # A tool killed while it held its store paused (SIGSTOP) leaves the store
    # stopped for good: the stop signal its parent's death sent waits while
    # it is stopped. The next run ends it (SIGKILL) and sweeps.
    from serve.processes import run_folder

    runs = isolated_var_dir / "runs"
    runs.mkdir(parents=True)
    gone = subprocess.Popen(["true"])
    gone.wait()  # a PID that no longer runs
    abandoned = runs / f"stall-{gone.pid}-abcd"
    abandoned.mkdir()
    paused = subprocess.Popen(
        ["sleep", "300"], env={**os.environ, "VAR_DIR": str(abandoned)}, start_new_session=True
    )
    try:
        os.kill(paused.pid, signal.SIGSTOP)
        stat = Path(f"/proc/{paused.pid}/stat")
        deadline = time.monotonic() + 5
        while stat.read_text().rpartition(")")[2].split()[0] != "T":  # stopped by now
            assert time.monotonic() < deadline, "SIGSTOP did not stop it"
            time.sleep(0.01)
        os.kill(paused.pid, signal.SIGTERM)  # pending, as PR_SET_PDEATHSIG's would be
        time.sleep(0.2)
        assert paused.poll() is None  # stopped, not ended
        with run_folder("demo"):
            assert not abandoned.exists()
        assert paused.wait(timeout=5) == -signal.SIGKILL
    finally:
        if paused.poll() is None:
            os.kill(paused.pid, signal.SIGCONT)
            paused.kill()
            paused.wait()


# -- a known failure: one paragraph, exit code 2 --------------------------------

# Every entry point that starts servers, for one app each.
ENTRY_POINTS = {
    "serve": "serve APP --port PORT",
    "hammer": "loadtests.runs.hammer APP --users 2 --ops 1 --out OUT",
    "matrix": "loadtests.runs.matrix --apps APP --shapes sync-1 --out OUT",
    "bench": "loadtests.runs.bench APP --seconds 0.2 --rounds 1 --out OUT",
    "stall": "loadtests.faults.stall fixed_cache",
    "locust": "loadtests.swarm.locust_run APP --app-port 0 --headless",
    "slow_clients": "loadtests.runs.slow_clients APP",
    "faults": "loadtests.faults.run APP --seconds 1 --users 2 --out OUT",
}


def entry_point(name: str, app: str, out: Path) -> tuple[str, ...]:
    values = {"APP": app, "PORT": str(free_port()), "OUT": str(out)}
    return tuple(values.get(arg, arg) for arg in ENTRY_POINTS[name].split())


def assert_one_paragraph_and_exit_2(done, *expected: str) -> str:
    """The launcher's own words: "error: ..." last on stderr, no traceback of
    its own (`python -m serve` runs gunicorn in the foreground: a worker's
    traceback may come before, from the app), exit code 2. Returns them."""
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-3000:]
    ours = [line for line in done.stderr.splitlines() if 'File "' in line]
    assert not [line for line in ours if "/serve/" in line or "/loadtests/" in line], done.stderr
    found = list(re.finditer(r"^error: ", done.stderr, re.MULTILINE))
    assert found, done.stderr[-3000:]
    error = done.stderr[found[-1].start() :]
    for text in expected:
        assert text in error
    return error


@pytest.mark.parametrize("name", ENTRY_POINTS)
def test_a_server_that_fails_to_start_is_an_error_with_exit_code_2(name, tmp_path):
    module, *args = entry_point(name, "fixed_cache", tmp_path)
    # Every worker refuses to boot; the bench sets WORK_MS itself: gunicorn refuses then.
    broken = {"GUNICORN_WORKER_CLASS": "no_such"} if name == "bench" else {"WORK_MS": "-1"}
    done = run(module, *args, env=broken)
    assert_one_paragraph_and_exit_2(done, "fixed_cache")


@pytest.mark.parametrize(
    "setting", ["GUNICORN_WORKERS=abc", "GUNICORN_WORKERS=0", "GUNICORN_THREADS=0"]
)
def test_a_count_that_is_not_one_or_more_is_an_error_with_exit_code_2(setting, tmp_path):
    # Was a traceback (abc), or a "started" server no request reached (0).
    name, value = setting.split("=")
    for entry in ("serve", "hammer"):
        module, *args = entry_point(entry, "fixed_db", tmp_path)
        done = run(module, *args, env={name: value})
        error = assert_one_paragraph_and_exit_2(done, f"{name} must be a whole number")
        assert done.stderr == error and "Traceback" not in done.stderr


def test_the_error_names_the_apps_own_cause_and_not_an_earlier_runs_log(tmp_path, isolated_var_dir):
    module, *args = entry_point("hammer", "fixed_db", tmp_path)
    done = run(module, *args, env={"DATABASE_URL": "garbage"})
    error = assert_one_paragraph_and_exit_2(done, "exited at start-up")
    cause = error.split("Last lines")[0]  # before gunicorn's HaltServer frames
    assert "ValueError: DATABASE_URL must look like" in cause, error
    # In the foreground the output went to the terminal: an earlier run's
    # log of the same app and port is not this start's.
    port = free_port()
    log = isolated_var_dir / "logs" / f"fixed_db-{port}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("STALE LINE from an earlier run\n")
    done = run("serve", "fixed_db", "--port", str(port), env={"WORK_MS": "abc"})
    error = assert_one_paragraph_and_exit_2(done, "exited at start-up", "output is above")
    assert "STALE LINE" not in error


@pytest.mark.parametrize("name", [n for n in ENTRY_POINTS if n != "stall"])
def test_an_invalid_fixed_db_backend_is_an_error_with_exit_code_2(name, tmp_path):
    module, *args = entry_point(name, "fixed_db", tmp_path)
    done = run(module, *args, env={"FIXED_DB_BACKEND": "mysql"})
    error = assert_one_paragraph_and_exit_2(done, "FIXED_DB_BACKEND must be sqlite or postgres")
    assert done.stderr == error and error.count("\n") == 1  # nothing started: one line


def test_the_demo_checks_fixed_db_backend_before_it_starts_anything(tmp_path):
    done = run("loadtests.runs.hammer", "--out", str(tmp_path), env={"FIXED_DB_BACKEND": "mysql"})
    assert_one_paragraph_and_exit_2(done, "FIXED_DB_BACKEND")
    assert "hammering" not in done.stdout


def test_an_invalid_store_setting_is_an_error_with_exit_code_2():
    done = run("serve", "fixed_cache", "--port", str(free_port()), env={"VALKEY_APPENDFSYNC": "x"})
    assert_one_paragraph_and_exit_2(done, "VALKEY_APPENDFSYNC")


def test_a_data_folder_in_use_is_an_error_with_exit_code_2(isolated_var_dir):
    with AppServer("fixed_cache", free_port()):
        done = run("serve", "fixed_cache", "--port", str(free_port()))
    assert_one_paragraph_and_exit_2(done, "in use by another Valkey server")


# -- a port taken ----------------------------------------------------------------------


def test_a_port_held_by_a_running_launcher_names_it_and_what_to_do(isolated_var_dir):
    port = str(free_port())
    first = launch("fixed_session", port, start_new_session=True)
    try:
        assert "gunicorn pid" in first.stdout.readline()
        again = run("serve", "fixed_session", "--port", port)
        assert_one_paragraph_and_exit_2(again, f"pid {first.pid}", "fixed_session.app")
        assert "-m serve fixed_session --port" in again.stderr  # both: who holds it...
        assert "left running" not in again.stderr  # ...and it is not a stray
        assert re.search(r"python -m serve fixed_session --port \d+", again.stderr)
        locust = run(
            "loadtests.swarm.locust_run", "fixed_session", "--app-port", port, "--headless"
        )
        assert_one_paragraph_and_exit_2(locust, f"pid {first.pid}", "APP_PORT")
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=30)
        first.stdout.close()


def test_two_launchers_starting_on_one_port_at_once_never_take_the_others_workers(
    isolated_var_dir, monkeypatch
):
    """Both find the port free; the second's gunicorn cannot bind it, and the
    workers that answer there are the first's. It used to report them as its
    own, then stop 5 s later with exit 1 when its gunicorn gave up."""
    port = free_port()
    with AppServer("fixed_session", port) as first:
        monkeypatch.setattr("serve.processes.port_is_free", lambda port: True)  # the race
        second = AppServer("fixed_session", port)
        with pytest.raises(RuntimeError, match=f"port {port} is already in use by pid"):
            second.start()
        assert second.process.poll() is not None  # stopped, nothing left of it
        assert first.worker_pids and pid_alive(first.process.pid)


# -- which database ------------------------------------------------------------------


def test_which_database_fixed_db_ran_on_is_printed_and_recorded(isolated_var_dir, tmp_path):
    done = run(
        "loadtests.runs.hammer", "fixed_db", "--users", "2", "--ops", "2", "--out", str(tmp_path)
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "hammering fixed_db (SQLite)" in done.stdout
    summary = json.loads((tmp_path / "hammer.json").read_text())["apps"]["fixed_db"]["summary"]
    assert summary["backend"] == "sqlite"

    done = run("loadtests.faults.run", "fixed_db", "--seconds", "1", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "fixed_db (SQLite), keys on" in done.stdout
    runs = json.loads((tmp_path / "faults.json").read_text())["runs"]
    assert [r["summary"]["backend"] for r in runs] == ["sqlite", "sqlite"]

    matrix = ("--apps", "fixed_db", "broken_global", "--shapes", "sync-1", "--out", str(tmp_path))
    done = run("loadtests.runs.matrix", *matrix, "--users", "2", "--ops", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "fixed_db (SQLite)" in done.stdout
    header, *rows = (tmp_path / "matrix.csv").read_text().splitlines()
    backend = header.split(",").index("backend")
    assert sorted(row.split(",")[backend] for row in rows) == ["", "sqlite"]

    postgres = {"FIXED_DB_BACKEND": "postgres"}
    done = run(
        "loadtests.runs.hammer", "fixed_db", "--users", "2", "--ops", "2", "--out", str(tmp_path),
        env=postgres,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "hammering fixed_db (PostgreSQL)" in done.stdout
    summary = json.loads((tmp_path / "hammer.json").read_text())["apps"]["fixed_db"]["summary"]
    assert summary["backend"] == "postgres"


def test_serve_names_fixed_dbs_sqlite_file(isolated_var_dir):
    launcher = launch("fixed_db", free_port(), start_new_session=True)
    try:
        line = launcher.stdout.readline()
    finally:
        launcher.send_signal(signal.SIGTERM)
        launcher.wait(timeout=30)
        launcher.stdout.close()
    assert f"SQLite file {isolated_var_dir / 'fixed_db.sqlite3'}" in line, line


def test_make_help_mentions_db_postgres_and_the_knobs():
    shown = subprocess.run(["make", "help"], cwd=REPO_ROOT, capture_output=True, text=True).stdout
    assert "DB=postgres" in shown
    assert "APP=" in shown and "INSTANCES=" in shown


def test_a_tool_stopped_with_sigterm_stops_its_servers_and_deletes_its_folder(isolated_var_dir):
    # Python's default for SIGTERM is to exit at once, running no clean-up.
    tool = subprocess.Popen(
        [sys.executable, "-m", "loadtests.faults.stall", "fixed_cache", "--seconds", "30"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "paused" in tool.stdout.readline()  # its Valkey is stopped now
        [folder] = (isolated_var_dir / "runs").iterdir()
        tool.send_signal(signal.SIGTERM)
        assert tool.wait(timeout=30) == 130, tool.stderr.read()
    finally:
        if tool.poll() is None:
            tool.kill()
            tool.wait()
    assert not folder.exists()
    assert not pids_mentioning(str(folder))


def test_a_port_out_of_range_is_an_error_with_exit_code_2():
    done = run("serve", "fixed_db", "--port", "99999")  # was an OverflowError's traceback
    error = assert_one_paragraph_and_exit_2(done, "port 99999 is out of range")
    assert done.stderr == error


def test_make_run_serves_on_app_port_when_it_is_set():
    # `make help` names APP_PORT= among the knobs next to `make run`; make run
    # used to ignore it and serve on the fixed port without a word.
    def recipe(*args: str) -> str:
        # Under `make test` this is a make inside make: without the parent's
        # flags, and without its "Entering/Leaving directory" lines.
        env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
        made = subprocess.run(
            ["make", "--no-print-directory", "-n", *args],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        return made.stdout.strip().splitlines()[-1]

    assert recipe("run", "APP=fixed_db", "APP_PORT=6002").endswith("-m serve fixed_db --port 6002")
    assert recipe("run-broken", "APP_PORT=6000").endswith("-m serve broken_global --port 6000")
    assert recipe("run", "APP=fixed_db").endswith("-m serve fixed_db")
