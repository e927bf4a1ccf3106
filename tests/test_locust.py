"""Locust against real gunicorn: the correctness summary, the exit code, the
Correctness tab and the reports, a master that checks what two workers
recorded, and the Tally that judges a run as it goes: the checker's verdict
on the same recorded history, in bounded memory.

Every process (gunicorn, Locust, its workers) runs on free ports on
127.0.0.1, started and stopped by PID, for a few seconds. Each run holds
hundreds of overlapping requests per scope, so broken_global's anomalies are
certain, not lucky (as in test_concurrency.py).
"""

import copy
import csv
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

from loadtests.judge import tally, tally_counter
from loadtests.judge.checker import check
from loadtests.judge.compact import compact, from_wire
from loadtests.judge.history import Event
from loadtests.judge.tally import Tally, gate
from loadtests.judge.verdict import KIND, KINDS, Verdict
from plumbing.config import REPO_ROOT
from serve.pids import pid_alive
from serve.processes import AppServer, free_port

pytestmark = pytest.mark.gunicorn

LOCUSTFILE = REPO_ROOT / "loadtests" / "swarm" / "locustfile.py"
USERS = "12"  # four per scope
RUN_TIME = "4s"
TIMEOUT = 90  # seconds: far above a run's few, only there so a hang fails
# (scope, title) of each row of the summary: every kind the checker knows, then the run's.
ANOMALIES = {kind.field: (kind.scope, kind.title) for kind in KINDS} | {
    "operations": ("run", "operations"),
    "errors": ("run", "app errors"),
    "no_answer": ("run", "no answer (unknown outcome)"),
    "app_processes": ("run", "app processes seen"),
}
HARNESS = "master: resets and reads"


def summary_counts(output: str) -> dict[str, int]:
    """The counts of the correctness summary Locust printed at the end."""
    counts = {}
    for name, (scope, title) in ANOMALIES.items():
        found = re.search(rf"^  {scope} +{re.escape(title)} +(\d+)", output, re.MULTILINE)
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


@pytest.fixture(scope="module")
def broken_run(broken_global, tmp_path_factory):
    """One headless run against broken_global: its output, and its files (the
    recorded history, --csv's and --html's)."""
    out = tmp_path_factory.mktemp("run")
    files = ["--correctness-history", str(out / "history.jsonl")]
    files += ["--csv", str(out / "run"), "--html", str(out / "report.html")]
    return headless(broken_global.url, *files), out


def test_broken_global_shows_its_anomalies_and_exits_0(broken_run):
    run, _ = broken_run
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


def recorded_units(path: Path) -> list[tuple[str, list[Event]]]:
    """The last test's units, as --correctness-history wrote them."""
    units: list[tuple[str, list[Event]]] = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if "epoch" in record:
            units = []  # a new test starts a new history
        else:
            units.append((record["source"], from_wire(record["unit"])))
    return units


def test_the_tally_gives_the_checkers_verdict_on_the_recorded_run(broken_run):
    """Judged as it arrived, unit by unit, in bounded memory, the run gets the
    verdict loadtests.judge.checker.check gives its whole history at once."""
    run, out = broken_run
    units = recorded_units(out / "history.jsonl")
    judged = Tally()
    for source, unit in units:
        judged.add([unit], source)
    expected = check([event for _, unit in units for event in unit]).counts()
    assert judged.verdict().counts() == expected
    printed = summary_counts(run.stdout)  # what Locust's own Tally said at the end
    assert {name: printed[name] for name in KIND} == {name: expected[name] for name in KIND}
    assert printed["operations"] == expected["operations"]
    assert expected["lost_updates"] and expected["visits_leaked"] and expected["greet_leaks"]


def test_the_reports_carry_the_correctness(broken_run):
    _, out = broken_run
    html = (out / "report.html").read_text()
    assert 'id="correctness"' in html and "<svg" in html  # Locust's report, with ours
    assert "as expected: broken_global shows" in html
    with (out / "run_correctness.csv").open() as f:
        table = list(csv.DictReader(f))
    assert table[0]["anomaly"] == "verdict"
    assert {row["anomaly"] for row in table} >= {kind.title for kind in KINDS}
    with (out / "run_correctness_history.csv").open() as f:
        series = list(csv.DictReader(f))
    assert int(series[-1]["counter"]) > 0 and int(series[-1]["operations"]) > 0


