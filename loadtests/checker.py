"""Turn a recorded history into verdicts, and keep the smallest witness.

A history is a list of client.Event. The rules, one per scope of state:

counter  Acknowledged increments of a correct counter return distinct values.
         Two increments answered by the same worker process with the same
         value are a lost update (threads interleaved read and write). The
         same value from two different processes is divergence (each has its
         own copy). A read after the last increment must lie between the
         acknowledged and the attempted count (after the history's reset).
visits   Each user appends tokens nobody else uses. The user's last list must
         hold each of their acknowledged tokens exactly once; any response
         that shows a token of another user (or of nobody in this run) leaks.
         Appends a user sent concurrently from several tabs (scenario "tabs")
         are counted apart: losing them is a known limit of sessions.
greet    Every greeting names the caller; any other name leaked in.

Every anomaly comes with its witness, the events that prove it, smallest
first: for a lost update, the two overlapping requests that returned the same
value. From a run of broken_global under 2 workers x 4 threads (make demo):

    lost update: worker 5223 returned 34 twice
      +0.1871s..+0.1941s  u10-84db  increment -> 34  (5223-5261)
      +0.1885s..+0.1946s  u30-84db  increment -> 34  (5223-5228)
"""

import itertools
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from loadtests.history import Event
from serve.registry import APPS

NOT_SERVED = 501  # the app says this scope is not its job (fixed_session's counter)


@dataclass(frozen=True)
class Kind:
    """One kind of anomaly: every table, chart, tab and test takes its names here."""

    field: str  # the Verdict count, and the key in JSON and CSV results
    title: str  # a column's title: "lost updates"
    witness: str  # the name its witness is printed under: "lost update: ..."
    scope: str  # the scope of state it concerns: counter, visits, tabs, greet


