"""Scale-out: several instances of one app sharing one backing store, as on
several hosts behind a load balancer that takes them in turn. Each user's
requests cross instances; the fixed apps stay correct, broken_global's
instances each count on their own."""

import pytest

from loadtests.runs.hammer import hammer_app
from serve.processes import AppServer, free_port
from tests.test_locust import headless, summary_counts

pytestmark = pytest.mark.gunicorn
INSTANCES = 3


def crossed_instances(history) -> bool:
    """Did some user get answers from processes of more than one instance?"""
    pids: dict[str, set[str]] = {}
    for event in history:
        pids.setdefault(event.user, set()).add(event.pid)
    return any(len(seen) > 2 for seen in pids.values())  # > one instance's 2 workers


@pytest.mark.parametrize("app", ["fixed_session", "fixed_db", "fixed_cache"])
def test_fixed_apps_stay_correct_across_instances(isolated_var_dir, app):
    verdict, history, _ = hammer_app(app, users=12, ops=8, max_seconds=60, instances=INSTANCES)
    assert verdict.errors == 0
    assert verdict.workers == 2 * INSTANCES
    assert crossed_instances(history)
    assert verdict.visits_lost == verdict.visits_leaked == 0  # whichever instance answered
    if app != "fixed_session":  # its same-user race is a known limit, shown elsewhere
        assert verdict.anomalies == 0, verdict.examples


def test_broken_global_diverges_per_instance(isolated_var_dir):
    verdict, _, _ = hammer_app(
        "broken_global", users=12, ops=8, max_seconds=60, instances=INSTANCES
    )
    assert verdict.workers == 2 * INSTANCES
    assert verdict.divergence > 0
    assert verdict.visits_lost > 0


def test_the_locustfile_spreads_users_over_instances(isolated_var_dir):
    env = {"VAR_DIR": str(isolated_var_dir)}
    with (
        AppServer("fixed_db", free_port(), env=env) as one,
        AppServer("fixed_db", free_port(), env=env) as two,
    ):
        run = headless(one.url, "--more-hosts", two.url)
    assert run.returncode == 0, run.stderr[-3000:]
    counts = summary_counts(run.stdout)
    assert counts["app_processes"] == 4  # both instances answered
    assert counts["errors"] == 0
    assert counts["lost_updates"] == counts["divergence"] == counts["visits_lost"] == 0
