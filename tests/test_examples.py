"""Every example in examples/ still shows its point: the same proofs `make examples` runs.

Each test runs one example's prove() against real servers (gunicorn, the
Werkzeug dev server, Valkey, SQLite, Flask-Session) and asserts on what it
observed, in more detail than the one line the runner prints. The races are
made certain, not waited for: barriers line up the reads before the writes,
a paused request is released by an event, and a gunicorn worker is paused
(SIGSTOP) so that the next request goes to another one.
"""

import ast
from pathlib import Path

import pytest

from examples import (
    EXAMPLES,
    gil_bare_increment,
    half_fix_app_context_push,
    half_fix_cookie_session,
    half_fix_lock,
    half_fix_preload_value,
    half_fix_redis_get_set,
    half_fix_secret_per_worker,
    half_fix_session_defaults,
    half_fix_sqlite_read_then_write,
    seed_app_context_per_request,
    seed_articles_visited,
    seed_dict_counter,
    seed_g_per_request,
    seed_thread_per_request,
)
from examples.__main__ import main

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.gunicorn
def test_seed_dict_counter_works_for_one_user_and_breaks_under_real_servers():
    finding = seed_dict_counter.prove()
    assert finding.one_user.printed == ["0", "1", "2", "2", "3", "0", "0"]
    alone = finding.gunicorn
    assert len(set(alone.workers)) == 2  # one user, two worker processes
    assert alone.printed[0] == "0"
    assert "HTTP500" in alone.printed  # a worker that never saw /create: KeyError
    assert alone.line != seed_dict_counter.ONE_USER_PRINTS
    assert len(finding.together) == 4
    assert all(run.line != seed_dict_counter.ONE_USER_PRINTS for run in finding.together)
    # Everyone counts on the one dict: after step 2, the four answers are 1..4.
    assert sorted(int(run.printed[1]) for run in finding.together) == [1, 2, 3, 4]
    assert finding.holds


def test_seed_articles_visited_fails_as_written_and_works_repaired():
    finding = seed_articles_visited.prove()
    articles = seed_articles_visited.ARTICLES
    assert finding.unrouted.statuses == [404] * len(articles)
    # In-place append: kept only because the defaults rewrite every session...
    assert finding.in_place_defaults.visited == articles
    # ...and silently dropped once only modified sessions are saved.
    assert finding.in_place_refresh_off.statuses == [200] * len(articles)
    assert finding.in_place_refresh_off.visited == []
    assert finding.in_place_defaults.after_index == []  # the index starts a new list
    assert finding.repaired.visited == finding.repaired.after_index == articles
    assert finding.holds


def test_flask_g_is_empty_in_the_next_request_of_the_same_thread():
    finding = seed_g_per_request.prove()
    assert finding.written["thread"] == finding.read_back["thread"]
    assert finding.written["g"] == "hello"
    assert finding.read_back["thread_local"] == "hello"  # the thread did carry over
    assert finding.read_back["g"] is None  # g did not
    assert finding.holds


def test_the_app_context_is_pushed_per_request_not_per_thread():
    finding = seed_app_context_per_request.prove()
    assert len({answer["thread"] for answer in finding.answers}) == 1
    assert [answer["new"] for answer in finding.answers] == [True, True, True]
    assert [answer["torn_down_before"] for answer in finding.answers] == [0, 1, 2]
    assert finding.holds


@pytest.mark.gunicorn
def test_a_request_gets_its_own_thread_only_if_the_server_gives_it_one():
    finding = seed_thread_per_request.prove()
    total = seed_thread_per_request.CLIENTS * seed_thread_per_request.EACH
    sync, pool, dev = (finding.served[shape] for shape in seed_thread_per_request.SHAPES)
    assert [len(s.workers) for s in (sync, pool, dev)] == [total] * 3
    assert sync.threads == 1  # a sync worker: every request on its one thread...
    assert sync.one_at_a_time  # ...one after another
    assert 1 < pool.threads <= 8 < total  # gthread 1 x 8: a pool, each thread reused
    assert dev.threads == total  # the dev server: a new thread for each connection
    assert finding.holds


def test_a_bare_increment_hides_the_race_that_a_blocking_call_shows():
    finding = gil_bare_increment.prove()
    total_bare = gil_bare_increment.THREADS * gil_bare_increment.BARE_EACH
    total_work = gil_bare_increment.THREADS * gil_bare_increment.WITH_WORK_EACH
    if finding.gil:
        assert finding.bare == total_bare  # no switch between the load and the store
    else:
        assert finding.bare < total_bare
    assert finding.with_work < total_work / 2  # most updates lost
    assert finding.holds


@pytest.mark.gunicorn
def test_a_lock_is_exact_in_one_process_and_diverges_over_two():
    finding = half_fix_lock.prove()
    total = half_fix_lock.CLIENTS * half_fix_lock.EACH
    assert finding.one_process.values == list(range(1, total + 1))
    two = finding.two_processes
    assert len(two.values) == total
    assert len(two.workers) == 2
    # Two counters: every value up to the smaller one was handed out twice.
    assert two.twice == list(range(1, len(two.twice) + 1))
    assert max(two.values) < total
    assert finding.holds


