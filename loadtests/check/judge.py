"""Each model's verdict, judged from its recorded history.

The counter and the per-user list are the existing checker's code and words
(loadtests.judge.writes: check_counter, check_visits). The new models' rules:

per_request   every answer holds its own token and no other ("request leak")
shared_value  no read returns a value older than the last set acknowledged
              before the read began ("stale read")
login         after an acknowledged login, every whoami with that cookie
              names that user ("lost identity", "identity leak"); one who
              never logged in is never named as anyone ("identity leak")
rate_limit    no user (per address: no one) has more requests accepted than
              the limit ("over the limit", the first limit + 1 accepted as
              its witness); the remaining count never goes up after an
              answer ("remaining went up")
broadcast     every subscriber listening when a message was published gets
              it within `within` seconds of the answer ("missed message")

Every model also counts requests that failed (no answer, or a 5xx).
"""

from dataclasses import dataclass, field
from typing import Any

from loadtests.check.drive import Tokens
from loadtests.check.spec import WITHIN_SECONDS
from loadtests.judge.history import Event
from loadtests.judge.verdict import SCOPES, Anomaly, Verdict
from loadtests.judge.writes import NOT_SERVED, check_counter, check_visits, span

# The kinds one worker process shows as well as several: a per_request leak
# is between requests inside one process at once. Every other kind keeps
# state beyond a request, which a process keeping its own copy breaks: its
# cell has shown nothing about that until its requests reached two worker
# processes of the shape (run.py runs the shape again until they do).
ONE_PROCESS_SHOWS = ("per_request",)

# A kind's field: (its title in a cell, its witness's first word).
TITLES = {
    "lost_updates": ("lost updates", "lost update"),
    "divergence": ("divergence", "divergence"),
    "final_reads_wrong": ("final read wrong", "final value"),
    "applied_twice": ("applied twice", "applied twice"),
    "acknowledged_lost": ("acknowledged lost", "acknowledged lost"),
    "visits_lost": ("lost", "lost visit"),
    "tabs_lost": ("tabs lost", "lost tab"),
    "visits_duplicated": ("duplicated", "duplicated visit"),
    "visits_leaked": ("leaked", "visit leak"),
    "request_leaks": ("leaks", "request leak"),
    "stale_reads": ("stale reads", "stale read"),
    "identity_leaks": ("identity leaks", "identity leak"),
    "identities_lost": ("identities lost", "lost identity"),
    "over_limit": ("over the limit", "over the limit"),
    "remaining_up": ("remaining went up", "remaining went up"),
    "messages_missed": ("messages missed", "missed message"),
    "failed": ("failed requests", "failed request"),
}


@dataclass
class ModelVerdict:
    operations: int = 0
    workers: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # TITLES' fields with a count
    not_served: bool = False  # the app answered 501 to all of it: not its job
    examples: list[Anomaly] = field(default_factory=list)

    @property
    def anomalies(self) -> int:
        return sum(self.counts.values())

    def add(self, name: str, n: int, summary: str, witness: list[Event]) -> None:
        if n:
            if name not in self.counts:
                self.examples.append(Anomaly(TITLES[name][1], summary, witness))
            self.counts[name] = self.counts.get(name, 0) + n

    def summary(self) -> str:
        return ", ".join(f"{n} {TITLES[name][0]}" for name, n in self.counts.items())


def judge(
    kind: str, history: list[Event], tokens: Tokens, keys: dict[str, Any] | None = None
) -> ModelVerdict:
    """The verdict on one model's history; `keys` is its spec table (a rate
    limit's limit, a broadcast's within)."""
    verdict = ModelVerdict(len(history), len({e.pid for e in history if e.worker}))
    verdict.not_served = not any(e.ok for e in history) and any(
        e.status == NOT_SERVED for e in history
    )
    failed = [e for e in history if failed_request(e)]
    if failed:
        first = failed[0]
        answer = f"{first.status}" if first.status else f"no answer ({first.error})"
        verdict.add("failed", len(failed), f"{first.user}'s {first.op} got {answer}", [first])
    if kind in ("counter", "per_user_list"):
        from_checker(kind, history, verdict)
    elif kind == "rate_limit":
        rate_limit(history, verdict, (keys or {})["limit"], (keys or {}).get("per", "user"))
    elif kind == "broadcast":
        broadcast(history, verdict, float((keys or {}).get("within", WITHIN_SECONDS)))
    else:
        {"per_request": per_request, "shared_value": shared_value, "login": login}[kind](
            history, tokens, verdict
        )
    return verdict


