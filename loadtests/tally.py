"""The checker's verdict over a Locust run that keeps growing, in bounded time.

Locust's users record Events for as long as the run lasts; the web UI asks
for the verdict every REFRESH_SECONDS. Checking the whole history each time
would grow without end, so the Tally checks each finished unit once (see
Tally) and keeps the sums. The rules are loadtests.checker's, unchanged.
"""

import time
from collections import Counter

from loadtests.checker import KIND, NOT_SERVED, Anomaly, Verdict, check
from loadtests.history import Event

CHUNK_EVENTS = 2000  # visits and greet are checked in chunks of about this many events
REFRESH_SECONDS = 2.0  # the web UI asks for stats every 2 s
COUNTER_OPS = {"increment", "read", "reset"}


class Tally:
    """The checker's verdict over everything recorded since the test started.

    The counter is checked whole each time: two processes repeat a value
    minutes apart; its witnesses come from the latest events. Visits and greet
    are checked once, in chunks of whole units (a unit is one visitor's
    appends and list, or one greeting): each visitor lives in one unit, so a
    chunk holds all it did, and the counts add up. Their witness is the
    latest chunk's."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.counter: list[Event] = []
        self.pending: list[list[Event]] = []
        self.judged = Verdict()  # sums over the chunks already checked
        self.latest: dict[str, Anomaly] = {}
        self.pids: set[str] = set()
        self.sources: Counter[str] = Counter()  # events per load generator
        self.last_error: Event | None = None
        self.origin: float | None = None
        self.cached: Verdict | None = None
        self.changed = True
        self.next_refresh = 0.0

    def add(self, units: list[list[Event]], source: str) -> None:
        for unit in units:
            self.sources[source] += len(unit)
            for event in unit:
                if event.worker:
                    self.pids.add(event.pid)
                if not event.ok and event.status != NOT_SERVED:
                    self.last_error = event
                if self.origin is None or event.start < self.origin:
                    self.origin = event.start
            if unit[0].op in COUNTER_OPS:
                self.counter += unit
            else:
                self.pending.append(unit)
        self.changed = True

    def verdict(self, live: bool = False) -> Verdict:
        """The merged verdict. Live (for the web UI), at most every REFRESH_SECONDS,
        or less often when checking takes long, so a big run does not stall the UI."""
        began = time.monotonic()
        if self.cached and (not self.changed or (live and began < self.next_refresh)):
            return self.cached
        units, self.pending, chunk = self.pending, [], []
        for unit in units:
            chunk += unit
            if len(chunk) >= CHUNK_EVENTS:
                self.judge_chunk(chunk)
                chunk = []
        if chunk:
            self.judge_chunk(chunk)
        merged = check(self.counter)
        if len(self.counter) > CHUNK_EVENTS:
            # The counts are the whole run's; the witness, the latest one.
            recent = {a.kind: a for a in check(self.counter[-CHUNK_EVENTS:]).examples}
            merged.examples = [recent.get(a.kind, a) for a in merged.examples]
        add_counts(merged, self.judged)
        merged.workers = len(self.pids)
        merged.examples += self.latest.values()
        self.cached, self.changed = merged, False
        self.next_refresh = time.monotonic() + max(REFRESH_SECONDS, 10 * (time.monotonic() - began))
        return merged

    def judge_chunk(self, chunk: list[Event]) -> None:
        part = check(chunk)
        add_counts(self.judged, part)
        self.latest.update({anomaly.kind: named_owner(anomaly) for anomaly in part.examples})


def named_owner(anomaly: Anomaly) -> Anomaly:
    """A leaked token appended in an earlier chunk has no owner in this chunk's
    history; tokens are "<visitor>/<n>", so the visitor is named from it."""
    if anomaly.kind != KIND["visits_leaked"].witness or len(anomaly.witness) != 1:
        return anomaly
    shown = anomaly.witness[0]
    token = next(t for t in shown.value if not t.startswith(f"{shown.user}/"))
    summary = f"{shown.user} was shown {token!r}, appended by {token.rpartition('/')[0]} earlier"
    return Anomaly(anomaly.kind, summary, anomaly.witness)


def add_counts(into: Verdict, part: Verdict) -> None:
    for name in ("operations", "errors", "not_served", *Verdict.COUNTS):
        setattr(into, name, getattr(into, name) + getattr(part, name))