def test_an_app_that_should_be_correct_and_is_not_exits_1(broken_global):
    """The same broken app, judged by fixed_db's rules: the non-zero exit."""
    run = headless(broken_global.url, "--judge-as", "fixed_db")
    assert run.returncode == 1, run.stderr[-3000:]
    assert "Correctness of broken_global judged as fixed_db" in run.stdout
    assert "UNEXPECTED: fixed_db: anomalies in an app that should have none: " in run.stdout
    # "N title, N title": the kinds this run showed, each with its count, no dict.
    # Which kinds a 4-second run shows varies: one fresh-clone run had no lost update.
    shown = run.stdout.split("should have none: ")[1].splitlines()[0]
    counted = [re.fullmatch(r"(\d+) (.+)", item) for item in shown.split(", ")]
    assert all(counted), shown
    assert {m[2] for m in counted} <= {kind.title for kind in KINDS}, shown
    assert all(int(m[1]) > 0 for m in counted), shown


def test_fixed_db_is_clean_and_exits_0(isolated_var_dir):
    with AppServer("fixed_db", free_port(), env={"VAR_DIR": str(isolated_var_dir)}) as server:
        run = headless(server.url)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    counts = summary_counts(run.stdout)
    assert counts["operations"] > 200  # hundreds, even where the machine is busy
    assert counts["app_processes"] == 2
    assert counts["errors"] == 0
    assert all(counts[name] == 0 for name in ANOMALIES if ANOMALIES[name][0] != "run"), counts
    assert "as expected: fixed_db shows no anomaly" in run.stdout


