"""Locust against real gunicorn: the correctness summary, the exit code, the
Correctness tab, and a master that checks what two workers recorded.

Every process (gunicorn, Locust, its workers) runs on free ports on
127.0.0.1, started and stopped by PID, for a few seconds. Each run holds
hundreds of overlapping requests per scope, so broken_global's anomalies are
certain, not lucky (as in test_concurrency.py).
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from loadtests.checker import KINDS
from plumbing.config import REPO_ROOT
from serve.pids import pid_alive
from serve.processes import AppServer, free_port

pytestmark = pytest.mark.gunicorn

LOCUSTFILE = REPO_ROOT / "loadtests" / "locustfile.py"
USERS = "12"  # four per scope
RUN_TIME = "4s"
TIMEOUT = 90  # seconds: far above a run's few, only there so a hang fails
# (scope, title) of each row of the summary: every kind the checker knows, then the run's.
ANOMALIES = {kind.field: (kind.scope, kind.title) for kind in KINDS} | {
    "operations": ("run", "operations"),
    "errors": ("run", "errors"),
    "app_processes": ("run", "app processes seen"),
}


def summary_counts(output: str) -> dict[str, int]:
    """The counts of the correctness summary Locust printed at the end."""
    counts = {}
    for name, (scope, title) in ANOMALIES.items():
        found = re.search(rf"^  {scope} +{title} +(\d+)", output, re.MULTILINE)
        assert found, f"no {title!r} line in:\n{output}"
        counts[name] = int(found[1])
    return counts


def load_generators(output: str) -> dict[str, int]:
    line = re.search(r"by load generator: (.*)$", output, re.MULTILINE)[1]
    return {name: int(n) for name, _, n in (part.rpartition(": ") for part in line.split(", "))}


def headless(url: str, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--host", url]
    command += ["--headless", "--users", USERS, "--spawn-rate", USERS, "--run-time", RUN_TIME]
    command += ["--only-summary", *extra]
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def broken_global(tmp_path_factory):
    var_dir = tmp_path_factory.mktemp("var")
    with AppServer("broken_global", free_port(), env={"VAR_DIR": str(var_dir)}) as server:
        yield server


def test_broken_global_shows_its_anomalies_and_exits_0(broken_global):
    run = headless(broken_global.url)
    assert run.returncode == 0, run.stderr[-3000:]
    counts = summary_counts(run.stdout)
    assert counts["errors"] == 0
    assert counts["app_processes"] == 2
    for name in ("lost_updates", "divergence", "visits_leaked", "greet_leaks"):
        assert counts[name] > 0, name
    assert "as expected: broken_global shows" in run.stdout
    assert re.search(r"^  lost update: worker \d+ returned \d+ twice$", run.stdout, re.MULTILINE)
    # Locust counted the greetings for someone else as failures: the 0 is the verdict's.
    assert "greeting for someone else" in run.stdout + run.stderr


def test_an_app_that_should_be_correct_and_is_not_exits_1(broken_global):
    """The same broken app, judged by fixed_db's rules: the non-zero exit."""
    run = headless(broken_global.url, "--judge-as", "fixed_db")
    assert run.returncode == 1, run.stderr[-3000:]
    assert "Correctness of broken_global judged as fixed_db" in run.stdout
    assert "UNEXPECTED: fixed_db: anomalies in an app that should have none" in run.stdout


def test_fixed_db_is_clean_and_exits_0(isolated_var_dir):
    with AppServer("fixed_db", free_port(), env={"VAR_DIR": str(isolated_var_dir)}) as server:
        run = headless(server.url)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    counts = summary_counts(run.stdout)
    assert counts["operations"] > 500
    assert counts["app_processes"] == 2
    assert counts["errors"] == 0
    assert all(counts[name] == 0 for name in ANOMALIES if ANOMALIES[name][0] != "run"), counts
    assert "as expected: fixed_db shows no anomaly" in run.stdout


def launcher(app: str, log: Path, *args: str) -> subprocess.Popen:
    """python -m loadtests.locust_run, its output (and its children's) in a file."""
    return subprocess.Popen(
        [sys.executable, "-m", "loadtests.locust_run", app, "--app-port", "0", *args],
        cwd=REPO_ROOT,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )


