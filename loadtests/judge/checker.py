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
from dataclasses import dataclass, field

from loadtests.judge.history import NOT_APPLIED, Event
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
from registry import APPS


@dataclass(frozen=True)
class Kind:
    """One kind of anomaly: every table, chart, tab and test takes its names here."""

    field: str  # the Verdict count, and the key in JSON and CSV results
    title: str  # a column's title: "lost updates"
    witness: str  # the name its witness is printed under: "lost update: ..."
    scope: str  # the scope of state it concerns: counter, visits, tabs, greet
    # A write's fate under faults: the fault run's table shows it (make faults),
    # the hammer's does not (its requests are never retried).
    faults: bool = False


KINDS = (
    Kind("lost_updates", "lost updates", "lost update", "counter"),
    Kind("divergence", "divergence", "divergence", "counter"),
    Kind("final_reads_wrong", "final read wrong", "final value", "counter"),
    Kind("applied_twice", "applied twice", "applied twice", "counter", faults=True),
    Kind("acknowledged_lost", "acknowledged lost", "acknowledged lost", "counter", faults=True),
    Kind("visits_lost", "visits lost", "lost visit", "visits"),
    Kind("tabs_lost", "tabs lost", "lost tab", "tabs"),
    Kind("visits_duplicated", "visits duplicated", "duplicated visit", "visits"),
    Kind("visits_leaked", "visits leaked", "visit leak", "visits"),
    Kind("greet_leaks", "greet leaks", "greet leak", "greet"),
)
KIND = {kind.field: kind for kind in KINDS}
# The anomaly counts of each scope of state: {"counter": ("lost_updates", ...), ...}
SCOPES = {
    scope: tuple(kind.field for kind in KINDS if kind.scope == scope)
    for scope in dict.fromkeys(kind.scope for kind in KINDS)
}
# A write's exactly-once verdict, over both write routes: applied more than
# once (an increment, or a visit in the list twice), or acknowledged and gone.
APPLIED_TWICE = ("applied_twice", "visits_duplicated")
ACKNOWLEDGED_LOST = ("acknowledged_lost", "visits_lost")


@dataclass
class Anomaly:
    kind: str
    summary: str
    witness: list[Event]


@dataclass
class Verdict:
    operations: int = 0
    errors: int = 0
    not_served: int = 0
    lost_updates: int = 0
    divergence: int = 0
    workers: int = 0
    final_reads_wrong: int = 0
    applied_twice: int = 0  # increments applied more than once
    acknowledged_lost: int = 0  # acknowledged increments the final read does not hold
    visits_lost: int = 0
    tabs_lost: int = 0  # one user, many tabs: concurrent appends sharing a cookie
    visits_duplicated: int = 0
    visits_leaked: int = 0
    greet_leaks: int = 0
    # Figures, not anomalies: logical writes (increments and appends) by fate,
    # and the attempts that met a fault.
    requests: int = 0
    acknowledged: int = 0
    ambiguous: int = 0
    not_applied: int = 0
    unavailable: int = 0  # attempts answered 503
    no_answer: int = 0  # attempts that got no HTTP answer (status 0)
    counter_served: bool = True  # False when every increment was answered 501
    examples: list[Anomaly] = field(default_factory=list)  # one per kind, smallest

    COUNTS = tuple(kind.field for kind in KINDS)
    FIGURES = ("requests", "acknowledged", "ambiguous", "not_applied", "unavailable", "no_answer")

    @property
    def anomalies(self) -> int:
        return sum(getattr(self, name) for name in self.COUNTS)

    @property
    def writes_applied_twice(self) -> int:
        return sum(getattr(self, name) for name in APPLIED_TWICE)

    @property
    def writes_lost(self) -> int:
        return sum(getattr(self, name) for name in ACKNOWLEDGED_LOST)

    def count(self, name: str, n: int = 1) -> None:
        setattr(self, name, getattr(self, name) + n)

    def note(self, name: str, summary: str, witness: list[Event]) -> None:
        """Keep a witness of this kind of anomaly, unless one is kept already."""
        kind = KIND[name].witness
        if not any(anomaly.kind == kind for anomaly in self.examples):
            self.examples.append(Anomaly(kind, summary, witness))

    def counts(self) -> dict[str, int]:
        return {
            name: getattr(self, name)
            for name in (
                "operations",
                "errors",
                "not_served",
                "workers",
                *self.COUNTS,
                *self.FIGURES,
            )
        }


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
    app: str, verdict: Verdict, faults: bool = False, expected: frozenset[str] = frozenset()
) -> list[str]:
    """What a run of `app` must not show: errors anywhere, and in a fixed app
    any anomaly beyond its known limits (registry.py) and the `expected`
    ones. broken_global's anomalies are the lesson, so they are expected.

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
    if app in APPS and APPS[app].is_fixed:
        allowed = APPS[app].known_limits | expected
        found = {
            name: n
            for name in Verdict.COUNTS
            if (n := getattr(verdict, name)) and name not in allowed
        }
        if found:
            shown = ", ".join(f"{n} {KIND[name].title}" for name, n in found.items())
            problems.append(f"{app}: anomalies in an app that should have none: {shown}")
    return problems