def launcher(app: str, log: Path, *args: str) -> subprocess.Popen:
    """python -m loadtests.swarm.locust_run, its output (and its children's) in a file."""
    return subprocess.Popen(
        [sys.executable, "-m", "loadtests.swarm.locust_run", app, "--app-port", "0", *args],
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
    workers = {name: n for name, n in generators.items() if name != HARNESS}
    assert len(workers) == 2, generators
    assert all(n > 100 for n in workers.values()), generators
    assert sum(generators.values()) == counts["operations"]
    assert generators[HARNESS] >= 3  # a reset, reads before and after
    assert counts["final_reads_wrong"] == 0  # a number, not n/a: the final read was judged
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
        assert 'src="/correctness/tab.js"' in page  # the verdict's colour and the chart
        assert "correctness-verdict" in requests.get(ui + "/correctness/tab.js", timeout=10).text

        # Before any test: nothing to judge, and nothing said to be wrong.
        idle = requests.get(ui + "/correctness", timeout=10).json()
        assert (idle["status"], idle["verdict"]) == ("none", "no test yet: press Start")
        assert idle["rows"][0]["anomaly"] == "verdict"

        swarm = requests.post(ui + "/swarm", data={"user_count": USERS, "spawn_rate": USERS})
        assert swarm.json()["success"], swarm.text
        deadline = time.monotonic() + 20
        while (rows := correctness_rows(ui))["lost updates"]["count"] < 10:
            assert time.monotonic() < deadline, rows
            time.sleep(0.5)
        assert rows["lost updates"]["example"].startswith("lost update: worker")
        assert "increment -> " in rows["lost updates"]["witness"]
        assert rows["verdict"]["example"].startswith("as expected: broken_global shows")
        assert rows["final read wrong"]["count"] == "n/a"  # judged when the test stops
        assert "when the test stops" in rows["final read wrong"]["example"]
        live = requests.get(ui + "/correctness", timeout=10).json()
        assert (live["status"], live["rows"][0]["anomaly"]) == ("lesson", "verdict")
        link = next(t["href"] for t in live["timelines"] if t["kind"] == "lost update")
        drawn = requests.get(ui + link.partition("#")[0], timeout=10).text
        assert '"kind":"lost update"' in drawn and "increment → " in drawn  # its witness, drawn

        chart = requests.get(ui + "/correctness/chart.svg", timeout=10)
        assert chart.headers["Content-Type"].startswith("image/svg+xml")
        assert chart.text.startswith("<svg") and "counter" in chart.text
        report = requests.get(ui + "/stats/report", timeout=10).text
        assert 'id="correctness"' in report and "as expected: broken_global shows" in report
        history = requests.get(ui + "/correctness/history.csv", timeout=10).text
        assert history.splitlines()[0] == "seconds,counter,visits,tabs,greet,operations"

        csv_file = requests.get(ui + "/correctness/csv", timeout=10)
        assert csv_file.headers["Content-Type"].startswith("text/csv")
        assert csv_file.text.splitlines()[0] == "scope,anomaly,count,example,witness"
        assert "counter,lost updates," in csv_file.text

        before = requests.get(ui + "/correctness", timeout=10).json()["counts"]["operations"]
        assert requests.post(ui + "/stats/reset", timeout=10).ok
        after = requests.get(ui + "/correctness", timeout=10).json()["counts"]["operations"]
        assert after < before, (before, after)
        # Users keep running through a Reset: no baseline, so no final read to judge.
        assert "no reset since Reset Stats" in correctness_rows(ui)["final read wrong"]["example"]
    finally:
        run.send_signal(signal.SIGINT)  # Ctrl-C
        code = run.wait(TIMEOUT)
    output = log.read_text()
    assert code == 0, output[-3000:]
    assert "Correctness of broken_global" in output  # summed up on the way out
    pids = started_pids(output)
    assert not [pid for pid in pids if pid_alive(pid)], output[-3000:]


# -- the Tally and the gate, on hand-built histories --------------------------------


def answer(op, user, start, value, worker="100-1", arg=None, status=200, key=""):
    return Event(op, user, arg, start, start + 0.1, status, value, worker, key=key)


def test_compacted_answers_get_the_same_verdict_as_whole_ones():
    history = [
        answer("add_visit", "a", 0.0, ["x/9", "a/0"], arg="a/0", status=201),  # x/9: nobody's
        answer("add_visit", "b", 0.1, ["b/0"], "100-2", arg="b/0", status=201),
        answer("add_visit", "a", 0.2, ["a/0", "a/1", "b/0"], arg="a/1", status=201),
        answer("list_visits", "a", 0.4, ["b/0", "a/0", "b/1", "a/0"]),  # a/1 lost, a/0 twice
        answer("list_visits", "b", 0.4, ["b/0"], "100-2"),
    ]
    whole = check(copy.deepcopy(history))
    cut = check([compact(event) for event in copy.deepcopy(history)])
    assert cut.counts() == whole.counts()
    assert (whole.visits_leaked, whole.visits_lost, whole.visits_duplicated) == (3, 1, 1)
    assert [a.summary for a in cut.examples] == [a.summary for a in whole.examples]
    assert "missing from 4 visits" in " ".join(a.summary for a in cut.examples)


def test_a_reset_that_reaches_one_process_is_judged_from_each_processs_baseline():
    """broken_global's reset reaches the process that answers it; the other
    counts on from 100. Judged from where each process started, its values
    repeat the first one's (divergence) and its final read is short (lost),
    not 97 increments applied twice."""
    start = [
        answer("reset", "master", 0.0, 0),
        answer("read", "master", 0.2, 0),
        answer("read", "master", 0.2, 100, "200-1"),
    ]
    increments = [answer("increment", "c", 1 + n / 10, n + 1, key=f"k{n}") for n in range(3)]
    increments += [
        answer("increment", "d", 1 + n / 10, 101 + n, "200-1", key=f"j{n}") for n in range(2)
    ]
    finals = [answer("read", "master", 3.0, 3), answer("read", "master", 3.0, 102, "200-1")]
    verdict = check([*start, *increments, *finals])
    assert (verdict.divergence, verdict.lost_updates, verdict.applied_twice) == (2, 0, 0)
    assert (verdict.final_reads_wrong, verdict.acknowledged_lost) == (2, 3)
    judged = Tally()
    judged.add([start, *([e] for e in increments), finals], "test")
    assert judged.verdict().counts() == verdict.counts()


def test_the_tally_keeps_bounded_state_however_long_the_run():
    """30,000 increments, visitors and greetings: what the Tally keeps is
    bounded by its windows, and by a byte per counter value."""
    judged = Tally()
    history = [answer("reset", "master", 0.0, 0)]
    judged.add([history[:]], "test")
    for n in range(30_000):
        worker, token, name = f"{100 + n % 2}-1", f"v{n}/0", f"g{n % 50}"
        units = [
            [answer("increment", "c", 1 + n, n + 1, worker, key=f"i{n}")],
            [answer("greet", name, 1 + n, f"Hello, {name}!", arg=name)],
            [
                answer("add_visit", f"v{n}", 1 + n, [token], worker, arg=token, status=201),
                answer("list_visits", f"v{n}", 1.5 + n, [token], worker),
            ],
        ]
        judged.add(units, "test")
        history += [event for unit in units for event in unit]
        judged.sample(force=True)
    final = [answer("read", "master", 40_000.0, 30_000)]
    judged.add([final], "test")
    assert judged.verdict().counts() == check([*history, *final]).counts()
    assert judged.verdict().anomalies == 0
    assert len(judged.appends) <= tally.WINDOW
    assert len(judged.greets) <= tally.WINDOW
    assert len(judged.counter.recent) <= tally_counter.WINDOW
    assert len(judged.counter.marks) <= tally_counter.MARKS
    assert len(judged.series) <= tally.SERIES_POINTS
    assert len(judged.counter.seen.pages) == -(-30_001 // tally_counter.PAGE)  # a byte per value


def test_requests_that_got_no_answer_fail_nothing():
    """Their outcome is unknown and the transport's doing; an error the app
    answered does fail a fixed app's run."""
    assert gate("fixed_db", Verdict(operations=100, errors=3, no_answer=3), frozenset()) == []
    failed = Verdict(operations=100, errors=4, no_answer=3)
    assert gate("fixed_db", failed, frozenset()) == ["fixed_db: 1 requests failed"]
    assert gate("fixed_db", Verdict(), frozenset()) == ["no operation was recorded"]
