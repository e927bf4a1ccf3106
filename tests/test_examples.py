"""Every example in examples/ still shows its point: the same proofs `make examples` runs.

Each test runs one example's prove() against real servers (gunicorn with
sync, gthread and gevent workers, uWSGI, the Werkzeug dev server, Valkey,
SQLite, Flask-Session) and asserts on what it observed, in more detail than
the one line the runner prints. The races are made certain, not waited for:
barriers line up the reads before the writes, a paused request is released
by an event, a gunicorn worker is paused (SIGSTOP) so that the next request
goes to another one, and Valkey's CLIENT LIST shows when a command waits
behind another. The proofs that rest on Flask reusing a pushed application
context fail with what changed on a Flask that no longer does (3.2); the
uWSGI one is skipped where uWSGI is not installed.
"""

import ast

import pytest

from examples import (
    EXAMPLES,
    admin_change_reaches_one_worker,
    connection_before_fork,
    flask_version,
    g_shared_by_test_clients,
    gevent_greenlets_share_globals,
    gil_bare_increment,
    half_fix_app_context_push,
    half_fix_cookie_session,
    half_fix_lock,
    half_fix_preload_value,
    half_fix_redis_get_set,
    half_fix_secret_per_worker,
    half_fix_session_defaults,
    half_fix_sqlite_read_then_write,
    hosts_behind_a_balancer,
    preload_secret_until_restart,
    schema_race_at_startup,
    seed_app_context_per_request,
    seed_articles_visited,
    seed_dict_counter,
    seed_g_per_request,
    seed_thread_per_request,
    thread_started_at_import,
    uwsgi_loads_before_fork,
)
from examples.__main__ import main
from plumbing.config import REPO_ROOT
from serve import uwsgi

EXAMPLES_DIR = REPO_ROOT / "examples"


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


def require_flask_reusing_a_pushed_app_context() -> None:
    """The proofs of a pushed context's leak hold up to Flask 3.1: on a newer
    Flask, fail with what changed rather than pass or fail on a detail."""
    installed = flask_version.installed()
    assert flask_version.reuses_pushed_app_context(installed), flask_version.no_longer_reused()


def test_the_flask_version_check_reads_the_installed_flask():
    from importlib.metadata import version

    assert flask_version.installed() == version("flask")
    assert flask_version.release("3.2.0rc1") == (3, 2)
    assert flask_version.reuses_pushed_app_context("3.1.3")
    assert not flask_version.reuses_pushed_app_context("3.2.0")
    assert "3.2.0" in flask_version.no_longer_reused("3.2.0")


@pytest.mark.gunicorn
def test_an_app_context_pushed_at_import_leaks_g_under_sync_workers_only():
    require_flask_reusing_a_pushed_app_context()
    finding = half_fix_app_context_push.prove()
    assert finding.flask == flask_version.installed()
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


@pytest.mark.gunicorn
def test_an_admin_change_reaches_only_the_worker_that_answered_it():
    finding = admin_change_reaches_one_worker.prove()
    broken, fixed = finding.in_process, finding.shared
    a, b = broken.workers
    assert a != b
    assert broken.reset_by == b and broken.reset == {"value": 0}  # B says: done
    assert broken.on_b == admin_change_reaches_one_worker.CHANGED
    assert broken.read_by == a
    assert broken.on_a == {  # A never heard of any of it
        "counter": 3,
        "maintenance": False,
        "banned": [],
        "cached": ["tea"],
        "banner": "old",
    }
    assert fixed.reset_by == fixed.workers[1] and fixed.read_by == fixed.workers[0]
    assert fixed.on_a == fixed.on_b == fixed.changed  # one state for both
    assert finding.holds


def test_test_clients_share_g_inside_a_pushed_app_context():
    require_flask_reusing_a_pushed_app_context()
    finding = g_shared_by_test_clients.prove()
    assert finding.flask == flask_version.installed()
    user = g_shared_by_test_clients.USER
    for shape in finding.LEAKY:
        assert finding.client_two[shape] == user, shape  # a client that never logged in
    for shape in finding.RIGHT:
        assert finding.client_two[shape] is None, shape
    assert finding.holds


@pytest.mark.gunicorn
def test_preload_keeps_a_key_made_at_import_only_until_a_restart():
    finding = preload_secret_until_restart.prove()
    user = preload_secret_until_restart.USER
    broken, fixed = finding.key_at_import, finding.key_from_environment
    assert broken.workers[0] != broken.workers[1]
    assert broken.other_worker == user  # one key for both workers, made by the master
    assert broken.after_restart is None  # a new master, a new key: logged out
    assert broken.second_instance is None  # another instance, another key
    assert fixed.other_worker == fixed.after_restart == fixed.second_instance == user
    assert finding.holds


