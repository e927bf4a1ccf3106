"""The exercises' runner, still without the check: its JUnit report read
into a verdict per shape and the smallest witness, `make watch` grading
again on each save (and stopping a check a save interrupts), a grade's
printout kept in the progress, and an unknown EX= as one line.
"""

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from exercises import grading, progress
from exercises.__main__ import print_grade
from exercises.catalog import REPO_ROOT, exercises, resolve
from exercises.grading import (
    Grade,
    read_junit,
    smallest_witness,
    witness_blocks,
)
from exercises.hints import diagnose, hints
from serve.pids import descendants, proc_stat, start_time
from tests.test_exercises import BROKEN

EXERCISES = exercises()


JUNIT = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="loadtests.check" tests="4">
<testcase classname="check" name="hits [flask]">
<failure message="lost update: worker 7 returned 3 twice">
lost update: worker 7 returned 3 twice
  +0.1441s..+0.1503s  u26  increment -> 3  (7-8)
  +0.1442s..+0.1506s  u24  increment -> 3  (7-9)
</failure></testcase>
<testcase classname="check" name="hits [sync]"><failure message="divergence">
divergence: workers 7 and 8 both returned 1
  +0.1442s..+0.1506s  u24  increment -> 1  (7-1)
  +0.1444s..+0.1516s  u05  increment -> 1  (8-1)
  +0.1450s..+0.1520s  u06  increment -> 1  (8-1)
</failure></testcase>
<testcase classname="check" name="hits [restart]">
<skipped message="port 8000 is taken"/></testcase>
<testcase classname="check" name="hits [gevent]"/>
</testsuite></testsuites>
"""


def test_the_junit_report_gives_a_verdict_per_shape_and_the_smallest_witness(tmp_path):
    """The report in issue 22's contract: one testcase per model and shape."""
    (tmp_path / "junit.xml").write_text(JUNIT)
    found = read_junit(tmp_path / "junit.xml", resolve("3"))
    # gevent is not one of exercise 3's shapes: its testcase is left out.
    assert [(r.shape, r.verdict) for r in found] == [
        ("threads", "failed"),
        ("processes", "failed"),
        ("restart", "skipped"),
        ("two-instances", "skipped"),
    ]
    assert found[0].failed_kinds == ("counter",)
    assert found[2].reason == "port 8000 is taken"
    assert found[3].reason == "not in the check's report"
    assert len(witness_blocks(found[1].witness)) == 1
    shape, witness = smallest_witness(found, "")
    assert shape == "threads"
    assert witness.splitlines()[0] == "lost update: worker 7 returned 3 twice"
    assert len(witness.splitlines()) == 3
    assert diagnose(found) == "one-process"


