"""Faults under load, for real: fixed_cache's Valkey and fixed_db's PostgreSQL
stopped while writes are in flight, under real gunicorn, with users retrying
around them.

The double apply is certain, not lucky: the store is stopped first (SIGSTOP),
then eight writes are sent; each waits in the stopped store's socket until
the app gives up and answers 503 "unknown" (or, on PostgreSQL without a
deadline, the client's own timeout). Only once every first try has failed is
the store resumed: it runs what it queued, so each write was applied though
none was acknowledged. With an Idempotency-Key the retry gets the first
answer back and changes nothing; without one it applies the write again
(loadtests/faults/inject.py WritesInFlight, inject_postgres.py). A write
that reaches a worker whose breaker three others opened is refused, "not
applied", and applied once by its retry: each write is checked by what it
was told. The keyed PostgreSQL run also takes a pause, a crashed backend and
the server killed and started again (loadtests/README.md, Faults).
"""

import pytest

from loadtests.clients.client import Client, Retry
from loadtests.faults.run import Run
from loadtests.faults.schedules import WRITES_IN_FLIGHT, Planned
from loadtests.judge.history import NOT_APPLIED, UNKNOWN, WRITES
from tests.postgres_fixtures import unavailable

pytestmark = pytest.mark.gunicorn

SECONDS = 3.0  # of load around the stopped store
USERS = 4
POSTGRES_SECONDS = 6.0  # of load around PostgreSQL's four faults


THREADS = 2 * 4  # the shared config's: a write in flight for each app thread


@pytest.fixture
def fixed_db_on_postgres(template, monkeypatch):
    """FIXED_DB_BACKEND=postgres: each Run's AppServer starts its embedded
    server in the run's own folder (serve/runs.py), by initdb, as `make faults
    DB=postgres` does; a cluster made anywhere else beforehand would go unused.
    The session's template (tests/postgres_fixtures.py), shared with the other
    PostgreSQL tests, says whether the server can start here: skipped if it
    cannot, except in CI, where it fails."""
    if isinstance(template, Exception):
        unavailable(f"{type(template).__name__}: {template}")
    monkeypatch.setenv("FIXED_DB_BACKEND", "postgres")


IN_FLIGHT_PLAN = (Planned(0.3, WRITES_IN_FLIGHT),)


def writes_since(run: Run, fault):
    """The writers' writes (all their tries) from the moment the store was stopped."""
    return [
        e
        for e in run.history
        if e.user.startswith("w") and e.op in WRITES and e.start >= run.origin + fault.at
    ]


def run_with_writes_in_flight(keys: bool):
    run = Run("fixed_cache", keys, seconds=SECONDS, users=USERS)
    verdict = run.go(IN_FLIGHT_PLAN)
    [fault] = run.faults
    assert f"{THREADS} sent to stopped valkey" in fault.detail, fault
    assert f"{THREADS} answered before it resumed" in fault.detail, fault
    return run, verdict, writes_since(run, fault)


def first_tries(in_flight):
    return [e for e in in_flight if e.attempt == 1]


def sent(firsts, workers: int = 2):
    """The first tries that reached the stopped store, with outcome "unknown"
    (a 503, or no answer); the others were refused by a worker's open
    breaker (503 "not applied"). At least three per worker are sent."""
    assert all(e.status in (0, 503) and e.outcome in (UNKNOWN, NOT_APPLIED) for e in firsts)
    refused = [e for e in firsts if e.status == 503 and e.outcome == NOT_APPLIED]
    assert len(refused) <= workers, refused  # one at most of a worker's four
    return [e for e in firsts if e not in refused]


def test_keyed_retries_apply_every_write_once_though_the_store_stopped_mid_write():
    run, verdict, in_flight = run_with_writes_in_flight(keys=True)
    firsts = first_tries(in_flight)
    assert len(firsts) == THREADS
    assert all(e.status == 503 and e.outcome == UNKNOWN for e in sent(firsts)), firsts
    assert all(any(e.ok for e in in_flight if e.key == f.key) for f in firsts)  # retried to a yes
    assert verdict.writes_applied_twice == 0, verdict.examples
    assert verdict.writes_lost == 0, verdict.examples
    assert run.problems(verdict) == [], verdict.examples


