"""Turn a recorded history into verdicts, and keep the smallest witness.

A history is a list of client.Event, one per attempt; the attempts of one
logical request share a key, and each write request is judged by its fate:
acknowledged, not applied, or ambiguous. The rules, one per scope of state
(the counter's and the visits', with the fates, are in loadtests/judge/writes.py):

counter  Acknowledged increments of a correct counter return distinct values.
         Two increments answered by the same worker process with the same
         value are a lost update (threads interleaved read and write). The
         same value from two different processes is divergence (each has its
         own copy). One request answered two different values was applied
         twice. A read after the last increment (and after the history's
         reset) must lie between the acknowledged requests and those plus the
         ambiguous ones: above, the excess was applied twice; below,
         acknowledged increments were lost.
visits   Each user appends tokens nobody else uses. The user's last list must
         hold each of their acknowledged tokens exactly once, and an
         ambiguous one at most once (twice: duplicated, i.e. applied twice);
         any response that shows a token of another user (or of nobody in
         this run) leaks. Appends a user sent concurrently from several tabs
         (scenario "tabs") are counted apart: losing them is a known limit of
         sessions.
greet    Every greeting names the caller; any other name leaked in.

Every anomaly comes with its witness, the events that prove it, smallest
first: for a lost update, the two overlapping requests that returned the same
value. From a run of broken_global under 2 workers x 4 threads (make demo):

    lost update: worker 5223 returned 34 twice
      +0.1871s..+0.1941s  u10-84db  increment -> 34  (5223-5261)
      +0.1885s..+0.1946s  u30-84db  increment -> 34  (5223-5228)

Besides the anomalies, a Verdict counts the write requests by fate and the
attempts that met a 503 or got no answer: figures of a fault run, not faults
of the app (unexpected(..., faults=True) leaves them out).
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
