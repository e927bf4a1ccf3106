"""The checker on hand-built histories, where the right verdict is known."""

from loadtests.judge.checker import check, unexpected
from loadtests.judge.history import Event


def event(op, user, start, end, value, worker="100-1", arg=None, status=200):
    return Event(op, user, arg, start, end, status, value, worker)


def correct_history() -> list[Event]:
    history = [event("reset", "u0", 0.0, 0.1, 0)]
    # Six overlapping increments over two worker processes, all distinct.
    for i in range(6):
        worker = "100-1" if i % 2 else "200-1"
        history.append(event("increment", f"u{i % 3}", 1 + i * 0.01, 1.5 + i * 0.01, i + 1, worker))
    history.append(event("read", "u0", 2.0, 2.1, 6, "200-3"))
    for user in ("a", "b"):
        history.append(
            event("add_visit", user, 3.0, 3.1, [f"{user}/0"], arg=f"{user}/0", status=201)
        )
        history.append(
            event(
                "add_visit", user, 3.2, 3.3, [f"{user}/0", f"{user}/1"], arg=f"{user}/1", status=201
            )
        )
        history.append(event("list_visits", user, 3.4, 3.5, [f"{user}/0", f"{user}/1"]))
        history.append(event("greet", user, 4.0, 4.1, f"Hello, {user}!", arg=user))
    return history


def test_a_correct_history_has_no_anomaly():
    verdict = check(correct_history())
    assert verdict.anomalies == 0
    assert verdict.examples == []
    assert verdict.workers == 2
    assert verdict.operations == 16


def test_a_lost_update_is_found_with_the_smallest_witness():
    history = correct_history()
    # Worker 100 hands out 7 three times: a narrow overlapping pair, and a wide third.
    narrow = [
        event("increment", "x", 1.20, 1.22, 7, "100-2"),
        event("increment", "y", 1.21, 1.23, 7, "100-3"),
    ]
    wide = event("increment", "z", 0.5, 1.9, 7, "100-4")
    verdict = check([*history, *narrow, wide])
    assert verdict.lost_updates == 2  # three answers of 7 from one process: two lost
    assert verdict.divergence == 0
    [example] = [a for a in verdict.examples if a.kind == "lost update"]
    assert example.witness == narrow


def test_the_same_value_from_two_processes_is_divergence():
    history = correct_history()
    history.append(event("increment", "x", 1.2, 1.3, 4, "300-1"))  # 4 came from 100 too
    verdict = check(history)
    assert verdict.divergence == 1
    assert verdict.lost_updates == 0
    [example] = [a for a in verdict.examples if a.kind == "divergence"]
    assert {e.pid for e in example.witness} == {"100", "300"}
    assert {e.value for e in example.witness} == {4}


def test_a_final_read_below_the_acknowledged_count_is_wrong():
    history = correct_history()
    history.append(event("read", "u1", 2.2, 2.3, 4, "100-9"))
    verdict = check(history)
    assert verdict.final_reads_wrong == 1
    assert "read 4 after 6 acknowledged" in verdict.examples[0].summary


def test_a_failed_increment_widens_what_a_final_read_may_show():
    history = correct_history()
    history.append(event("increment", "u2", 1.0, 1.1, None, status=0))
    history.append(event("read", "u1", 2.2, 2.3, 7))  # the failed one may have landed
    assert check(history).final_reads_wrong == 0
    assert check(history).errors == 1


def test_another_users_visit_in_a_response_is_a_leak():
    history = correct_history()
    history.append(event("list_visits", "b", 3.6, 3.7, ["b/0", "b/1", "a/0"]))
    verdict = check(history)
    assert verdict.visits_leaked == 1
    [example] = verdict.examples
    assert example.kind == "visit leak"
    assert example.witness[0].arg == "a/0"  # the append that was leaked
    assert example.witness[1].user == "b"


def test_an_acknowledged_visit_missing_from_the_final_list_is_lost():
    history = correct_history()
    history.append(event("list_visits", "a", 3.6, 3.7, ["a/1"]))
    verdict = check(history)
    assert verdict.visits_lost == 1
    assert verdict.examples[0].kind == "lost visit"


def test_a_greeting_for_someone_else_is_a_leak_with_its_culprit():
    history = correct_history()
    history += [
        event("greet", "c", 5.0, 5.2, "Hello, d!", arg="c"),
        event("greet", "d", 5.1, 5.3, "Hello, d!", arg="d"),
        event("greet", "e", 9.0, 9.1, "Hello, e!", arg="e"),  # not overlapping
    ]
    verdict = check(history)
    assert verdict.greet_leaks == 1
    [example] = verdict.examples
    assert [e.user for e in example.witness] == ["c", "d"]


