"""A data folder of one harness run's own (var/runs/<tool>-<pid>-<random>/),
made fresh, deleted at the end, and swept when a killed run left one behind.
Why a run needs one: run_folder()'s docstring.
"""

import os
import re
import secrets
import shutil
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from plumbing.config import var_dir
from serve.pids import STOP_TIMEOUT_SECONDS, pid_alive, pids_mentioning

RUNS = "runs"  # under var/: the harness runs' data folders


@contextmanager
def run_folder(tool: str) -> Iterator[Path]:
    """A data folder of one harness run's own, the VAR_DIR of every server it
    starts: var/runs/<tool>-<pid>-<random>/, empty at the start and deleted
    at the end, however the run ends.

    A load test that measures state must start from a known state, and must
    never touch what a user's `make run` serves from var/ itself (the SQLite
    file, Valkey's append-only file and lock, PostgreSQL's cluster, session
    files): the demo once reset a served counter, then stopped at the lock of
    the served Valkey. Nor may two runs at once share a store: each would take
    the other's writes for anomalies. Nothing in the folder is worth keeping:
    results go to var/results/, servers' logs to var/logs/. A folder left by a
    run that was killed (a SIGKILL runs no clean-up) is deleted by the next
    run, once its PID is gone and no process names the folder."""
    runs = var_dir() / RUNS
    runs.mkdir(mode=0o700, exist_ok=True)
    for old in runs.iterdir():
        if abandoned(old):
            remove_run_folder(old)
    folder = runs / f"{tool}-{os.getpid()}-{secrets.token_hex(3)}"
    folder.mkdir(mode=0o700)
    try:
        yield folder
    finally:
        remove_run_folder(folder)


def abandoned(folder: Path) -> bool:
    """A run folder whose run was killed (its PID gone), its servers ended.

    A server of that run may still name the folder: one still shutting down,
    or one the run had paused (SIGSTOP, loadtests/faults/) when
    it was killed, which stays stopped for good: the stop signal the kernel
    sent it when its parent died (serve/pids.py) waits until it runs again.
    They are the dead run's own, found by its folder's unique name: each gets
    SIGKILL, which ends a stopped process too."""
    found = re.fullmatch(r".+-(\d+)-[0-9a-f]+", folder.name)
    if not found or pid_alive(int(found[1])):
        return False
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    while (left := pids_mentioning(str(folder))) and time.monotonic() < deadline:
        for pid in left:
            with suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    return not left


def remove_run_folder(folder: Path) -> None:
    """Delete a run folder, with the PostgreSQL cluster in it, which as root
    lives outside it (serve/postgres.py: EmbeddedPostgres.remove)."""
    if (folder / "postgres").exists():
        from serve.postgres import EmbeddedPostgres  # psycopg: only when there is one

        EmbeddedPostgres(folder / "postgres", synchronous_commit="on").remove()
    shutil.rmtree(folder, ignore_errors=True)
