"""fixed_db under real gunicorn (2 workers x 4 threads, on a free port): over
5,000 concurrent operations with no anomaly, one user's concurrent appends
all kept, and workers booting at once on a new SQLite file all coming up.
Its contract is in test_contract.py, its keys in test_idempotency.py, the
same on PostgreSQL in test_fixed_db_postgres*.py.
"""

import multiprocessing
import sqlite3
from contextlib import closing

import pytest
import requests

from fixed_db.sqlite import SQLiteDatabase
from loadtests.judge.checker import check
from loadtests.runs.hammer import run_scenarios
from tests.conftest import serve

pytestmark = pytest.mark.gunicorn


def test_fixed_db_loses_nothing_over_5000_operations(isolated_var_dir):
    with serve("fixed_db", isolated_var_dir) as server:
        history = run_scenarios(server.url, users=40, ops=42, workers=server.workers())
        final = requests.get(server.url + "/counter", timeout=5).json()["value"]
    verdict = check(history)
    assert verdict.operations >= 5000
    assert {e.op for e in history} >= {"increment", "add_visit", "list_visits", "greet"}
    assert verdict.errors == 0
    assert verdict.workers == 2  # both processes served, and agreed
    assert verdict.anomalies == 0, verdict.examples
    assert final == 40 * 42  # every increment counted, once


BOOT_ROUNDS = 60


def _boot_rounds(folder, together, failures) -> None:
    """A worker's start-up, BOOT_ROUNDS times: at the barrier, prepare the
    round's new file, as every worker's create_app does."""
    for round_number in range(BOOT_ROUNDS):
        together.wait(timeout=30)
        try:
            SQLiteDatabase(folder / f"new-{round_number}.db").prepare()
        except sqlite3.Error as error:
            failures.put(f"round {round_number}: {error!r}")


def test_fixed_db_workers_booting_at_once_on_a_new_file_all_come_up(tmp_path):
    """Eight processes prepare one new SQLite file at a barrier, 60 times. The
    switch to WAL used to fail at once with "database is locked" in about one
    round of six (see SQLiteDatabase.use_wal), and then the worker failed to boot.
    Forked, as gunicorn forks its workers."""
    fork = multiprocessing.get_context("fork")
    together, failures = fork.Barrier(8), fork.Queue()
    workers = [
        fork.Process(target=_boot_rounds, args=(tmp_path, together, failures)) for _ in range(8)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0] * 8
    assert failures.empty(), failures.get()
    for round_number in range(BOOT_ROUNDS):
        with closing(sqlite3.connect(tmp_path / f"new-{round_number}.db")) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_fixed_db_keeps_one_users_concurrent_appends(isolated_var_dir):
    with serve("fixed_db", isolated_var_dir) as server:
        verdict = check(
            run_scenarios(server.url, users=16, scopes=("tabs",), workers=server.workers())
        )
    assert verdict.errors == 0
    assert verdict.anomalies == 0, verdict.examples