def test_watch_grades_again_within_a_second_of_a_save(tmp_path):
    """Errors in turn, so that no grade reaches the check: each save's grade
    starts within a second, and Ctrl-C stops the watch."""
    ex = resolve("3")
    old, new, _culprit, _ = BROKEN["syntax"]
    (tmp_path / "app.py").write_text(ex.app_file.read_text().replace(old, new, 1))
    watcher = subprocess.Popen(
        [sys.executable, "-m", "exercises", "watch", "3", "--app-dir", str(tmp_path)],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(
        target=lambda: [lines.put(line) for line in watcher.stdout], daemon=True
    ).start()

    def wait_for(text: str, seconds: float) -> float:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                if text in lines.get(timeout=deadline - time.monotonic()):
                    return time.monotonic()
            except queue.Empty:
                break
        raise AssertionError(f"{text!r} not printed within {seconds} s")

    try:
        wait_for("is not valid Python", 30)
        # Several saves, each at some point of the watch's polling: a poll
        # slower than a second would miss one of them.
        for stage in ("import", "syntax", "import", "syntax", "import"):
            old, new, _culprit, says = BROKEN[stage]
            saved = time.monotonic()
            (tmp_path / "app.py").write_text(ex.app_file.read_text().replace(old, new, 1))
            assert wait_for("grading exercise 3", 5) - saved < 1
            wait_for(says, 30)
    finally:
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(timeout=10) == 0


def test_a_grade_prints_each_shape_the_witness_and_one_hint_and_is_kept(capsys, tmp_path):
    ex = resolve("3")
    (tmp_path / "junit.xml").write_text(JUNIT)
    found = read_junit(tmp_path / "junit.xml", ex)
    pattern, given = hints(found, ex.number)
    shape, witness = smallest_witness(found, "")
    graded = Grade(ex, ex.folder, found, pattern, given, f"({shape})\n{witness}")
    assert print_grade(graded) == 1
    shown = capsys.readouterr().out.splitlines()
    assert shown[0] == "Exercise 3: a shared counter (exercises/03_shared_counter/app.py)"
    assert shown[1].split() == ["threads", "failed"]
    assert shown[3].split()[:3] == ["restart", "skipped", "(port"]
    assert "lost update: worker 7 returned 3 twice" in shown
    assert shown[-2].startswith("Hint 1 of 3: Wrong even in one process (threads, processes)")
    assert shown[-1] == "`make hint EX=3` for the next one."
    assert progress.entry(ex.slug)["shapes"]["processes"] == "failed"
    # A copy graded elsewhere (an instructor's --app-dir) is not kept.
    progress.reset()
    assert print_grade(Grade(ex, tmp_path, found, pattern, given), keep=False) == 1
    assert progress.entry(ex.slug) == {}


def test_an_unknown_ex_is_one_line_and_exit_code_2():
    done = subprocess.run(
        [sys.executable, "-m", "exercises", "grade", "nothing_like_it"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("EX='nothing_like_it' names no exercise; give a number or a name")


SLOW_PROGRAM = """
import signal, sys, time
if sys.argv[1] == "deaf":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
print("started", flush=True)
try:
    time.sleep(60)
except KeyboardInterrupt:
    print("stopped its servers", flush=True)
"""


@pytest.mark.parametrize("hears", [True, False], ids=["ctrl-c", "deaf"])
def test_a_save_during_the_check_stops_it_as_ctrl_c_would(hears, tmp_path, monkeypatch):
    monkeypatch.setattr(grading, "STOP_SECONDS", 1)
    out = tmp_path / "check.txt"
    asked = time.monotonic()
    command = [sys.executable, "-c", SLOW_PROGRAM, "hears" if hears else "deaf"]
    with pytest.raises(grading.Interrupted):  # saved once the check has started
        grading.run(command, out, interrupted=lambda: "started" in out.read_text())
    assert time.monotonic() - asked < 10
    said = out.read_text()
    assert said.startswith("started")
    assert ("stopped its servers" in said) == hears  # a deaf one is killed


def test_ctrl_c_in_make_grade_while_the_store_is_paused_leaves_nothing_running():
    # Ctrl-C in a terminal reaches the grade and the check it runs. The grade
    # used to SIGKILL the check in the middle of its own clean-up, and the
    # Valkey it had paused stayed stopped for good (a SIGSTOPped process
    # cannot act on its parent-death SIGTERM); and the grade printed a traceback.
    # A second Ctrl-C (or the grade's own SIGINT to a check slow to stop) cut
    # the check's clean-up short, and its other shape's gunicorn outlived it.
    grade = subprocess.Popen(
        [sys.executable, "-m", "exercises", "grade", "8"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group, as a terminal's foreground job is
    )
    try:
        deadline = time.monotonic() + 60
        while not any((proc_stat(pid) or "?")[0] == "T" for pid, _ in descendants(grade.pid)):
            assert grade.poll() is None, grade.communicate()
            assert time.monotonic() < deadline, "the store was never paused"
            time.sleep(0.01)
        started = descendants(grade.pid)  # the check, Valkey, gunicorn's master and workers
        os.killpg(grade.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
        time.sleep(0.3)
        if grade.poll() is None:
            os.killpg(grade.pid, signal.SIGINT)  # and an impatient second one
        out, err = grade.communicate(timeout=60)
    finally:
        if grade.poll() is None:
            os.killpg(grade.pid, signal.SIGKILL)
            grade.wait()
    assert len(started) >= 5
    assert [pid for pid, began in started if start_time(pid) == began] == []
    assert "Traceback" not in err, err
    assert grade.returncode == 130, out + err


def test_the_grade_bench_times_a_starting_app_and_its_fix_and_leaves_progress_alone(
    isolated_var_dir,
):
    done = subprocess.run(
        [sys.executable, "-m", "exercises.bench", "7"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    [row] = [line for line in done.stdout.splitlines() if line.startswith("07_two_tabs")]
    start, fix = (float(seconds) for seconds in re.findall(r"(\d+\.\d) s", row))
    assert 0 < start < 300 and 0 < fix < 300, row
    assert not (isolated_var_dir / "practice.json").exists()  # the learner's progress untouched
