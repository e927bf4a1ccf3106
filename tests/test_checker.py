"""The checker on hand-built histories, where the right verdict is known."""

from loadtests.checker import check
from loadtests.history import Event


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