def test_not_served_is_neither_an_error_nor_an_anomaly():
    history = correct_history()
    history.append(event("increment", "u1", 6.0, 6.1, None, status=501))
    verdict = check(history)
    assert verdict.not_served == 1
    assert verdict.errors == 0
    assert verdict.anomalies == 0


# Faults: a logical request is judged over its attempts (same key), by its fate.


def attempt(op, user, start, value, key, n=1, status=200, outcome="", arg=None, replayed=False):
    return Event(
        op,
        user,
        arg,
        start,
        start + 0.05,
        status,
        value,
        "100-1",
        "",
        "",
        key,
        n,
        outcome,
        replayed,
    )


def counter_history(*increments: Event, final: int) -> list[Event]:
    """A reset, the given increments, and a read after the last of them."""
    return [event("reset", "u0", 0.0, 0.1, 0), *increments, event("read", "u0", 9.0, 9.1, final)]


def test_a_write_retried_after_503_unknown_is_one_acknowledged_request():
    history = counter_history(
        attempt("increment", "a", 1.0, None, "k1", 1, 503, "unknown"),
        attempt("increment", "a", 2.0, 1, "k1", 2),
        attempt("increment", "b", 3.0, 2, "k2"),
        final=2,
    )
    verdict = check(history)
    assert (verdict.requests, verdict.acknowledged, verdict.ambiguous) == (2, 2, 0)
    assert verdict.unavailable == 1
    assert verdict.anomalies == 0, verdict.examples


def test_a_naive_retry_without_keys_is_counted_applied_twice():
    """The 503 "unknown" attempt landed, and so did the retry: the final read
    holds one more than the two acknowledged requests could make."""
    first = attempt("increment", "a", 1.0, None, "a#1", 1, 503, "unknown")
    retry = attempt("increment", "a", 2.0, 2, "a#1", 2)
    history = counter_history(attempt("increment", "b", 1.5, 1, "b#1"), first, retry, final=3)
    verdict = check(history)
    assert verdict.applied_twice == 1
    assert verdict.final_reads_wrong == 1
    assert verdict.acknowledged_lost == 0
    [double] = [a for a in verdict.examples if a.kind == "applied twice"]
    assert double.witness[:2] == [first, retry]  # the retried request...
    assert double.witness[2].op == "read"  # ...and the read that counts it twice
    assert "read 3 after 2 acknowledged and 0 ambiguous" in double.summary


def test_a_keyed_retry_answered_with_a_replay_is_applied_once():
    history = counter_history(
        attempt("increment", "a", 1.0, 1, "k1"),
        attempt("increment", "a", 2.0, 1, "k1", 2, replayed=True),  # the same answer again
        final=1,
    )
    verdict = check(history)
    assert verdict.acknowledged == 1
    assert verdict.anomalies == 0, verdict.examples


def test_one_request_answered_two_different_values_was_applied_twice():
    history = counter_history(
        attempt("increment", "a", 1.0, 1, "k1"),
        attempt("increment", "a", 2.0, 2, "k1", 2),
        final=2,
    )
    verdict = check(history)
    assert verdict.applied_twice == 1  # seen in the answers; the final read agrees
    [double] = [a for a in verdict.examples if a.kind == "applied twice"]
    assert [e.value for e in double.witness] == [1, 2]


def test_a_final_read_below_the_acknowledged_requests_counts_the_lost_ones():
    history = counter_history(
        *(attempt("increment", "a", i, i, f"k{i}") for i in (1, 2, 3)), final=1
    )
    verdict = check(history)
    assert verdict.acknowledged_lost == 2
    assert verdict.applied_twice == 0
    assert any(a.kind == "acknowledged lost" and "2 missing" in a.summary for a in verdict.examples)


def test_an_ambiguous_request_may_or_may_not_have_landed():
    no_answer = attempt("increment", "a", 1.0, None, "k1", 1, 0, "unknown")
    for final in (1, 2):
        verdict = check(
            counter_history(no_answer, attempt("increment", "b", 2.0, 1, "k2"), final=final)
        )
        assert verdict.ambiguous == 1
        assert verdict.no_answer == 1
        assert verdict.anomalies == 0, (final, verdict.examples)
    verdict = check(counter_history(no_answer, attempt("increment", "b", 2.0, 1, "k2"), final=3))
    assert verdict.applied_twice == 1


