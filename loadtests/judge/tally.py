"""The checker's verdict over a Locust run, kept up to date as events arrive,
in memory bounded by what is being checked rather than by how long it runs.

Each unit (one task's events: an increment, a visitor's appends and list, a
greeting) is judged once, when it is recorded, by checker.py's rules; the
Tally keeps only what later events can still need. The counter keeps a byte
per value returned, a bit per process that returned it (tally_counter.py),
and the reads around the last increment; a visitor lives in one unit, so its
visits are judged there; a greeting needs nothing past itself. Witnesses
come from windows of the last WINDOW events. tests/test_locust.py feeds one
recorded run to this and to checker.check and compares every count.
"""

import time
from collections import Counter, OrderedDict, deque
from dataclasses import replace

from loadtests.judge.checker import unexpected
from loadtests.judge.history import Event
from loadtests.judge.tally_counter import CounterTally
from loadtests.judge.verdict import CHART_SCOPES, KIND, KINDS, Anomaly, Verdict
from loadtests.judge.writes import (
    ACKNOWLEDGED,
    AMBIGUOUS,
    LOST,
    NOT_SERVED,
    fate,
    first_success,
    requests_of,
)

WINDOW = 2048  # recent appends and greetings kept for witnesses
SERIES_SECONDS = 5.0  # anomalies over time: a point every 5 s...
SERIES_POINTS = 720  # ...at most this many; past it, every other point goes and the step doubles


def app_errors(verdict: Verdict) -> int:
    """Failed requests the app answered: a request that got no answer at all
    has an unknown outcome, the transport's doing, not the app's."""
    return verdict.errors - verdict.no_answer


def gate(app: str, verdict: Verdict, tolerated: frozenset[str] | None) -> list[str]:
    """What fails a run of `app`: anomalies not `tolerated`, and errors it
    answered (checker.unexpected); requests that got no answer do not."""
    found = unexpected(app, replace(verdict, errors=app_errors(verdict), examples=[]), tolerated)
    if not verdict.operations:
        found.append("no operation was recorded")
    return found