def failed_request(event: Event) -> bool:
    """No answer, a 5xx, or a 4xx to a well-formed request; but 501, the app
    saying it does not keep this (the checker's NOT_SERVED), whoami's
    refusals, which the login rule judges, and a rate limit's 429."""
    if event.status == NOT_SERVED or (event.op == "whoami" and event.status in (401, 403)):
        return False
    if event.op == "hit" and event.status == 429:
        return False
    return event.status == 0 or event.status >= 400


def from_checker(kind: str, history: list[Event], verdict: ModelVerdict) -> None:
    checked = Verdict(operations=len(history))
    if kind == "counter":
        check_counter(history, checked)
        fields = SCOPES["counter"]
    else:
        check_visits(history, checked)
        fields = (*SCOPES["visits"], *SCOPES["tabs"])
    for name in fields:
        if n := getattr(checked, name):
            verdict.counts[name] = n
    verdict.examples += checked.examples


def overlapping(event: Event, others: list[Event]) -> Event | None:
    near = [o for o in others if o is not event and o.start < event.end and event.start < o.end]
    return min(near, key=lambda o: span([o, event]), default=None)


def per_request(history: list[Event], tokens: Tokens, verdict: ModelVerdict) -> None:
    sent = {e.arg: e for e in history}
    wrong = []
    for event in (e for e in history if e.ok):
        found = set(tokens.found(event.value or ""))
        if event.arg not in found or found - {event.arg}:
            wrong.append((event, sorted(found - {event.arg})))
    if not wrong:
        return

    def witness(pair: tuple[Event, list[str]]) -> list[Event]:
        event, foreign = pair
        culprit = overlapping(event, [sent[t] for t in foreign if t in sent])
        return [event, culprit] if culprit else [event]

    event, foreign = min(wrong, key=lambda pair: (len(witness(pair)) < 2, span(witness(pair))))
    got = f"{foreign[0]!r}" if foreign else "an answer without it"
    verdict.add("request_leaks", len(wrong), f"{event.user} sent {event.arg!r} and got {got}",
                witness((event, foreign)))  # fmt: skip


def shared_value(history: list[Event], tokens: Tokens, verdict: ModelVerdict) -> None:
    sets = [e for e in history if e.op == "set"]
    acknowledged = sorted((e for e in sets if e.ok), key=lambda e: e.end)
    written = {e.arg: e for e in sets}
    stale = []
    for read in (e for e in history if e.op == "get" and e.ok):
        before = [s for s in acknowledged if s.end < read.start]
        if not before:
            continue
        source = written.get(read.value) if isinstance(read.value, str) else None
        # Stale: the value read was replaced by an acknowledged set that began
        # after its own set ended and ended before this read began.
        newer = [s for s in before if source is None or s.start > source.end]
        if newer:
            stale.append((read, newer[-1], source))
    if not stale:
        return
    read, last, source = min(stale, key=lambda t: span([t[1], t[0]]))
    was = f"{read.value!r}, set by {source.user}" if source else f"{read.value!r}, set by no one"
    summary = f"{read.user} read {was}, after {last.user} set {last.arg!r}"
    verdict.add("stale_reads", len(stale), summary, [e for e in (source, last, read) if e])


def login(history: list[Event], tokens: Tokens, verdict: ModelVerdict) -> None:
    logins = sorted((e for e in history if e.op == "login" and e.ok), key=lambda e: e.end)
    owner = {e.arg: e for e in logins}
    leaks, lost = [], []
    for ask in (e for e in history if e.op == "whoami" and e.status):
        mine = [e for e in logins if e.user == ask.user and e.end < ask.start]
        expected = mine[-1] if mine else None
        named = ask.value if ask.ok and isinstance(ask.value, str) else None
        if named is not None and named in owner and (expected is None or named != expected.arg):
            leaks.append([ask, owner[named]])
        elif expected is not None and named != expected.arg:
            lost.append([expected, ask])
    if leaks:
        ask, other = min(leaks, key=span)
        mine = next((e.arg for e in reversed(logins) if e.user == ask.user), None)
        who = f"logged in as {mine!r}" if mine else "never logged in"
        summary = (
            f"{ask.user} {who} and was told it is {ask.value!r}, who logged in as {other.user}"
        )
        verdict.add("identity_leaks", len(leaks), summary, [other, ask])
    if lost:
        expected, ask = min(lost, key=span)
        answer = f"{ask.value!r}" if ask.ok else f"a {ask.status}"
        summary = f"{ask.user} logged in as {expected.arg!r}, then was answered {answer}"
        verdict.add("identities_lost", len(lost), summary, [expected, ask])


