"""Ctrl-C at any moment of a launcher's start-up leaves nothing running.

A user presses Ctrl-C while `python -m serve APP` is still starting: the
terminal sends SIGINT to the launcher's process group. Whatever it had
started by then (the store's server, gunicorn and its workers) must be gone
soon after, and the launcher with them. A Ctrl-C lands at one moment, and the
moments that once left everything running (the launcher swallowed the
KeyboardInterrupt while Python ran its fork handlers for a server it was
starting) last a millisecond or two: so each store's start-up is swept from
its first server process on, in small steps shifted by a random offset each
run, and seen only as a user sees it: signals, and /proc.
"""

import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from plumbing.config import REPO_ROOT
from serve.pids import (
    INTERRUPTED,
    free_port,
    join_all,
    pids_mentioning,
    remember_interrupts,
    spawn,
    stop_process,
)
from tests.conftest import launch

pytestmark = pytest.mark.gunicorn

STEP_SECONDS = 0.002
# From the launcher's first child to past its last spawn, per store: Valkey
# and then gunicorn, or gunicorn alone.
SWEEPS = {
    "fixed_cache": ("fixed_cache", {}, 0.120),
    "fixed_db-sqlite": ("fixed_db", {"FIXED_DB_BACKEND": "sqlite"}, 0.040),
    "broken_global": ("broken_global", {}, 0.040),
}
AT_ONCE = 3  # launchers tried side by side, each with its own folder and port
GONE_SECONDS = 15.0  # for the launcher and its servers to exit after the signal, on a busy machine


def first_child(launcher: subprocess.Popen, deadline: float) -> bool:
    """Wait until the launcher has forked its first child: a server being
    started (/proc/PID/task/PID/children, Linux 3.5+, lists them at once)."""
    # Read again and again through one open file: opening it each time cost
    # most of the wait's CPU, with three launchers watched at once.
    try:
        children = os.open(f"/proc/{launcher.pid}/task/{launcher.pid}/children", os.O_RDONLY)
    except OSError:
        return False  # gone already
    try:
        while launcher.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if os.pread(children, 64, 0).strip():
                    return True
            time.sleep(0.0002)
        return False
    finally:
        os.close(children)


