"""The failures users report with the libraries they reach for, each still
shown: the proofs in examples/ that `make examples` runs, asserted in detail.

A cache (Flask-Caching, lru_cache), a rate limit (Flask-Limiter), live
updates (server-sent events, Flask-SocketIO), background jobs (a thread pool,
RQ), objects made once (a client's cookies, a shared connection's
transaction, a thread-local, an ORM session), a logout (Flask-JWT-Extended's
blocklist), an application context missing, a gevent
worker killed by its timeout, a TLS session shared across a fork. Each test
runs the example's prove() against real gunicorn, Valkey, SQLite, PostgreSQL
or a TLS server, and asserts the broken form broken and its fix correct. The rest of
the examples are tested in test_examples.py.
"""

import pytest

from examples import (
    background_job_per_worker,
    gevent_worker_timeout,
    live_update_reaches_one_worker,
    logout_reaches_one_worker,
    memoize_per_worker,
    object_made_once_carries_state,
    orm_session_made_once,
    outside_app_context,
    rate_limit_per_worker,
    socketio_without_message_queue,
    tls_connection_before_fork,
)


@pytest.mark.gunicorn
def test_a_cache_kept_in_the_worker_misses_on_the_others_and_a_clear_reaches_one():
    finding = memoize_per_worker.prove()
    for steps in (finding.lru, finding.simple):
        a, b = steps.workers
        assert steps.first_on_a.built_now and steps.first_on_a.answered_by == a
        assert not steps.again_on_a.built_now  # one process: it does cache
        assert steps.on_b.built_now and steps.on_b.answered_by == b  # B builds its own
        assert steps.on_b.built.startswith(f"{b}-")
        stale = steps.on_a_after_clear_on_b
        assert not stale.built_now and stale.built == steps.first_on_a.built  # A kept its copy
        assert steps.after_restart.built_now
    null = finding.null
    assert null.first_on_a.built_now and null.again_on_a.built_now  # NullCache: never a hit
    shared = finding.redis
    a, b = shared.workers
    assert shared.on_b.answered_by == b and not shared.on_b.built_now
    assert shared.on_b.built == shared.first_on_a.built  # B served what A built
    assert shared.on_a_after_clear_on_b.built_now  # the clear on B reached A
    assert shared.after_restart.built == shared.on_a_after_clear_on_b.built
    assert finding.holds


@pytest.mark.gunicorn
def test_a_rate_limit_in_memory_counts_per_worker_and_resets_on_restart():
    finding = rate_limit_per_worker.prove()
    broken, fixed = finding.in_memory, finding.in_valkey
    for run in (broken, fixed):
        assert run.alternated and len(run.answers) == rate_limit_per_worker.REQUESTS
    assert [a.remaining for a in broken.accepted] == [2, 2, 1, 1, 0, 0]  # up and down
    assert {a.worker for a in broken.accepted} == set(broken.workers)
    assert [a.status for a in broken.answers[6:]] == [429] * 6
    assert broken.accepted_after_restart == rate_limit_per_worker.ALLOWED  # a fresh count
    assert [a.remaining for a in fixed.accepted] == [2, 1, 0]  # one count for both
    assert [a.status for a in fixed.answers[3:]] == [429] * 9
    assert fixed.accepted_after_restart == 0  # the count outlived the restart
    assert finding.holds


@pytest.mark.gunicorn
def test_an_announcer_list_reaches_the_browsers_of_one_worker_and_pub_sub_reaches_all():
    finding = live_update_reaches_one_worker.prove()
    message = live_update_reaches_one_worker.MESSAGE
    broken, fixed = finding.announcer, finding.pubsub
    for run in (broken, fixed):
        a, b = run.workers
        assert a != b
        assert run.browsers_on == (a, b)  # one browser's stream on each worker
        assert run.published_by == a
    assert broken.listeners_counted == 1  # A knows only its own browser
    assert broken.on_a == [message]
    assert broken.on_b == []  # answered 200, never delivered
    assert fixed.listeners_counted == 2
    assert fixed.on_a == fixed.on_b == [message]
    assert finding.holds