class Tally:
    """The merged verdict over everything recorded since the test started."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.counts = Verdict()  # running counts; the final read is judged in verdict()
        self.workers: set[str] = set()
        self.sources: Counter[str] = Counter()  # events per load generator
        self.last_error: Event | None = None
        self.origin: float | None = None
        self.counter = CounterTally()
        self.appends: OrderedDict[str, Event] = OrderedDict()  # token: its append
        self.greets: OrderedDict[str, deque[Event]] = OrderedDict()  # greeting: who asked
        self.latest: dict[str, Anomaly] = {}  # the latest of each kind, by field
        self.leak: tuple[Event, str] | None = None  # resolved into a witness lazily
        self.wrong_greet: Event | None = None
        self.began = time.monotonic()
        self.series: list[tuple[float, dict[str, int]]] = []
        self.step = SERIES_SECONDS

    # -- recording ----------------------------------------------------------------

    def add(self, units: list[list[Event]], source: str) -> None:
        for unit in units:
            if unit:
                self.sources[source] += len(unit)
                self.add_unit(unit)

    def add_unit(self, unit: list[Event]) -> None:
        counts = self.counts
        for e in unit:
            counts.operations += 1
            if e.status == NOT_SERVED:
                counts.not_served += 1
            elif not e.ok:
                counts.errors += 1
                self.last_error = e
            counts.unavailable += e.status == 503
            counts.no_answer += e.status == 0
            if e.worker:
                self.workers.add(e.pid)
            if self.origin is None or e.start < self.origin:
                self.origin = e.start
        writes = [e for e in unit if e.op in ("increment", "add_visit") and e.status != NOT_SERVED]
        for attempts in requests_of(writes):
            judged = fate(attempts)
            counts.requests += 1
            counts.acknowledged += judged == ACKNOWLEDGED
            counts.ambiguous += judged == AMBIGUOUS
            counts.not_applied += judged not in (ACKNOWLEDGED, AMBIGUOUS)
        for found in self.counter.add(unit):
            if found.field != "applied_twice":  # the counter's judge() sets that count
                counts.count(found.field)
            self.latest[found.field] = found.found
        if any(e.op in ("add_visit", "list_visits") for e in unit):
            self.add_visits(unit)
        for e in unit:
            if e.op == "greet" and e.ok:
                self.add_greet(e)

    def add_visits(self, unit: list[Event]) -> None:
        """checker.check_visits on one visitor's unit."""
        appends = [e for e in unit if e.op == "add_visit"]
        answers = [e for e in unit if e.op in ("add_visit", "list_visits") and e.ok]
        owner = {e.arg: e.user for e in appends}
        for e in appends:
            self.appends[e.arg] = e
            if len(self.appends) > WINDOW:
                self.appends.popitem(last=False)
        for e in answers:
            foreign = next((t for t in e.value if owner.get(t) != e.user), None)
            if foreign is not None:
                self.counts.visits_leaked += 1
                self.leak = (e, foreign)
        last_list: dict[str, Event] = {}
        for e in answers:
            if e.op == "list_visits" and (
                e.user not in last_list or e.start > last_list[e.user].start
            ):
                last_list[e.user] = e
        sent: dict[str, dict[str, list[Event]]] = {}
        for attempts in requests_of(appends):
            sent.setdefault(attempts[0].user, {}).setdefault(attempts[0].arg, []).extend(attempts)
        for user, tokens in sent.items():
            final = last_list.get(user)
            if final is None:
                continue
            seen = Counter(final.value)
            for token, attempts in tokens.items():
                if seen[token] > 1:
                    self.counts.visits_duplicated += seen[token] - 1
                    tries = f", sent {len(attempts)} times," if len(attempts) > 1 else ""
                    times = f"is in its last list {seen[token]} times"
                    summary = f"{user}'s append of {token!r}{tries} {times}"
                    self.note("visits_duplicated", summary, [*attempts, final])
                if seen[token] or fate(attempts) != ACKNOWLEDGED:
                    continue
                lost = first_success(attempts)
                self.counts.count(LOST[lost.scenario])
                summary = (
                    f"{user}'s append of {token!r} was acknowledged, "
                    f"then missing from {len(final.value)} visits"
                )
                self.note(LOST[lost.scenario], summary, [lost, final])

    def add_greet(self, e: Event) -> None:
        asked = self.greets.get(f"Hello, {e.arg}!")
        if asked is None:
            asked = self.greets[f"Hello, {e.arg}!"] = deque(maxlen=32)
            if len(self.greets) > WINDOW:
                self.greets.popitem(last=False)
        asked.append(e)
        if e.value != f"Hello, {e.arg}!":
            self.counts.greet_leaks += 1
            self.wrong_greet = e

    def note(self, name: str, summary: str, witness: list[Event]) -> None:
        self.latest[name] = Anomaly(KIND[name].witness, summary, witness)

    # -- the verdict --------------------------------------------------------------

    @property
    def final_read_judged(self) -> bool:
        """False while there is no final read to judge (before the test stops, or
        after a Reset Stats mid-run, which has no reset of its own)."""
        return self.counter.final_read_judged

    def verdict(self) -> Verdict:
        verdict = replace(self.counts, examples=[])
        verdict.workers = len(self.workers)
        self.counter.judge(verdict)
        found = dict(self.latest)
        found.update(self.counter.final_examples)
        if self.leak:
            found["visits_leaked"] = self.leak_witness(*self.leak)
        if self.wrong_greet:
            found["greet_leaks"] = self.greet_witness(self.wrong_greet)
        verdict.examples = [found[kind.field] for kind in KINDS if kind.field in found]
        return verdict

    def leak_witness(self, shown: Event, token: str) -> Anomaly:
        source = self.appends.get(token)
        if source is not None and source.user != shown.user:
            who, witness = source.user, [source, shown]
        else:
            owner = token.rpartition("/")[0] if isinstance(token, str) else ""
            who, witness = (f"{owner} earlier" if owner else "nobody in this run"), [shown]
        summary = f"{shown.user} was shown {token!r}, appended by {who}"
        return Anomaly(KIND["visits_leaked"].witness, summary, witness)

    def greet_witness(self, wrong: Event) -> Anomaly:
        overlapping = [
            other
            for other in self.greets.get(wrong.value, ())
            if other is not wrong and other.start < wrong.end and wrong.start < other.end
        ]
        culprit = min(
            overlapping,
            key=lambda o: max(o.end, wrong.end) - min(o.start, wrong.start),
            default=None,
        )
        summary = f"{wrong.user} asked to greet {wrong.arg!r} and got {wrong.value!r}"
        return Anomaly(
            KIND["greet_leaks"].witness, summary, [wrong, culprit] if culprit else [wrong]
        )

    # -- anomalies over time ------------------------------------------------------

    def sample(self, force: bool = False) -> None:
        """A point of the anomalies-over-time chart, at most every `step` seconds
        unless forced (the last one, when the test stops)."""
        at = time.monotonic() - self.began
        if self.series and at - self.series[-1][0] < self.step and not force:
            return
        verdict = self.verdict()
        point = {
            s: sum(getattr(verdict, name) for name in names) for s, names in CHART_SCOPES.items()
        }
        point["operations"] = verdict.operations
        self.series.append((round(at, 1), point))
        if len(self.series) > SERIES_POINTS:
            self.series = self.series[::2]
            self.step *= 2