@pytest.mark.gunicorn
def test_a_preloaded_value_is_shared_by_one_servers_workers_only():
    finding = half_fix_preload_value.prove()
    total = half_fix_preload_value.CLIENTS * half_fix_preload_value.EACH
    assert finding.values == list(range(1, total + 1))  # exact across processes...
    assert len(finding.workers) > 2  # ...including workers recycled by max_requests
    assert finding.second_instance == 1  # another instance counts on its own
    assert finding.after_restart == 0  # a restart forgets
    assert finding.without_preload == [1, 1]  # without --preload, one Value per worker
    assert finding.holds


@pytest.mark.gunicorn
def test_an_app_context_pushed_at_import_leaks_g_under_sync_workers_only():
    finding = half_fix_app_context_push.prove()
    visitors = half_fix_app_context_push.VISITORS
    assert finding.dev_server.names == visitors
    assert finding.gunicorn.wrong >= len(visitors) - 2  # all but each worker's first
    assert set(finding.gunicorn.names) < set(visitors)
    for position, (name, worker) in enumerate(
        zip(finding.gunicorn.names, finding.gunicorn.workers, strict=True)
    ):
        # Each worker greets everyone with the name of the first visitor it served.
        first = finding.gunicorn.workers.index(worker)
        assert name == visitors[first], position
    assert finding.holds


def test_flask_session_defaults_let_a_slow_read_erase_a_write():
    finding = half_fix_session_defaults.prove()
    assert finding.with_defaults == ["a1"]
    assert finding.refresh_off == ["a1", "a2"]
    assert finding.holds


def test_sqlite_read_then_write_loses_updates_and_deferred_transactions_fail_at_once():
    finding = half_fix_sqlite_read_then_write.prove()
    threads = half_fix_sqlite_read_then_write.THREADS
    lost = finding.read_then_write
    assert lost.outcome.most_inside == threads  # every read before any write
    assert lost.outcome.returned == [1] * threads
    assert lost.final == 1
    assert lost.outcome.errors == []  # lost without a trace
    deferred = finding.deferred
    assert deferred.outcome.returned == [1]
    assert deferred.final == 1
    assert len(deferred.outcome.errors) == threads - 1
    assert all(e == "OperationalError: database is locked" for e in deferred.outcome.errors)
    busy_timeout = half_fix_sqlite_read_then_write.BUSY_TIMEOUT_SECONDS
    assert max(deferred.outcome.error_seconds) < busy_timeout / 5  # no waiting: at once
    exact = list(range(1, threads + 1))
    assert finding.immediate.outcome.most_inside == 1  # the others waited at BEGIN
    assert finding.immediate.outcome.returned == exact
    assert finding.immediate.final == threads
    assert finding.one_statement.outcome.returned == exact
    assert finding.one_statement.final == threads
    assert finding.holds


def test_redis_get_then_set_loses_updates_and_incr_or_a_transaction_does_not():
    finding = half_fix_redis_get_set.prove()
    threads = half_fix_redis_get_set.THREADS
    assert finding.get_then_set.outcome.most_inside == threads
    assert finding.get_then_set.outcome.returned == [1] * threads
    assert finding.get_then_set.final == 1
    exact = list(range(1, threads + 1))
    assert finding.incr.outcome.returned == exact
    assert finding.incr.final == threads
    assert finding.transaction.outcome.returned == exact
    assert finding.transaction.final == threads
    assert finding.retries >= threads - 1  # every loser of the first round retried
    assert finding.holds


def test_a_signed_cookie_session_keeps_only_the_last_of_two_concurrent_writes():
    finding = half_fix_cookie_session.prove()
    assert sorted(finding.answered) == [["book"], ["pen"]]  # each right for its request
    assert finding.final in (["book"], ["pen"])  # one of the two items is gone
    assert finding.holds


@pytest.mark.gunicorn
def test_a_secret_key_made_at_import_logs_users_out_on_other_workers():
    finding = half_fix_secret_per_worker.prove()
    other, same = finding.answers
    assert other.worker != finding.login_worker
    assert other.user is None
    assert same.worker == finding.login_worker
    assert same.user == half_fix_secret_per_worker.USER
    assert finding.holds


def test_every_example_module_is_registered_labelled_and_documented():
    modules = {
        path.stem
        for path in EXAMPLES_DIR.glob("*.py")
        if "def prove(" in path.read_text() and not path.stem.startswith("_")
    }
    assert modules == set(EXAMPLES)
    readme = (EXAMPLES_DIR / "README.md").read_text()
    for name in EXAMPLES:
        source = (EXAMPLES_DIR / f"{name}.py").read_text()
        assert ast.get_docstring(ast.parse(source)), name
        assert "\nLABEL = " in source, name
        assert f"`{name}`" in readme, name


def test_the_runner_prints_one_line_per_example_and_rejects_unknown_names(capsys):
    assert main(["seed_g_per_request", "seed_app_context_per_request"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("[proven] seed_g_per_request: ")
    assert lines[1].startswith("[proven] seed_app_context_per_request: ")
    assert lines[2].startswith("2 of 2 examples show their point")
    assert main(["no_such_example"]) == 2
