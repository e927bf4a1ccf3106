"""The shared counter's part of the Tally: loadtests/judge/writes.py's rules for the
counter, applied as each increment arrives, in memory that does not grow with
the events, only (a byte each) with the distinct values the counter returned.

    lost update  a value this process returned before
    divergence   a value another process returned before
    final read   judged in judge(), from the counts of acknowledged and
                 ambiguous increments and the reads after the last one

Values are taken from each process's baseline (writes.baselines): the reads
and the reset the master sends before the users start.
"""

import math
from collections import OrderedDict
from dataclasses import dataclass

from loadtests.judge.history import Event
from loadtests.judge.verdict import KIND, Anomaly, Verdict
from loadtests.judge.writes import (
    ACKNOWLEDGED,
    AMBIGUOUS,
    NOT_SERVED,
    baselines,
    both_returned,
    definitely_failed,
    fate,
    first_success,
    judge_final_reads,
    relative,
    requests_of,
    span,
)

PAGE = 4096  # counter values per page of Seen
WINDOW = 2048  # the last values returned, with their events, for witnesses
MARKS = 256  # reads and resets kept at most (the harness sends a few)


class Seen:
    """Which worker processes returned each counter value: one byte per value,
    a bit per process for the first 8 processes; others in a dict."""

    def __init__(self) -> None:
        self.pages: dict[int, bytearray] = {}
        self.more: dict[object, set[int]] = {}

    def add(self, value: object, who: int) -> set[int]:
        """Record that process number `who` returned `value`; return the
        processes that had returned it before."""
        try:
            hash(value)
        except TypeError:
            value = repr(value)
        before = set(self.more.get(value, ()))
        page = None
        if isinstance(value, int):
            page = self.pages.get(value // PAGE)
            if page is None:
                page = self.pages[value // PAGE] = bytearray(PAGE)
            mask = page[value % PAGE]
            before.update(bit for bit in range(8) if mask >> bit & 1)
        if page is not None and who < 8:
            page[value % PAGE] |= 1 << who
        else:
            self.more.setdefault(value, set()).add(who)
        return before


@dataclass
class Found:
    field: str  # the Verdict count it adds one to
    found: Anomaly


class CounterTally:
    def __init__(self) -> None:
        self.seen = Seen()
        self.pids: dict[str, int] = {}  # pid: its bit in Seen
        self.recent: OrderedDict[object, list[Event]] = OrderedDict()
        self.increments = 0  # increment attempts the app did not refuse with a 501
        self.not_served = False
        self.acknowledged = 0
        self.ambiguous = 0
        self.last_end = -math.inf
        self.marks: list[Event] = []  # reads and resets: baselines, final reads
        self.base: dict[str, int] | None = None  # fixed when the first increment arrives
        self.reset_seen = False
        self.answered_twice = 0
        self.retried: list[Event] = []  # the smallest acknowledged request retried after a maybe
        self.final_examples: dict[str, Anomaly] = {}
        self.final_read_judged = False

    def add(self, unit: list[Event]) -> list[Found]:
        for e in unit:
            if e.op == "increment" and e.status == NOT_SERVED:
                self.not_served = True
            elif e.op in ("read", "reset") and e.ok:
                self.reset_seen |= e.op == "reset"
                self.marks.append(e)
        increments = [e for e in unit if e.op == "increment" and e.status != NOT_SERVED]
        found = []
        if increments:
            if self.base is None:
                self.base = baselines(self.marks, min(e.start for e in increments))
            self.increments += len(increments)
            self.last_end = max(self.last_end, *(e.end for e in increments))
            for attempts in requests_of(increments):
                found += self.add_request(attempts)
        if self.base is not None:  # only reads after the last increment still matter
            self.marks = [e for e in self.marks if e.start > self.last_end]
        del self.marks[:-MARKS]
        return found

    def add_request(self, attempts: list[Event]) -> list[Found]:
        judged = fate(attempts)
        self.acknowledged += judged == ACKNOWLEDGED
        self.ambiguous += judged == AMBIGUOUS
        found = []
        oks = [e for e in attempts if e.ok]
        if (values := len({e.value for e in oks})) > 1:
            self.answered_twice += values - 1
            a, b = oks[:2]
            summary = f"one request of {a.user} was answered {a.value}, then {b.value}"
            found.append(Found("applied_twice", anomaly("applied_twice", summary, [a, b])))
        maybe_twice = judged == ACKNOWLEDGED and not all(map(definitely_failed, attempts[:-1]))
        if maybe_twice and (not self.retried or span(attempts) < span(self.retried)):
            self.retried = attempts
        if first := first_success(attempts):
            found += self.add_value(first)
        return found

    def add_value(self, e: Event) -> list[Found]:
        value = relative(e, self.base or {})
        who = self.pids.setdefault(e.pid, len(self.pids))
        before = self.seen.add(value, who)
        try:
            earlier = self.recent.get(value)
        except TypeError:  # an answer that is not a number: no witness kept
            earlier = []
        else:
            if earlier is None:
                self.recent[value] = earlier = []
                if len(self.recent) > WINDOW:
                    self.recent.popitem(last=False)
            if len(earlier) < 4:
                earlier.append(e)
        if not before:
            return []
        if who in before:
            partner = next((o for o in earlier if o is not e and o.pid == e.pid), None)
            summary = f"worker {e.pid} returned {e.value} twice"
            return [Found("lost_updates", anomaly("lost_updates", summary, pair(partner, e)))]
        partner = next((o for o in earlier if o.pid != e.pid), None)
        if partner:
            summary = both_returned(partner, e, self.base or {})
        else:
            others = sorted(pid for pid, n in self.pids.items() if n in before)
            summary = f"workers {others[0]} and {e.pid} both returned {value}"
        return [Found("divergence", anomaly("divergence", summary, pair(partner, e)))]

    def judge(self, verdict: Verdict) -> None:
        """writes.check_final_read, and the counts only the whole run can say."""
        verdict.counter_served = self.acknowledged > 0 or not self.not_served
        verdict.applied_twice = self.answered_twice
        self.final_examples = {}
        finals = [e for e in self.marks if e.op == "read" and e.start > self.last_end]
        self.final_read_judged = bool(self.increments and self.reset_seen and finals)
        if not self.final_read_judged:
            return
        base = self.base or {}
        low, ambiguous = self.acknowledged, self.ambiguous
        judge_final_reads(finals, low, ambiguous, base, verdict, self.note, lambda: self.retried)

    def note(self, name: str, summary: str, witness: list[Event]) -> None:
        self.final_examples[name] = anomaly(name, summary, witness)


def anomaly(name: str, summary: str, witness: list[Event]) -> Anomaly:
    return Anomaly(KIND[name].witness, summary, witness)


def pair(partner: Event | None, e: Event) -> list[Event]:
    return [partner, e] if partner else [e]
