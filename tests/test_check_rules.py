"""The check's new rules on hand-built histories: shared_value's stale read,
login's lost identity and identity leak, per_request's leak. Each history is
the smallest that shows the anomaly, next to the same history made right."""

from loadtests.check.drive import Tokens
from loadtests.check.judge import judge
from loadtests.check.spec import load_spec
from loadtests.judge.history import Event
from plumbing.config import REPO_ROOT

TOKENS = Tokens()
A, B, C = TOKENS.new(), TOKENS.new(), TOKENS.new()


def event(op, user, arg, start, end, value, status=200, worker="1-1"):
    return Event(op, user, arg, start, end, status, value, worker)


def test_a_read_of_a_replaced_value_is_stale():
    history = [
        event("set", "admin", A, 0.0, 0.1, A),
        event("set", "admin", B, 0.2, 0.3, B),
        event("get", "u1", None, 0.4, 0.5, A, worker="2-1"),
    ]
    verdict = judge("shared_value", history, TOKENS)
    assert verdict.counts == {"stale_reads": 1}
    assert "read" in verdict.examples[0].summary and B in verdict.examples[0].summary


def test_a_read_overlapping_the_set_may_return_either_value():
    history = [
        event("set", "admin", A, 0.0, 0.1, A),
        event("set", "admin", B, 0.2, 0.5, B),
        event("get", "u1", None, 0.3, 0.4, A),
        event("get", "u2", None, 0.6, 0.7, B),
    ]
    assert judge("shared_value", history, TOKENS).counts == {}


def test_a_value_nobody_set_after_an_acknowledged_set_is_stale():
    history = [event("set", "admin", A, 0.0, 0.1, A), event("get", "u1", None, 0.2, 0.3, "")]
    assert judge("shared_value", history, TOKENS).counts == {"stale_reads": 1}


def test_login_lost_and_leaked():
    history = [
        event("login", "u1", A, 0.0, 0.1, A),
        event("login", "u2", B, 0.0, 0.1, B),
        event("whoami", "u1", None, 0.2, 0.3, None, status=401),  # forgotten
        event("whoami", "u2", None, 0.2, 0.3, A),  # told it is u1
        event("whoami", "u3", None, 0.2, 0.3, B),  # never logged in, told it is u2
    ]
    verdict = judge("login", history, TOKENS)
    assert verdict.counts == {"identities_lost": 1, "identity_leaks": 2}
    assert {a.kind for a in verdict.examples} == {"lost identity", "identity leak"}


def test_login_kept():
    history = [
        event("login", "u1", A, 0.0, 0.1, A),
        event("whoami", "u1", None, 0.2, 0.3, A, worker="2-1"),
        event("whoami", "u3", None, 0.2, 0.3, None),
    ]
    assert judge("login", history, TOKENS).counts == {}


def test_a_request_answered_with_another_requests_token_leaks():
    history = [
        event("request", "u1", A, 0.0, 0.2, f'{{"greeting": "Hello, {B}!"}}'),
        event("request", "u2", B, 0.1, 0.3, f'{{"greeting": "Hello, {B}!"}}'),
        event("request", "u3", C, 0.4, 0.5, f'{{"greeting": "Hello, {C}!"}}'),
    ]
    verdict = judge("per_request", history, TOKENS)
    assert verdict.counts == {"request_leaks": 1}
    assert [e.user for e in verdict.examples[0].witness] == ["u1", "u2"]


def test_a_5xx_is_a_failed_request_and_a_501_is_not_served():
    failed = judge("per_request", [event("request", "u1", A, 0, 1, "", status=500)], TOKENS)
    assert failed.counts == {"failed": 1}
    history = [event("increment", "u1", None, 0, 1, None, status=501)]
    not_served = judge("counter", history, TOKENS)
    assert not not_served.counts and not_served.not_served


FORMAT = REPO_ROOT / "loadtests" / "check" / "specs" / "format.toml"


def test_the_issues_spec_parses_with_every_keys_line():
    spec = load_spec(FORMAT)
    assert spec.app.gunicorn == ["--preload", "--max-requests", "500"]
    assert spec.app.setup == ["python", "-m", "shop", "init-db"]
    lines = FORMAT.read_text().splitlines()
    for model in spec.models:
        assert lines[model.lines[""] - 1].startswith(f"[[{model.kind}]]")
        for key, route in model.routes.items():
            assert lines[route.line - 1].startswith(f"{key} = "), (model.name, key)
    assert [m.name for m in spec.models] == ["hits", "cart", "hello", "banner", "me"]
