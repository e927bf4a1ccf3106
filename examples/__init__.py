"""Runnable proofs of what the project claims about Flask state.

Each module here is one example: a small app or script, and prove(), which
runs it against real servers and returns what it observed (a Finding). The
runner, `python -m examples`, prints one line per example; the tests in
tests/test_examples.py assert on the same Findings. See README.md here.
"""

import importlib
from typing import Protocol

# In the order of the README: the seed snippets, the half-fixes, then the
# failures users report.
EXAMPLES = (
    "seed_dict_counter",
    "seed_articles_visited",
    "seed_g_per_request",
    "seed_app_context_per_request",
    "seed_thread_per_request",
    "gil_bare_increment",
    "half_fix_lock",
    "half_fix_preload_value",
    "half_fix_app_context_push",
    "half_fix_session_defaults",
    "half_fix_sqlite_read_then_write",
    "half_fix_redis_get_set",
    "half_fix_cookie_session",
    "half_fix_secret_per_worker",
    "half_fix_postgres_read_committed",
    "admin_change_reaches_one_worker",
    "g_shared_by_test_clients",
    "preload_secret_until_restart",
    "thread_started_at_import",
    "connection_before_fork",
    "tls_connection_before_fork",
    "schema_race_at_startup",
    "gevent_greenlets_share_globals",
    "gevent_worker_timeout",
    "uwsgi_loads_before_fork",
    "hosts_behind_a_balancer",
    "outside_app_context",
    "memoize_per_worker",
    "rate_limit_per_worker",
    "live_update_reaches_one_worker",
    "socketio_without_message_queue",
    "background_job_per_worker",
    "object_made_once_carries_state",
    "orm_session_made_once",
    "logout_reaches_one_worker",
)


class Finding(Protocol):
    @property
    def holds(self) -> bool:
        """True while the example still shows its point."""

    def summary(self) -> str:
        """What the proof observed, in one line."""


def check(name: str) -> tuple[bool, str]:
    """Run one example's proof: whether it still shows its point, and its line."""
    module = importlib.import_module(f"examples.{name}")
    try:
        finding: Finding = module.prove()
        shown, summary = finding.holds, finding.summary()
    except Exception as error:  # a proof that cannot run shows nothing
        return False, f"[ERROR] {name}: {type(error).__name__}: {error}"
    return shown, f"[{module.LABEL if shown else 'NO LONGER SHOWN'}] {name}: {summary}"
