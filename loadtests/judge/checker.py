"""Turn a recorded history into verdicts, each anomaly with its smallest witness.

A history is a list of Events, one per attempt; the attempts of one logical
request share a key. check() applies one rule per scope of state: the
counter's and the visits' are in writes.py, with each write's fate
(acknowledged, not applied, ambiguous); greet's is here: every greeting
names the caller, and its witness is the overlapping request whose name it
got. The rules in words are in loadtests/README.md.

unexpected() says what fails a run: errors, and any anomaly the caller does
not tolerate. What an app tolerates is a fact about the app (registry.py),
passed in, so judging a history needs nothing but the history.
"""

from collections import Counter, defaultdict

from loadtests.judge.history import NOT_APPLIED, Event
from loadtests.judge.verdict import KIND, Anomaly, Verdict
from loadtests.judge.writes import (
    ACKNOWLEDGED,
    AMBIGUOUS,
    NOT_SERVED,
    check_counter,
    check_visits,
    fate,
    requests_of,
    span,
)


def check(history: list[Event]) -> Verdict:
    verdict = Verdict(operations=len(history))
    verdict.not_served = sum(e.status == NOT_SERVED for e in history)
    verdict.errors = sum(not e.ok and e.status != NOT_SERVED for e in history)
    verdict.workers = len({e.pid for e in history if e.worker})
    verdict.unavailable = sum(e.status == 503 for e in history)
    verdict.no_answer = sum(e.status == 0 for e in history)
    writes = [e for e in history if e.op in ("increment", "add_visit") and e.status != NOT_SERVED]
    fates = Counter(fate(attempts) for attempts in requests_of(writes))
    verdict.requests = fates.total()
    verdict.acknowledged = fates[ACKNOWLEDGED]
    verdict.ambiguous = fates[AMBIGUOUS]
    verdict.not_applied = fates[NOT_APPLIED]
    check_counter(history, verdict)
    check_visits(history, verdict)
    check_greet(history, verdict)
    return verdict


def check_greet(history: list[Event], verdict: Verdict) -> None:
    greets = [e for e in history if e.op == "greet" and e.ok]
    wrong = [e for e in greets if e.value != f"Hello, {e.arg}!"]
    verdict.greet_leaks = len(wrong)
    if not wrong:
        return
    # The witness: a wrong answer and the overlapping request whose name it
    # got. Only requests that asked for that name can be it.
    asked_for: dict[str, list[Event]] = defaultdict(list)
    for event in greets:
        asked_for[f"Hello, {event.arg}!"].append(event)

    def witness(event: Event) -> list[Event]:
        overlapping = [
            other
            for other in asked_for[event.value]
            if other is not event and other.start < event.end and event.start < other.end
        ]
        culprit = min(overlapping, key=lambda o: span([o, event]), default=None)
        return [event, culprit] if culprit else [event]

    smallest = min((witness(e) for e in wrong), key=span)
    leak = smallest[0]
    verdict.examples.append(
        Anomaly(
            KIND["greet_leaks"].witness,
            f"{leak.user} asked to greet {leak.arg!r} and got {leak.value!r}",
            smallest,
        )
    )


def unexpected(
    app: str, verdict: Verdict, tolerated: frozenset[str] | None, faults: bool = False
) -> list[str]:
    """What a run of `app` must not show: errors anywhere, and any anomaly
    not `tolerated` (Verdict field names). The caller says what is: a fixed
    app's known limits (registry.py App.tolerated) and what its run expects
    besides; None tolerates every anomaly (broken_global's are the lesson).

    In a run with injected `faults`, 503s and requests that got no answer are
    what the faults cause: such a run judges exactly-once, not availability,
    and only other errors (a 500, a 4xx, a 507) count. Yet it must have
    acknowledged some write: with none, it proved nothing."""
    problems = []
    errors = verdict.errors - (verdict.unavailable + verdict.no_answer if faults else 0)
    if errors:
        problems.append(f"{app}: {errors} requests failed")
    if faults and not verdict.acknowledged:
        problems.append(f"{app}: no write was acknowledged, so the run proves nothing")
    if tolerated is not None:
        found = {
            name: n
            for name in Verdict.COUNTS
            if (n := getattr(verdict, name)) and name not in tolerated
        }
        if found:
            shown = ", ".join(f"{n} {KIND[name].title}" for name, n in found.items())
            problems.append(f"{app}: anomalies in an app that should have none: {shown}")
    return problems