@pytest.mark.gunicorn
def test_a_job_in_a_workers_thread_is_unknown_elsewhere_and_dies_with_it():
    finding = background_job_per_worker.prove()
    broken, fixed = finding.in_worker, finding.queued
    assert broken.on_a["status"] == "finished"
    assert broken.on_b[0] == 404  # the other worker never heard of it
    assert broken.recycled.known_on_a  # A knew the long job while it lived
    assert broken.recycled.retired and broken.recycled.killed_by_timeout
    assert broken.recycled.last[0] == 404  # gone with A
    assert not broken.recycled.report_written  # and its work never done
    assert fixed.on_b == (200, fixed.on_a)  # one status, in the store
    assert fixed.recycled.retired
    assert fixed.recycled.last == (
        200,
        {"status": "finished", "result": background_job_per_worker.WEEKLY_RESULT},
    )
    assert fixed.recycled.report_written  # done by the RQ worker, not by A
    assert finding.holds


@pytest.mark.gunicorn
def test_a_client_connection_or_thread_local_made_once_carries_one_requests_state_to_another():
    finding = object_made_once_carries_state.prove()
    broken, fixed = finding.made_once, finding.per_request
    assert broken.partner_accounts == {"ann": "ann", "bob": "ann"}  # ann's cookie, sent for bob
    assert fixed.partner_accounts == {"ann": "ann", "bob": "bob"}
    for run in (broken, fixed):
        assert run.declined == 402
    assert broken.placed_first  # the other order committed while the declined one was held...
    assert sorted(broken.orders) == ["declined-tv", "tea"]  # ...and committed it too
    assert not fixed.placed_first  # its own connection waited for the held one's lock
    assert fixed.orders == ["tea"]
    assert broken.on_ann_threads and set(broken.on_ann_threads) == {"Hello, ann!"}
    assert fixed.on_ann_threads and set(fixed.on_ann_threads) == {"Hello, guest!"}
    # A thread that never served ann greets the visitor as a guest, even when broken.
    others = [greeting for thread, greeting in broken.guests if thread not in broken.ann_threads]
    assert set(others) <= {"Hello, guest!"}
    assert finding.holds


@pytest.mark.gunicorn
def test_an_orm_session_made_once_reads_old_values_fails_after_one_error_and_loses_orders():
    finding = orm_session_made_once.prove()
    old, new = orm_session_made_once.PRICE, orm_session_made_once.NEW_PRICE
    reads = orm_session_made_once.READS
    stale, fresh = finding.stale_made_once, finding.stale_per_request
    for run in (stale, fresh):
        assert run.answered_on_a and run.first_on_a == old
        assert run.set_on_b[1] == run.in_table == new  # B committed the change
    assert stale.prices_on_a == [old] * reads  # A's transaction still reads its snapshot
    assert fresh.prices_on_a == [new] * reads
    broken, fixed = finding.made_once, finding.per_request
    for run in (broken, fixed):
        assert run.answered_on_a  # the reads went to A, the one after them to B
        assert run.duplicate == (500, "IntegrityError")  # the failed insert fails either way
        assert (run.placed, run.declined) == (201, 402)
    # After it, the shared session refuses every request of that worker, not B's.
    assert [answer[1:] for answer in broken.on_a] == [(500, "PendingRollbackError")] * reads
    assert broken.on_b[1:] == (200, "10")
    assert [answer[1:] for answer in fixed.on_a] == [(200, "10")] * reads
    # The declined order's rollback dropped the order added by the other thread...
    assert broken.orders == []  # ...which was answered 201 all the same
    assert fixed.orders == ["tea"]
    assert finding.holds