def workers_of(events: list[Event]) -> str:
    pids = list(dict.fromkeys(e.pid for e in events if e.pid))
    if len(pids) < 2:
        return f"worker {pids[0]}" if pids else "no worker named"
    return f"workers {', '.join(pids[:-1])} and {pids[-1]}"


def rate_limit(history: list[Event], verdict: ModelVerdict, limit: int, per: str) -> None:
    hits = sorted((e for e in history if e.op == "hit" and e.status), key=lambda e: e.start)
    buckets: dict[str, list[Event]] = {}
    for event in hits:
        buckets.setdefault("" if per == "address" else event.user, []).append(event)
    over = {who: [e for e in events if e.ok] for who, events in buckets.items()}
    over = {who: accepted for who, accepted in over.items() if len(accepted) > limit}
    if over:
        who, accepted = max(over.items(), key=lambda item: len(item[1]))
        whose = "from one address" if per == "address" else f"for {who}"
        summary = (
            f"{len(accepted)} accepted where the limit is {limit}, {whose}, "
            f"answered by {workers_of(accepted)}"
        )
        excess = sum(len(a) - limit for a in over.values())
        verdict.add(
            "over_limit", excess, summary, accepted[: limit + 1]
        )  # the fewest that prove it
    went_up = []  # (earlier, later): the later request was told more remain
    for events in buckets.values():
        counted = [e for e in events if isinstance(e.value, int) and not isinstance(e.value, bool)]
        ended = sorted(counted, key=lambda e: e.end)
        lowest, n = None, 0  # the fewest remaining told by an answer before this request
        for later in counted:  # by start
            while n < len(ended) and ended[n].end < later.start:
                if lowest is None or ended[n].value <= lowest.value:
                    lowest = ended[n]
                n += 1
            if lowest is not None and lowest.value < later.value:
                went_up.append((lowest, later))
    if went_up:
        earlier, later = min(went_up, key=lambda pair: span(list(pair)))
        summary = (
            f"{later.user} was told {later.value} remain on worker {later.pid}, after "
            f"{earlier.user} was told {earlier.value} on worker {earlier.pid}"
        )
        verdict.add("remaining_up", len(went_up), summary, [earlier, later])


def broadcast(history: list[Event], verdict: ModelVerdict, within: float) -> None:
    published = sorted((e for e in history if e.op == "publish" and e.ok), key=lambda e: e.start)
    opened = {e.user: e for e in history if e.op == "subscribe" and e.ok}
    closed = {e.user: e.start for e in history if e.op == "unsubscribe"}
    got = {(e.user, e.arg): e for e in history if e.op == "receive"}
    missed = []  # (publish, the subscribers listening, those it reached in time, one it missed)
    for message in published:
        bound = message.end + within
        listening = [s for s in opened.values()
                     if s.end < message.start and closed.get(s.user, bound) >= bound]  # fmt: skip
        reached = [s for s in listening
                   if (r := got.get((s.user, message.arg))) and r.start <= bound]  # fmt: skip
        missing = [s for s in listening if s not in reached]
        missed += [(message, listening, reached, s) for s in missing]
    if not missed:
        return
    message, listening, reached, lost = missed[0]
    late = got.get((lost.user, message.arg))
    fate = (
        f"got it {late.start - message.end:.1f}s after the publish was answered, later than "
        f"{within:g}s"
        if late
        else "never got it"
    )
    summary = (
        f"the message published through worker {message.pid} reached {len(reached)} of "
        f"{len(listening)} subscribers; the one on worker {lost.pid} {fate}"
    )
    witness = [message, lost, *(got[(s.user, message.arg)] for s in reached[:1])]
    verdict.add("messages_missed", len(missed), summary, witness)