def test_a_write_that_provably_failed_is_not_applied_and_may_not_land():
    """4xx, 507, 503 "not applied" and a connection never opened: nothing was
    written, so a read that counts one of them is one too many."""
    failed = [
        attempt("increment", "a", 1.0, None, "k1", 1, 503, "not applied"),
        attempt("increment", "b", 1.0, None, "k2", 1, 507, "not applied"),
        attempt("increment", "c", 1.0, None, "k3", 1, 400),
        attempt("increment", "d", 1.0, None, "k4", 1, 0, "not applied"),
    ]
    ok = attempt("increment", "e", 2.0, 1, "k5")
    verdict = check(counter_history(*failed, ok, final=1))
    assert (verdict.requests, verdict.not_applied, verdict.acknowledged) == (5, 4, 1)
    assert verdict.anomalies == 0, verdict.examples
    assert check(counter_history(*failed, ok, final=2)).applied_twice == 1


def visits_history(*appends: Event, final: list[str]) -> list[Event]:
    return [*appends, attempt("list_visits", "a", 9.0, final, "")]


def test_a_visit_retried_without_a_key_and_kept_twice_was_applied_twice():
    first = attempt("add_visit", "a", 1.0, None, "a#1", 1, 503, "unknown", arg="a/0")
    retry = attempt("add_visit", "a", 2.0, ["a/0", "a/0"], "a#1", 2, 201, arg="a/0")
    verdict = check(visits_history(first, retry, final=["a/0", "a/0"]))
    assert verdict.visits_duplicated == 1
    assert verdict.writes_applied_twice == 1
    [double] = [a for a in verdict.examples if a.kind == "duplicated visit"]
    assert double.witness[:2] == [first, retry]
    assert "sent 2 times" in double.summary


def test_an_ambiguous_visit_may_be_missing_or_there_once():
    ambiguous = attempt("add_visit", "a", 1.0, None, "a#1", 1, 0, "unknown", arg="a/0")
    acknowledged = attempt("add_visit", "a", 2.0, ["a/1"], "a#2", 1, 201, arg="a/1")
    for final in (["a/1"], ["a/0", "a/1"]):
        verdict = check(visits_history(ambiguous, acknowledged, final=final))
        assert verdict.ambiguous == 1
        assert verdict.anomalies == 0, (final, verdict.examples)


def test_an_acknowledged_visit_with_two_answers_is_lost_once():
    history = visits_history(
        attempt("add_visit", "a", 1.0, ["a/0"], "k1", 1, 201, arg="a/0"),
        attempt("add_visit", "a", 2.0, ["a/0"], "k1", 2, 201, arg="a/0", replayed=True),
        final=[],
    )
    verdict = check(history)
    assert verdict.visits_lost == 1
    assert verdict.writes_lost == 1


def test_a_fault_run_judges_exactly_once_not_availability():
    history = counter_history(
        attempt("increment", "a", 1.0, None, "k1", 1, 503, "unknown"),
        attempt("increment", "a", 2.0, None, "k1", 2, 0, "unknown"),
        attempt("increment", "a", 3.0, 1, "k1", 3),
        final=1,
    )
    verdict = check(history)
    assert verdict.errors == 2
    assert unexpected("fixed_db", verdict, frozenset()) == ["fixed_db: 2 requests failed"]
    assert unexpected("fixed_db", verdict, frozenset(), faults=True) == []
    history.append(attempt("increment", "b", 4.0, None, "k2", 1, 500))  # not a fault's doing
    assert unexpected("fixed_db", check(history), frozenset(), faults=True) == [
        "fixed_db: 1 requests failed"
    ]


def test_a_fault_run_with_nothing_acknowledged_proves_nothing():
    """As when the store is unreachable for the whole run: all 503s."""
    history = counter_history(
        attempt("increment", "a", 1.0, None, "k1", 1, 503, "not applied"),
        attempt("increment", "a", 2.0, None, "k1", 2, 503, "not applied"),
        final=0,
    )
    assert unexpected("fixed_db", check(history), frozenset(), faults=True) == [
        "fixed_db: no write was acknowledged, so the run proves nothing"
    ]


def test_a_double_apply_is_expected_only_where_the_run_says_so():
    history = counter_history(
        attempt("increment", "a", 1.0, None, "a#1", 1, 503, "unknown"),
        attempt("increment", "a", 2.0, 1, "a#1", 2),
        final=2,
    )
    verdict = check(history)
    assert unexpected("fixed_cache", verdict, frozenset(), faults=True)  # keys on: a failure
    expected = frozenset({"applied_twice", "final_reads_wrong"})
    assert unexpected("fixed_cache", verdict, expected, faults=True) == []
    assert unexpected("broken_global", verdict, None, faults=True) == []  # the lesson
