"""The check's new rules on hand-built histories: shared_value's stale read,
login's lost identity and identity leak, per_request's leak, rate_limit's
requests over the limit and remaining count going up, broadcast's missed
message. Each history is the smallest that shows the anomaly, next to the
same history made right."""

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


def hit(user, start, end, remaining, worker, status=200):
    return event("hit", user, None, start, end, remaining, status=status, worker=worker)


def test_more_accepted_than_the_limit_is_over_it_with_every_accepted_request():
    history = [
        hit("u1", 0.0, 0.1, 2, "1-1"),
        hit("u2", 0.2, 0.3, 2, "2-1"),
        hit("u1", 0.4, 0.5, 1, "1-1"),
        hit("u2", 0.6, 0.7, 0, "1-1", status=429),
    ]
    per_address = judge("rate_limit", history, TOKENS, {"limit": 2, "per": "address"})
    assert per_address.counts == {"over_limit": 1}
    over = per_address.examples[0]
    assert over.summary == (
        "3 accepted where the limit is 2, from one address, answered by workers 1 and 2"
    )
    assert [e.status for e in over.witness] == [200, 200, 200]
    # Counted per user, each is within its limit, and neither's count went up.
    assert judge("rate_limit", history, TOKENS, {"limit": 2}).counts == {}


def test_a_remaining_count_that_goes_up_after_an_answer_is_a_witness_pair():
    history = [hit("u1", 0.0, 0.1, 1, "1-1"), hit("u2", 0.2, 0.3, 2, "2-1")]
    verdict = judge("rate_limit", history, TOKENS, {"limit": 3, "per": "address"})
    assert verdict.counts == {"remaining_up": 1}
    assert verdict.examples[0].summary == (
        "u2 was told 2 remain on worker 2, after u1 was told 1 on worker 1"
    )
    # Overlapping requests may be counted in either order; a 429 is no failure.
    overlapping = [hit("u1", 0.0, 0.3, 1, "1-1"), hit("u2", 0.2, 0.4, 2, "2-1"),
                   hit("u3", 0.5, 0.6, 0, "1-1", status=429)]  # fmt: skip
    assert judge("rate_limit", overlapping, TOKENS, {"limit": 3, "per": "address"}).counts == {}


def stream(name, opened, closed, worker):
    return [
        event("subscribe", name, None, opened - 0.01, opened, "listening", worker=worker),
        event("unsubscribe", name, None, closed, closed, "closed", worker=worker),
    ]


def test_a_message_one_subscriber_never_got_is_missed():
    publish = event("publish", "pub", A, 1.0, 1.1, A, worker="1-3")
    got = event("receive", "s0", A, 1.05, 1.05, A, worker="1-2")
    history = [*stream("s0", 0.5, 4.0, "1-2"), *stream("s1", 0.5, 4.0, "2-2"), publish, got]
    verdict = judge("broadcast", history, TOKENS, {"within": 2})
    assert verdict.counts == {"messages_missed": 1}
    missed = verdict.examples[0]
    assert missed.summary == (
        "the message published through worker 1 reached 1 of 2 subscribers; "
        "the one on worker 2 never got it"
    )
    assert [e.op for e in missed.witness] == ["publish", "subscribe", "receive"]
    both = [*history, event("receive", "s1", A, 1.2, 1.2, A, worker="2-2")]
    assert judge("broadcast", both, TOKENS, {"within": 2}).counts == {}


def test_a_message_received_late_is_missed_and_one_sent_before_listening_is_not_owed():
    publish = event("publish", "pub", A, 1.0, 1.1, A, worker="1-3")
    late = event("receive", "s0", A, 4.1, 4.1, A, worker="1-2")
    history = [*stream("s0", 0.5, 5.0, "1-2"), publish, late]
    verdict = judge("broadcast", history, TOKENS, {"within": 2})
    assert (
        "got it 3.0s after the publish was answered, later than 2s" in verdict.examples[0].summary
    )
    # A subscriber whose headers came after the publish began, or one closed
    # before the bound, was not listening for all of it.
    later = [*stream("s0", 1.05, 5.0, "1-2"), *stream("s1", 0.5, 2.0, "2-2"), publish]
    assert judge("broadcast", later, TOKENS, {"within": 2}).counts == {}


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
    assert [m.name for m in spec.models] == [
        "hits", "cart", "hello", "banner", "me", "search", "announcements"
    ]  # fmt: skip