@pytest.mark.gunicorn
def test_a_token_revoked_in_a_workers_set_still_works_on_the_other_and_after_a_restart():
    finding = logout_reaches_one_worker.prove()
    broken, fixed = finding.in_process, finding.in_valkey
    revoked = (401, {"msg": "Token has been revoked"})
    accepted = (200, {"user": logout_reaches_one_worker.USER})
    for run in (broken, fixed):
        a, b = run.workers
        assert (run.logout.worker, run.logout.status) == (b, 200)  # logged out through B
        assert run.on_b.worker == b and (run.on_b.status, run.on_b.body) == revoked
        assert run.on_a.worker == a
    assert (broken.on_a.status, broken.on_a.body) == accepted  # A never heard of the logout
    assert (broken.after_restart.status, broken.after_restart.body) == accepted  # set emptied
    assert broken.kept_seconds is None
    assert (fixed.on_a.status, fixed.on_a.body) == revoked
    assert (fixed.after_restart.status, fixed.after_restart.body) == revoked
    lifetime = logout_reaches_one_worker.TOKEN_LIFETIME.total_seconds()
    assert lifetime - 60 < fixed.kept_seconds <= lifetime  # it expires with the token
    assert finding.holds


@pytest.mark.gunicorn
def test_current_app_outside_a_context_stops_the_boot_and_fails_in_a_thread():
    finding = outside_app_context.prove()
    assert not finding.without_context.booted
    assert "Working outside of application context" in finding.without_context.log
    assert "Reason: Worker failed to boot." in finding.without_context.log
    assert finding.with_context.booted
    assert finding.threads["send"] == "RuntimeError: Working outside of application context."
    assert finding.threads["send-in-context"] == outside_app_context.SENT_IN_CONTEXT
    assert finding.holds


@pytest.mark.gunicorn
def test_a_wait_in_c_under_gevent_is_killed_by_worker_timeout_and_the_thread_pool_is_not():
    finding = gevent_worker_timeout.prove()
    broken, fixed = finding.in_c, finding.in_threadpool
    assert broken.timed_out  # "[CRITICAL] WORKER TIMEOUT (pid:...)" in gunicorn's log
    assert broken.report.startswith("failed")  # the request it held died with it
    assert broken.health_worker != broken.worker  # the health check waited for a new worker
    assert broken.health_seconds > float(gevent_worker_timeout.WORKER_TIMEOUT)
    assert not fixed.timed_out
    assert fixed.report == "answered 200"
    assert fixed.health_worker == fixed.worker  # the same worker, never killed
    assert fixed.health_seconds < float(gevent_worker_timeout.WORKER_TIMEOUT)
    assert finding.holds


@pytest.mark.gunicorn
def test_flask_socketio_emits_to_one_process_without_a_message_queue_and_needs_sticky_routing():
    finding = socketio_without_message_queue.prove()
    message = socketio_without_message_queue.MESSAGE
    assert finding.no_queue.on_first == [message]
    assert finding.no_queue.on_second == []  # the other instance's browser never heard it
    assert finding.queue.on_first == finding.queue.on_second == [message]
    assert finding.unsticky == (200, 400)  # a session made on A is unknown to B...
    assert finding.unsticky_with_queue == (200, 400)  # ...message queue or not
    assert finding.holds


@pytest.mark.gunicorn
def test_a_tls_connection_made_before_the_fork_fails_with_bad_record_mac_in_the_second_worker():
    finding = tls_connection_before_fork.prove()
    broken, fixed = finding.made_before_fork, finding.made_per_worker
    bad_record = tls_connection_before_fork.BAD_RECORD
    assert broken.connections == 1  # one TLS session for both workers
    assert broken.on_a == {"answer": "pong 1"}
    assert broken.on_b["error"] == "SSLError" and bad_record in broken.on_b["detail"]
    assert any(bad_record in error for error in broken.server_errors)
    assert fixed.connections == 2
    assert (fixed.on_a, fixed.on_b) == ({"answer": "pong 1"}, {"answer": "pong 2"})
    assert fixed.server_errors == []
    assert finding.holds
