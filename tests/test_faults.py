"""Faults under load, for real: fixed_cache's Valkey stopped while writes are
in flight, under real gunicorn, with users retrying around it.

The double apply is certain, not lucky: the store is stopped first (SIGSTOP),
then eight writes are sent; each reaches the app, whose command waits in the
stopped store's socket until the app gives up and answers 503 "unknown".
Only once all eight have that answer is the store resumed: it runs the
queued commands, so each write was applied though none was acknowledged.
Then the clients retry. With an Idempotency-Key the retry must get the first
answer back and change nothing; without one it applies the write again.
(loadtests/inject.py, WritesInFlight.)

These need fixed_cache to keep the contract of plumbing/idempotency.py: a
write whose outcome the app cannot know is a 503 with "outcome": "unknown",
and a key sent again replays the first answer.
"""

import pytest

from loadtests.client import Client, Retry
from loadtests.faults import Run
from loadtests.history import UNKNOWN, WRITES

pytestmark = pytest.mark.gunicorn

SECONDS = 3.0  # of load around the stopped store
USERS = 4


THREADS = 2 * 4  # the shared config's: a write in flight for each app thread


def run_with_writes_in_flight(keys: bool):
    run = Run("fixed_cache", keys, seconds=SECONDS, users=USERS)
    plan = [(0.3, lambda run, server: run.writes_in_flight(server).run(server, run.origin))]
    verdict = run.go(plan)
    [fault] = run.faults
    assert f"{THREADS} sent to stopped valkey" in fault.detail, fault
    assert f"{THREADS} answered before it resumed" in fault.detail, fault
    # The writers' writes (all their tries) from the moment the store was stopped.
    in_flight = [
        e
        for e in run.history
        if e.user.startswith("w") and e.op in WRITES and e.start >= run.origin + fault.at
    ]
    return run, verdict, in_flight


def first_tries(in_flight):
    return [e for e in in_flight if e.attempt == 1]


def test_keyed_retries_apply_every_write_once_though_the_store_stopped_mid_write():
    run, verdict, in_flight = run_with_writes_in_flight(keys=True)
    firsts = first_tries(in_flight)
    assert len(firsts) == THREADS
    assert all(e.status == 503 and e.outcome == UNKNOWN for e in firsts), firsts
    assert all(any(e.ok for e in in_flight if e.key == f.key) for f in firsts)  # retried to a yes
    assert verdict.writes_applied_twice == 0, verdict.examples
    assert verdict.writes_lost == 0, verdict.examples
    assert run.problems(verdict) == [], verdict.examples


def test_naive_retries_without_keys_apply_the_writes_in_flight_twice():
    run, verdict, in_flight = run_with_writes_in_flight(keys=False)
    firsts = first_tries(in_flight)
    assert len(firsts) == THREADS
    assert all(e.status == 503 and e.outcome == UNKNOWN for e in firsts), firsts
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


def test_a_client_that_retries_must_record_every_try():
    with pytest.raises(ValueError, match="record"):
        Client("http://127.0.0.1:1", "u", retry=Retry())