def test_naive_retries_without_keys_apply_the_writes_in_flight_twice():
    run, verdict, in_flight = run_with_writes_in_flight(keys=False)
    firsts = first_tries(in_flight)
    assert len(firsts) == THREADS
    assert all(e.status == 503 and e.outcome == UNKNOWN for e in sent(firsts)), firsts
    assert_each_applied_twice(run, verdict, sent(firsts))


def assert_each_applied_twice(run: Run, verdict, firsts) -> None:
    """Each write sent into the stopped store (its first try) was applied, and
    again by its retry."""
    appends = sum(e.op == "add_visit" for e in firsts)
    increments = sum(e.op == "increment" for e in firsts)
    assert appends and increments
    # Every append in flight is in its writer's list twice.
    assert verdict.visits_duplicated >= appends, verdict.examples
    # Every increment in flight counted twice, less any ambiguous request that
    # widened the bound (one that never got an answer may not have landed).
    assert verdict.applied_twice + verdict.ambiguous >= increments, verdict.examples
    assert verdict.applied_twice > 0
    assert verdict.writes_lost == 0, verdict.examples
    assert run.problems(verdict) == []  # the double count is what this run expects


def assert_in_flight_on_postgres(run: Run, fault, outcomes: set[str]):
    """Every app thread had a write in flight when the server stopped, and each
    first try failed: no answer, or a 503, with one of these outcomes."""
    assert f"{THREADS} sent to stopped postgres" in fault.detail, fault
    assert f"{THREADS} failed before it resumed" in fault.detail, fault
    in_flight = writes_since(run, fault)
    firsts = first_tries(in_flight)
    assert len(firsts) == THREADS
    assert all(e.status in (0, 503) and e.outcome in outcomes for e in firsts), firsts
    return in_flight, firsts


def test_fixed_db_on_postgresql_applies_every_keyed_write_once_through_its_faults(
    fixed_db_on_postgres,
):
    run = Run("fixed_db", keys=True, seconds=POSTGRES_SECONDS, users=USERS)
    verdict = run.go()  # the schedule of a run on PostgreSQL: its four faults
    assert [f.name for f in run.faults] == [
        "writes in flight",
        "pause store",
        "crash backend",
        "kill store",
    ], run.faults
    # A keyed write's first statement is its BEGIN: one the app gave up on
    # committed nothing, and the app may say so.
    in_flight, firsts = assert_in_flight_on_postgres(run, run.faults[0], {UNKNOWN, NOT_APPLIED})
    assert all(any(e.ok for e in in_flight if e.key == f.key) for f in firsts)  # retried to a yes
    assert "SIGSTOP postgres" in run.faults[1].detail
    assert "SIGKILL backend" in run.faults[2].detail, run.faults[2]  # one was there to crash
    assert "restarted as" in run.faults[3].detail
    assert verdict.writes_applied_twice == 0, verdict.examples
    assert verdict.writes_lost == 0, verdict.examples
    assert run.problems(verdict) == [], verdict.examples


def test_naive_retries_on_postgresql_apply_the_writes_in_flight_twice(fixed_db_on_postgres):
    run = Run("fixed_db", keys=False, seconds=SECONDS, users=USERS)
    verdict = run.go(IN_FLIGHT_PLAN)
    [fault] = run.faults
    # Without a key a write is one autocommit statement, its own commit: the
    # server ran each one when it resumed, and each retry ran it again.
    _, firsts = assert_in_flight_on_postgres(run, fault, {UNKNOWN, NOT_APPLIED})
    assert all(e.outcome == UNKNOWN for e in sent(firsts)), firsts
    assert_each_applied_twice(run, verdict, sent(firsts))


def test_a_client_that_retries_must_record_every_try():
    with pytest.raises(ValueError, match="record"):
        Client("http://127.0.0.1:1", "u", retry=Retry())