@pytest.mark.gunicorn
def test_a_thread_started_at_import_stops_under_preload_and_runs_per_worker_without():
    finding = thread_started_at_import.prove()
    preloaded = finding.preloaded
    assert preloaded.producers == {None}  # no worker has a live producer thread
    assert all(before == after for before, after in preloaded.readings)
    for run in ("not_preloaded", "post_fork"):
        counts = getattr(finding, run)
        assert counts.producers == set(finding.workers[run]), run  # one per worker
        assert all(after > before for before, after in counts.readings), run
    one = finding.one_producer
    [producer] = one.producers
    assert producer not in finding.workers["one_producer"]  # a process of its own
    assert all(after > before for before, after in one.readings)
    assert finding.holds


@pytest.mark.gunicorn
def test_a_connection_opened_before_the_fork_hands_one_users_data_to_another():
    finding = connection_before_fork.prove()
    broken = finding.preloaded
    assert broken.shared  # both workers on one server-side connection
    assert broken.crossing.b_got == ["jobs:ann", "ann's job"]  # B's GET got A's job
    assert broken.crossing.a_got != broken.crossing.b_got
    assert broken.same_invite  # one random state, copied into both
    for run in (finding.not_preloaded, finding.made_after_fork):
        assert len(set(run.connections.values())) == 2
        assert run.crossing.right
        assert run.load.answers == connection_before_fork.CLIENTS * connection_before_fork.EACH
        assert run.load.wrong == [] and run.load.errors == 0
        assert not run.same_invite
    assert finding.holds


@pytest.mark.gunicorn
def test_a_schema_race_stops_two_workers_from_booting_on_a_fresh_database():
    finding = schema_race_at_startup.prove()
    assert not finding.racing.booted
    assert finding.racing.exit_code == 3  # gunicorn's "worker failed to boot"
    assert "sqlite3.OperationalError: table counter already exists" in finding.racing.log
    assert "Reason: Worker failed to boot." in finding.racing.log
    assert finding.racing_again.served  # the table is there now: the race hides
    for start in ("one_worker", "if_not_exists", "init_db", "on_starting"):
        assert getattr(finding, start).booted, start
        assert getattr(finding, start).answered == 200, start  # and the table is there
    assert finding.holds


@pytest.mark.gunicorn
def test_gevent_greenlets_share_globals_keep_g_apart_and_stall_on_blocking_c():
    finding = gevent_greenlets_share_globals.prove()
    n = gevent_greenlets_share_globals.GREENLETS
    assert [answer["value"] for answer in finding.increments] == [1] * n
    assert len({(a["pid"], a["thread"]) for a in finding.increments}) == 1  # one OS thread
    assert sorted(finding.increments_in_store) == list(range(1, n + 1))
    assert finding.greeted_from_g == finding.names  # g: one per greenlet
    assert finding.wrong_from_global >= n - 1
    for stall in (finding.in_c, finding.in_python):
        assert stall.overlapped  # the health check was sent while the write waited
    assert finding.in_c.answered >= finding.in_c.write["ended"]  # the whole worker waited
    assert finding.in_python.answered < finding.in_python.released  # other greenlets ran
    assert finding.holds


@pytest.mark.skipif(not uwsgi.available(), reason="uWSGI is not installed: pip install uwsgi")
def test_uwsgi_shares_a_connection_made_at_import_unless_lazy_apps():
    finding = uwsgi_loads_before_fork.prove()
    assert finding.preforked.shared
    assert finding.preforked.crossing.b_got == ["jobs:ann", "ann's job"]
    assert finding.preforked.same_invite
    lazy = finding.lazy_apps
    assert len(set(lazy.connections.values())) == 2
    assert lazy.crossing.right and lazy.load.wrong == [] and not lazy.same_invite
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


@pytest.mark.gunicorn
def test_sticky_sessions_hide_per_host_state_until_a_restart():
    finding = hosts_behind_a_balancer.prove()
    broken, fixed = finding.broken, finding.fixed
    assert broken.round_robin == [1, 1, 2, 2, 3, 3]  # two hosts, two counters
    assert broken.sticky == [1, 2, 3, 4, 5]  # pinned to one: looks right...
    assert broken.after_restart == 1  # ...until that host restarts
    assert None in finding.key_per_host and "ann" in finding.key_per_host
    assert fixed.round_robin == [1, 2, 3, 4, 5, 6]
    assert fixed.sticky == [1, 2, 3, 4, 5] and fixed.after_restart == 6
    assert finding.shared_key == ["ann"] * 4
    assert finding.holds
