"""The reported failures' examples under python -m loadtests.check, each with
its spec in loadtests/check/specs/: the broken app fails under the shape
that shows it, with the witness's words, and its fix passes the same shape.

A cache and a job's status are shared values; a rate limit and a live update
have models of their own. The fixes keep their state in Valkey: each spec
names the store, the check starts a fresh one for each shape, and the apps
read its address from REDIS_URL, which the spec sets to {store_url}."""

import pytest

from loadtests.check import SpecError, check_app
from loadtests.check.spec import load_spec
from plumbing.config import REPO_ROOT

SPECS = REPO_ROOT / "loadtests" / "check" / "specs"


def check(target: str, spec: str, shape: str):
    result = check_app(f"examples.{target}", SPECS / spec, chdir=REPO_ROOT, shapes=[shape])
    (cell,) = result.cells
    return cell


def test_a_cache_kept_in_the_worker_serves_an_old_title():
    broken = check("memoize_per_worker:create_app", "memoize.toml", "gthread")
    assert broken.verdict.counts.get("stale_reads"), broken.text()
    stale = broken.verdict.examples[0]
    assert stale.kind == "stale read" and " after " in stale.summary
    assert len({e.pid for e in stale.witness}) == 2  # set on one worker, read old on the other


def test_redis_cache_serves_the_new_title_on_every_worker():
    fixed = check("memoize_per_worker:create_redis_app", "memoize.toml", "gthread")
    assert not fixed.failed, fixed.verdict.summary()
    assert fixed.verdict.operations > 20 and fixed.verdict.workers == 2


def test_a_job_status_kept_in_the_worker_is_unknown_to_the_other():
    broken = check("background_job_per_worker:app", "background_job.toml", "sync")
    assert broken.verdict.counts.get("stale_reads"), broken.text()
    assert broken.verdict.examples[0].kind == "stale read"


def test_a_job_status_in_valkey_is_known_to_every_worker():
    fixed = check("background_job_per_worker:create_queued_app", "background_job.toml", "sync")
    assert not fixed.failed, fixed.verdict.summary()
    assert fixed.verdict.operations > 20 and fixed.verdict.workers == 2


def test_a_rate_limit_in_memory_lets_more_through_per_worker_and_after_a_restart():
    broken = check("rate_limit_per_worker:create_app", "rate_limit.toml", "restart")
    over = next(a for a in broken.verdict.examples if a.kind == "over the limit")
    accepted = [e for e in broken.history if e.ok]
    # 3 per worker before the restart, 3 more at least after it
    assert len(accepted) >= 9 and len({e.pid for e in accepted}) >= 3
    assert over.summary.startswith(f"{len(accepted)} accepted where the limit is 3")
    assert len(over.witness) == 4 and all(e.ok for e in over.witness)  # the limit, and one more
    assert broken.verdict.counts["over_limit"] == len(accepted) - 3


def test_a_rate_limit_in_valkey_holds_through_both_workers_and_a_restart():
    fixed = check("rate_limit_per_worker:create_shared_app", "rate_limit.toml", "restart")
    assert not fixed.failed, fixed.verdict.summary()
    assert sum(e.ok for e in fixed.history) == 3  # the limit, through both workers and a restart
    assert fixed.verdict.workers == 4


def test_a_rate_limit_in_valkey_starts_from_nothing_in_each_shape():
    # Each shape its own store: a count shared from one shape to the next
    # would refuse every request after the first shape, and prove nothing.
    target = "examples.rate_limit_per_worker:create_shared_app"
    result = check_app(target, SPECS / "rate_limit.toml", chdir=REPO_ROOT,
                       shapes=["gthread", "restart"])  # fmt: skip
    assert [c.shape for c in result.cells] == ["gthread", "restart"]
    for cell in result.cells:
        assert not cell.failed, cell.verdict.summary()
        assert sum(e.ok for e in cell.history) == 3, cell.shape  # the restart keeps its store


def test_a_live_update_announced_in_the_worker_reaches_its_own_subscriber_only():
    broken = check("live_update_reaches_one_worker:app", "live_update.toml", "gthread")
    missed = broken.verdict.examples[0]
    assert missed.kind == "missed message", broken.text()
    assert "reached 1 of 2 subscribers" in missed.summary and "never got it" in missed.summary
    publish, lost, reached = missed.witness
    assert publish.op == "publish" and lost.op == "subscribe" and reached.op == "receive"
    assert lost.pid != publish.pid == reached.pid
    # every message missed by the subscriber on the other worker, in both rounds
    assert broken.verdict.counts == {"messages_missed": 4}


def test_a_live_update_through_valkey_pub_sub_reaches_every_subscriber():
    fixed = check("live_update_reaches_one_worker:create_shared_app", "live_update.toml", "gthread")
    assert not fixed.failed, fixed.verdict.summary()
    received = [e for e in fixed.history if e.op == "receive"]
    assert len(received) == 8 and len({e.pid for e in received}) == 2  # 4 messages, 2 workers


@pytest.mark.parametrize(
    ("table", "line", "words"),
    [
        ('[[rate_limit]]\nname = "s"\nrequest = "GET /s"\n', 1, "missing the key 'limit'"),
        ('[[rate_limit]]\nname = "s"\nrequest = "GET /s"\nlimit = "3"\n', 4, "whole number"),
        ('[[rate_limit]]\nname = "s"\nrequest = "GET /s"\nlimit = 3\nper = "ip"\n', 5, '"user"'),
        ('[[broadcast]]\nname = "b"\nsubscribe = "GET /e"\n', 1, "missing the key 'publish'"),
        ('[[broadcast]]\nname = "b"\nsubscribe = "GET /e"\npublish = "POST /p"\n', 4, "{token}"),
        (
            '[[broadcast]]\nname = "b"\nsubscribe = "GET /e"\npublish = "POST /p"\n'
            'body = { m = "{token}" }\nwithin = 0\n',
            6,
            "seconds above 0",
        ),
    ],
)
def test_the_new_models_errors_name_the_spec_line(tmp_path, table, line, words):
    spec = tmp_path / "spec.toml"
    spec.write_text(table)
    with pytest.raises(SpecError, match=rf"spec.toml line {line}\b") as raised:
        load_spec(spec, "app:create_app")
    assert words in str(raised.value)


def test_every_example_spec_parses():
    kinds = {path.stem: [m.kind for m in load_spec(path, "x:app").models]
             for path in SPECS.glob("*.toml")}  # fmt: skip
    assert kinds["memoize"] == kinds["background_job"] == ["shared_value"]
    assert kinds["rate_limit"] == ["rate_limit"] and kinds["live_update"] == ["broadcast"]
    for fixed_in_valkey in ("memoize", "background_job", "rate_limit", "live_update"):
        app = load_spec(SPECS / f"{fixed_in_valkey}.toml", "x:app").app
        assert app.store == "valkey" and app.env["REDIS_URL"] == "{store_url}"