KINDS = (
    Kind("lost_updates", "lost updates", "lost update", "counter"),
    Kind("divergence", "divergence", "divergence", "counter"),
    Kind("final_reads_wrong", "final read wrong", "final value", "counter"),
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
    visits_lost: int = 0
    tabs_lost: int = 0  # one user, many tabs: concurrent appends sharing a cookie
    visits_duplicated: int = 0
    visits_leaked: int = 0
    greet_leaks: int = 0
    counter_served: bool = True  # False when every increment was answered 501
    examples: list[Anomaly] = field(default_factory=list)  # one per kind, smallest

    COUNTS = tuple(kind.field for kind in KINDS)

    @property
    def anomalies(self) -> int:
        return sum(getattr(self, name) for name in self.COUNTS)

    def counts(self) -> dict[str, int]:
        return {
            name: getattr(self, name)
            for name in ("operations", "errors", "not_served", "workers", *self.COUNTS)
        }


def check(history: list[Event]) -> Verdict:
    verdict = Verdict(operations=len(history))
    verdict.not_served = sum(e.status == NOT_SERVED for e in history)
    verdict.errors = sum(not e.ok and e.status != NOT_SERVED for e in history)
    verdict.workers = len({e.pid for e in history if e.worker})
    check_counter(history, verdict)
    check_visits(history, verdict)
    check_greet(history, verdict)
    return verdict


def span(events: list[Event]) -> float:
    return max(e.end for e in events) - min(e.start for e in events)


def smallest_pair(groups: list[list[Event]], same_pid: bool) -> list[Event] | None:
    pairs = [
        [a, b]
        for events in groups
        for a, b in itertools.combinations(events, 2)
        if (a.pid == b.pid) == same_pid
    ]
    return min(pairs, key=span, default=None)


def check_counter(history: list[Event], verdict: Verdict) -> None:
    increments = [e for e in history if e.op == "increment" and e.status != NOT_SERVED]
    acknowledged = [e for e in increments if e.ok]
    verdict.counter_served = bool(acknowledged) or not any(
        e.op == "increment" and e.status == NOT_SERVED for e in history
    )
    by_value: dict[int, list[Event]] = defaultdict(list)
    for event in acknowledged:
        by_value[event.value].append(event)
    repeated = [events for events in by_value.values() if len(events) > 1]
    for events in repeated:
        per_worker = Counter(e.pid for e in events)
        verdict.lost_updates += sum(n - 1 for n in per_worker.values())
        verdict.divergence += len(per_worker) - 1

    if pair := smallest_pair(repeated, same_pid=True):
        verdict.examples.append(
            Anomaly(
                KIND["lost_updates"].witness,
                f"worker {pair[0].pid} returned {pair[0].value} twice",
                pair,
            )
        )
    if pair := smallest_pair(repeated, same_pid=False):
        verdict.examples.append(
            Anomaly(
                KIND["divergence"].witness,
                f"workers {pair[0].pid} and {pair[1].pid} both returned {pair[0].value}",
                pair,
            )
        )

    if not increments or not any(e.op == "reset" and e.ok for e in history):
        return
    last_increment_end = max(e.end for e in increments)
    final_reads = [e for e in history if e.op == "read" and e.ok and e.start > last_increment_end]
    low, high = len(acknowledged), len(increments)
    wrong = [e for e in final_reads if not low <= e.value <= high]
    verdict.final_reads_wrong = len(wrong)
    if wrong:
        worst = max(wrong, key=lambda e: abs(e.value - low))
        verdict.examples.append(
            Anomaly(
                KIND["final_reads_wrong"].witness,
                f"read {worst.value} after {low} acknowledged of {high} attempted increments",
                [worst],
            )
        )


# A lost append, by the scenario that sent it: the kind of anomaly it is.
LOST = {"": KIND["visits_lost"], "tabs": KIND["tabs_lost"]}


def check_visits(history: list[Event], verdict: Verdict) -> None:
    appends = [e for e in history if e.op == "add_visit"]
    owner = {e.arg: e.user for e in appends}
    answers = [e for e in history if e.op in ("add_visit", "list_visits") and e.ok]

    for event in answers:
        foreign = [t for t in event.value if owner.get(t) != event.user]
        if foreign:
            verdict.visits_leaked += 1
            if verdict.visits_leaked == 1:
                source = next((e for e in appends if e.arg == foreign[0]), None)
                verdict.examples.append(
                    Anomaly(
                        KIND["visits_leaked"].witness,
                        f"{event.user} was shown {foreign[0]!r}, "
                        f"appended by {owner.get(foreign[0], 'nobody in this run')}",
                        [e for e in (source, event) if e],
                    )
                )

    # The user's last list must hold each acknowledged append exactly once.
    last_list: dict[str, Event] = {}
    for event in answers:
        if event.op == "list_visits" and (
            event.user not in last_list or event.start > last_list[event.user].start
        ):
            last_list[event.user] = event
    acknowledged: dict[str, list[Event]] = defaultdict(list)
    for event in appends:
        if event.ok:
            acknowledged[event.user].append(event)
    for user, events in acknowledged.items():
        final = last_list.get(user)
        if final is None:
            continue
        seen = Counter(final.value)
        verdict.visits_duplicated += sum(n - 1 for t, n in seen.items() if owner.get(t) == user)
        for lost in (e for e in events if seen[e.arg] == 0):
            kind = LOST[lost.scenario]
            setattr(verdict, kind.field, getattr(verdict, kind.field) + 1)
            if not any(a.kind == kind.witness for a in verdict.examples):
                verdict.examples.append(
                    Anomaly(
                        kind.witness,
                        f"{user}'s append of {lost.arg!r} was acknowledged, "
                        f"then missing from {len(final.value)} visits",
                        [lost, final],
                    )
                )


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


def unexpected(app: str, verdict: Verdict) -> list[str]:
    """What a run of `app` must not show: errors anywhere, and in a fixed app
    any anomaly beyond its known limits (serve/registry.py). broken_global's
    anomalies are the lesson, so they are expected."""
    problems = []
    if verdict.errors:
        problems.append(f"{app}: {verdict.errors} requests failed")
    if app in APPS and APPS[app].is_fixed:
        allowed = APPS[app].known_limits
        found = {
            name: n
            for name in Verdict.COUNTS
            if (n := getattr(verdict, name)) and name not in allowed
        }
        if found:
            problems.append(f"{app}: anomalies in an app that should have none: {found}")
    return problems