def left_after_ctrl_c(app: str, env: dict[str, str], var: Path, moment: float) -> list[str]:
    """Start the launcher, Ctrl-C it `moment` seconds after its first child
    appears; what still runs GONE_SECONDS later, as "pid program (state)",
    with the Python stacks of those that are Python."""
    # faulthandler: SIGABRT makes a Python process print every thread's stack.
    env = {**env, "VAR_DIR": str(var), "PYTHONFAULTHANDLER": "1"}
    var.mkdir(parents=True)
    errors = var / "stderr.txt"
    with errors.open("w") as stderr:
        launcher = launch(
            app, free_port(), env, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True
        )
    try:
        if not first_child(launcher, time.monotonic() + 60):
            said = errors.read_text()[-2000:]
            return [f"the launcher started no server (exit code {launcher.poll()}): {said}"]
        time.sleep(moment)
        os.killpg(launcher.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
        deadline = time.monotonic() + GONE_SECONDS
        # The launcher's exit first, as a cheap wait: a scan of /proc reads
        # every process's environment, and three sweeps scanning every few
        # milliseconds were most of this test's own CPU.
        with contextlib.suppress(subprocess.TimeoutExpired):
            launcher.wait(GONE_SECONDS)
        while True:
            left = pids_mentioning(str(var))  # the launcher too: VAR_DIR is in its environment
            if not left and launcher.poll() is not None:
                return []
            if time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        found = [f"{pid} {program(pid)} ({state(pid)})" for pid in left] or ["the launcher"]
        return found + stacks_of([pid for pid in left if program(pid).startswith("python")], errors)
    finally:
        for pid in [launcher.pid, *pids_mentioning(str(var))]:  # never leave one running
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        launcher.wait()


def program(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def state(pid: int) -> str:
    """Its state and the kernel function it waits in, from /proc."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        wchan = Path(f"/proc/{pid}/wchan").read_text().strip()
    except OSError:
        return "gone"
    [line] = [line for line in status.splitlines() if line.startswith("State:")]
    return f"{line.split(None, 1)[1]}, waiting in {wchan or '-'}"


def stacks_of(pids: list[int], errors: Path) -> list[str]:
    """Each Python process's threads, as faulthandler prints them on SIGABRT."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGABRT)
    time.sleep(1.0)
    return [errors.read_text()[-6000:]] if pids else []


@pytest.mark.parametrize("store", SWEEPS)
def test_ctrl_c_at_any_moment_of_start_up_leaves_nothing_running(store, tmp_path):
    app, env, span = SWEEPS[store]
    offset = random.uniform(0, STEP_SECONDS)
    moments = [offset + STEP_SECONDS * i for i in range(int(span / STEP_SECONDS))]
    with ThreadPoolExecutor(AT_ONCE) as pool:
        results = pool.map(
            lambda i: left_after_ctrl_c(app, env, tmp_path / f"var-{i}", moments[i]),
            range(len(moments)),
        )
        failed = {
            f"{m * 1000:.1f} ms": left for m, left in zip(moments, results, strict=True) if left
        }
    assert not failed, f"{len(failed)} of {len(moments)} moments left processes: {failed}"


def test_a_ctrl_c_that_leaves_popens_lock_taken_still_lets_the_server_be_stopped():
    # A moment the sweep above found with the suite in four processes: the
    # KeyboardInterrupt landed just after Popen.poll() took the lock it reaps
    # under, before its `try`, and the lock stayed taken; the launcher's
    # clean-up then waited in Popen.wait() forever. Here it is taken on purpose.
    process = spawn(["sleep", "30"])
    process._waitpid_lock.acquire()  # what the interrupted poll() left behind
    stopping = threading.Thread(target=stop_process, args=(process,), daemon=True)
    stopping.start()
    stopping.join(GONE_SECONDS)
    assert not stopping.is_alive(), "stop_process waits on Popen's lock forever"
    assert process.returncode == -signal.SIGTERM


def test_the_ctrl_c_tests_hold_when_the_suite_starts_with_sigint_ignored():
    # A suite run as a background job of a script inherits SIGINT ignored, and
    # its launchers did too: every Ctrl-C test failed. conftest restores it.
    test = "tests/test_serve.py::test_ctrl_c_during_start_up_leaves_nothing_running[0]"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    assert run.returncode == 0, run.stdout[-2000:]


DROPPED_CTRL_C = """
import signal, sys
from serve.launching import launcher
from serve.pids import spawn

class Finalized:
    def __del__(self):
        signal.raise_signal(signal.SIGINT)  # Ctrl-C while a finalizer runs: Python drops it

@launcher
def main():
    Finalized()
    process = spawn(["sleep", "30"])
    print("started", process.pid, flush=True)
    process.kill()
    return 0

sys.exit(main())
"""


def test_a_ctrl_c_python_drops_in_a_finalizer_still_stops_the_launcher():
    # The 1-in-60 moment of the sweep above: the KeyboardInterrupt came while
    # a ZipFile's __del__ ran, Python printed "Exception ignored" and went on,
    # and the launcher started gunicorn and served. Here it comes in a
    # finalizer every time, just before the launcher's next spawn.
    done = subprocess.run(
        [sys.executable, "-c", DROPPED_CTRL_C], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert "Exception ignored" in done.stderr  # Python did drop it
    assert "started" not in done.stdout, done.stdout + done.stderr
    assert done.returncode == 130, done.stdout + done.stderr


class DropsACtrlC:
    def __del__(self):
        signal.raise_signal(signal.SIGINT)  # Ctrl-C while a finalizer runs: Python drops it


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_ctrl_c_python_drops_while_threads_run_still_ends_the_wait_for_them():
    # faults.stall, sent SIGTERM at its start, ran its 30 s of load to the
    # end (2 of 4 runs of test_launchers' SIGTERM test): the KeyboardInterrupt
    # was dropped, and join() waited the load's threads out.
    release = threading.Event()
    load = threading.Thread(target=release.wait, args=(30,), daemon=True)
    load.start()
    undo = remember_interrupts()
    try:
        DropsACtrlC()
        assert INTERRUPTED.is_set()  # dropped, but remembered
        with pytest.raises(KeyboardInterrupt):
            join_all([load])
        assert load.is_alive()  # the wait ended, not the load
    finally:
        undo()
        release.set()
        load.join()