def started_pids(output: str) -> list[int]:
    """The PIDs the launcher says it started: gunicorn, Locust, its workers."""
    gunicorn = re.search(r"\(gunicorn pid (\d+)\)", output)[1]
    locust = re.search(r"^locust pid (\d+)(?:, worker pids ([\d ]+))?$", output, re.MULTILINE)
    workers = locust[2].split() if locust[2] else []
    return [int(pid) for pid in (gunicorn, locust[1], *workers)]


def test_distributed_master_checks_what_both_workers_recorded(isolated_var_dir, tmp_path):
    """fixed_db's final read lies between the acknowledged and the attempted
    increments only if the master has every increment both workers recorded."""
    log = tmp_path / "locust.log"
    options = ["--workers", "2", "--users", USERS, "--headless", "--run-time", RUN_TIME]
    run = launcher("fixed_db", log, *options)
    try:
        assert run.wait(TIMEOUT) == 0, log.read_text()[-3000:]
    finally:
        if run.poll() is None:
            run.send_signal(signal.SIGTERM)  # the launcher stops what it started
            run.wait(TIMEOUT)
    output = log.read_text()
    counts = summary_counts(output)
    generators = load_generators(output)
    workers = {name: n for name, n in generators.items() if name != "reset and final read"}
    assert len(workers) == 2, generators
    assert all(n > 100 for n in workers.values()), generators
    assert sum(generators.values()) == counts["operations"]
    assert generators["reset and final read"] == 2  # so the final read was judged
    assert counts["final_reads_wrong"] == 0
    assert counts["lost_updates"] == counts["divergence"] == counts["errors"] == 0
    assert not [pid for pid in started_pids(output) if pid_alive(pid)]


def wait_for(url: str, seconds: float = 30) -> requests.Response:
    deadline = time.monotonic() + seconds
    while True:
        try:
            return requests.get(url, timeout=2)
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def correctness_rows(ui: str) -> dict[str, dict]:
    stats = requests.get(ui + "/stats/requests", timeout=10).json()
    [table] = [t for t in stats["extended_stats"] if t["key"] == "correctness"]
    return {row["anomaly"]: row for row in table["data"]}


def test_web_ui_tab_counts_live_resets_and_ctrl_c_stops_everything(isolated_var_dir, tmp_path):
    web_port = free_port()
    ui = f"http://127.0.0.1:{web_port}"
    log = tmp_path / "locust.log"
    run = launcher("broken_global", log, "--web-port", str(web_port), "--users", USERS)
    try:
        page = wait_for(ui + "/").text
        template_args = json.loads(re.search(r"window.templateArgs = (.*)", page)[1])
        assert template_args["extended_tabs"] == [{"title": "Correctness", "key": "correctness"}]
        [table] = template_args["extended_tables"]
        assert [column["key"] for column in table["structure"]][:3] == ["scope", "anomaly", "count"]

        swarm = requests.post(ui + "/swarm", data={"user_count": USERS, "spawn_rate": USERS})
        assert swarm.json()["success"], swarm.text
        deadline = time.monotonic() + 20
        while (rows := correctness_rows(ui))["lost updates"]["count"] < 10:
            assert time.monotonic() < deadline, rows
            time.sleep(0.5)
        assert rows["lost updates"]["example"].startswith("lost update: worker")
        assert "increment -> " in rows["lost updates"]["witness"]

        csv_file = requests.get(ui + "/correctness/csv", timeout=10)
        assert csv_file.headers["Content-Type"].startswith("text/csv")
        assert csv_file.text.splitlines()[0] == "scope,anomaly,count,example,witness"
        assert "counter,lost updates," in csv_file.text

        before = requests.get(ui + "/correctness", timeout=10).json()["counts"]["operations"]
        assert requests.post(ui + "/stats/reset", timeout=10).ok
        after = requests.get(ui + "/correctness", timeout=10).json()["counts"]["operations"]
        assert after < before, (before, after)
    finally:
        run.send_signal(signal.SIGINT)  # Ctrl-C
        code = run.wait(TIMEOUT)
    output = log.read_text()
    assert code == 0, output[-3000:]
    assert "Correctness of broken_global" in output  # summed up on the way out
    pids = started_pids(output)
    assert not [pid for pid in pids if pid_alive(pid)], output[-3000:]
