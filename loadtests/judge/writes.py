"""The rules for the state that writes change: the shared counter and each
user's visits, each write judged as one logical request over its attempts.

A write's fate bounds what a correct store may show: acknowledged (some
attempt got a 2xx), not applied (every attempt provably wrote nothing: a
4xx, a 507, or an outcome "not applied"), or ambiguous (anything else: it
may have landed, once or more). A retry that applied a write again, or an
acknowledged write that is gone, shows against those bounds
(loadtests/README.md, the checker's rules). verdict.py holds the kinds of
anomaly; checker.py calls these.
"""

import itertools
from collections import Counter, defaultdict
from collections.abc import Callable

from loadtests.judge.history import NOT_APPLIED, Event
from loadtests.judge.verdict import Verdict

NOT_SERVED = 501  # the app says this scope is not its job (fixed_session's counter)
ACKNOWLEDGED = "acknowledged"
AMBIGUOUS = "ambiguous"
STORE_FULL = 507


def definitely_failed(event: Event) -> bool:
    """True when this attempt provably wrote nothing."""
    return (
        400 <= event.status < 500
        or event.status == STORE_FULL
        or (event.status in (0, 503) and event.outcome == NOT_APPLIED)
    )


def fate(attempts: list[Event]) -> str:
    """ACKNOWLEDGED, NOT_APPLIED or AMBIGUOUS, for one request's attempts.

    >>> timed_out = Event("increment", "u1", None, 0.0, 0.3, 503, None, key="k1",
    ...                   outcome="unknown")
    >>> retried = Event("increment", "u1", None, 0.4, 0.5, 200, 7, key="k1", attempt=2)
    >>> fate([timed_out]), fate([timed_out, retried])
    ('ambiguous', 'acknowledged')
    >>> [len(attempts) for attempts in requests_of([timed_out, retried])]
    [2]
    """
    if any(e.ok for e in attempts):
        return ACKNOWLEDGED
    if all(definitely_failed(e) for e in attempts):
        return NOT_APPLIED
    return AMBIGUOUS


def requests_of(events: list[Event]) -> list[list[Event]]:
    """The events grouped into logical requests, each in attempt order, in the
    order their first attempt was recorded. An event without a key is a
    request of its own (hand-built histories, reads)."""
    groups: dict[object, list[Event]] = {}
    for event in events:
        request = (event.op, event.user, event.key) if event.key else id(event)
        groups.setdefault(request, []).append(event)
    return [sorted(attempts, key=lambda e: e.attempt) for attempts in groups.values()]


def first_success(attempts: list[Event]) -> Event | None:
    return next((e for e in attempts if e.ok), None)


# A lost append, by the scenario that sent it: the count it adds to.
LOST = {"": "visits_lost", "tabs": "tabs_lost"}


def span(events: list[Event]) -> float:
    """Seconds from the first start to the last end."""
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
    """Acknowledged requests return distinct values: the same value twice from
    one process is a lost update, from two processes divergence; one request
    answered two different values was applied twice."""
    increments = [e for e in history if e.op == "increment" and e.status != NOT_SERVED]
    requests = requests_of(increments)
    fates = [fate(attempts) for attempts in requests]
    verdict.counter_served = ACKNOWLEDGED in fates or not any(
        e.op == "increment" and e.status == NOT_SERVED for e in history
    )
    base = baselines(history, min(e.start for e in increments)) if increments else {}
    # One value per acknowledged request: its first answer (a replay repeats it),
    # from its process's baseline on.
    by_value: dict[int, list[Event]] = defaultdict(list)
    for event in filter(None, map(first_success, requests)):
        by_value[relative(event, base)].append(event)
    repeated = [events for events in by_value.values() if len(events) > 1]
    for events in repeated:
        per_worker = Counter(e.pid for e in events)
        verdict.lost_updates += sum(n - 1 for n in per_worker.values())
        verdict.divergence += len(per_worker) - 1
    if pair := smallest_pair(repeated, same_pid=True):
        verdict.note("lost_updates", f"worker {pair[0].pid} returned {pair[0].value} twice", pair)
    if pair := smallest_pair(repeated, same_pid=False):
        verdict.note("divergence", both_returned(*pair, base), pair)

    answered_twice = [
        [e for e in attempts if e.ok]
        for attempts in requests
        if len({e.value for e in attempts if e.ok}) > 1
    ]
    verdict.applied_twice = sum(len({e.value for e in oks}) - 1 for oks in answered_twice)
    if answered_twice:
        pair = min((oks[:2] for oks in answered_twice), key=span)
        summary = (
            f"one request of {pair[0].user} was answered {pair[0].value}, then {pair[1].value}"
        )
        verdict.note("applied_twice", summary, pair)

    if increments and any(e.op == "reset" and e.ok for e in history):
        check_final_read(history, requests, fates, base, verdict)


def baselines(history: list[Event], first: float) -> dict[str, int]:
    """Each worker process's counter value when the increments began, the
    first at `first` (the history's clock): the last reset or read it
    answered after the history's last reset and before then. A reset reaches
    the one process that answers it: where each process keeps its own counter
    (broken_global), another one counts on from where it was, and its values
    are judged from there. A process with no baseline counts from 0."""
    marks = [
        e
        for e in history
        if e.op in ("reset", "read") and e.ok and e.worker and isinstance(e.value, int)
    ]
    since = max((e.start for e in marks if e.op == "reset" and e.end < first), default=None)
    base = {}
    for e in sorted(marks, key=lambda e: e.end):
        if e.end < first and (since is None or e.start >= since):
            base[e.pid] = e.value
    return base


def relative(event: Event, base: dict[str, int]) -> object:
    """The value an increment or read returned, from its process's baseline on."""
    value = event.value
    return value - base[event.pid] if isinstance(value, int) and event.pid in base else value


def both_returned(a: Event, b: Event, base: dict[str, int]) -> str:
    if a.value == b.value:
        shown = a.value
    else:
        shown = f"{relative(a, base)} from their baselines ({a.value} and {b.value})"
    return f"workers {a.pid} and {b.pid} both returned {shown}"


def read_summary(e: Event, base: dict[str, int]) -> str:
    return f"read {e.value}" + (f" (from {base[e.pid]})" if base.get(e.pid) else "")


def check_final_read(
    history: list[Event],
    requests: list[list[Event]],
    fates: list[str],
    base: dict[str, int],
    verdict: Verdict,
) -> None:
    """The final-read rule (judge_final_reads) on a whole history."""
    last_increment_end = max(e.end for attempts in requests for e in attempts)
    finals = [e for e in history if e.op == "read" and e.ok and e.start > last_increment_end]

    def likely_double() -> list[Event]:  # the smallest retried acknowledged request
        retried = [
            attempts
            for attempts, f in zip(requests, fates, strict=True)
            if f == ACKNOWLEDGED and not all(map(definitely_failed, attempts[:-1]))
        ]
        return min(retried, key=span, default=[])

    low, ambiguous = fates.count(ACKNOWLEDGED), fates.count(AMBIGUOUS)
    judge_final_reads(finals, low, ambiguous, base, verdict, verdict.note, likely_double)


def judge_final_reads(
    finals: list[Event],
    low: int,
    ambiguous: int,
    base: dict[str, int],
    verdict: Verdict,
    note: Callable[[str, str, list[Event]], None],
    likely_double: Callable[[], list[Event]],
) -> None:
    """A read after the last increment (and the history's reset) must lie
    between the `low` acknowledged requests and those plus the `ambiguous`
    ones, counted from its process's baseline: above, the excess was applied
    twice; below, acknowledged increments were lost. The checker and Locust's
    tally (tally_counter.py) both judge with this one function."""
    high = low + ambiguous
    counts = {id(e): relative(e, base) for e in finals}
    wrong = [e for e in finals if not low <= counts[id(e)] <= high]
    verdict.final_reads_wrong = len(wrong)
    if not wrong:
        return
    counted = f"{low} acknowledged and {ambiguous} ambiguous increments"
    worst = max(wrong, key=lambda e: abs(counts[id(e)] - low))
    note("final_reads_wrong", f"{read_summary(worst, base)} after {counted}", [worst])
    highest = max(wrong, key=lambda e: counts[id(e)])
    lowest = min(wrong, key=lambda e: counts[id(e)])
    if (excess := counts[id(highest)] - high) > verdict.applied_twice:
        verdict.applied_twice = excess
        summary = f"{read_summary(highest, base)} after {counted}: {excess} too many"
        note("applied_twice", summary, [*likely_double(), highest])
    if (deficit := low - counts[id(lowest)]) > 0:
        verdict.acknowledged_lost = deficit
        read = read_summary(lowest, base)
        summary = f"{read} after {low} acknowledged increments: {deficit} missing"
        note("acknowledged_lost", summary, [lowest])


def check_visits(history: list[Event], verdict: Verdict) -> None:
    """Each user's last list holds each of their acknowledged appends exactly
    once and each ambiguous one at most once; no answer shows a token of
    another user."""
    appends = [e for e in history if e.op == "add_visit"]
    owner = {e.arg: e.user for e in appends}
    answers = [e for e in history if e.op in ("add_visit", "list_visits") and e.ok]

    for event in answers:
        foreign = [t for t in event.value if owner.get(t) != event.user]
        if foreign:
            verdict.visits_leaked += 1
            if verdict.visits_leaked == 1:
                source = next((e for e in appends if e.arg == foreign[0]), None)
                verdict.note(
                    "visits_leaked",
                    f"{event.user} was shown {foreign[0]!r}, "
                    f"appended by {owner.get(foreign[0], 'nobody in this run')}",
                    [e for e in (source, event) if e],
                )

    last_list: dict[str, Event] = {}
    for event in answers:
        if event.op == "list_visits" and (
            event.user not in last_list or event.start > last_list[event.user].start
        ):
            last_list[event.user] = event
    sent: dict[str, dict[str, list[Event]]] = defaultdict(dict)  # user: token: its attempts
    for attempts in requests_of(appends):
        sent[attempts[0].user].setdefault(attempts[0].arg, []).extend(attempts)
    for user, tokens in sent.items():
        final = last_list.get(user)
        if final is None:
            continue
        seen = Counter(final.value)
        for token, attempts in tokens.items():
            if seen[token] > 1:
                verdict.visits_duplicated += seen[token] - 1
                tries = f", sent {len(attempts)} times," if len(attempts) > 1 else ""
                summary = (
                    f"{user}'s append of {token!r}{tries} is in its last list {seen[token]} times"
                )
                verdict.note("visits_duplicated", summary, [*attempts, final])
            if seen[token] or fate(attempts) != ACKNOWLEDGED:
                continue
            lost = first_success(attempts)
            verdict.count(LOST[lost.scenario])
            verdict.note(
                LOST[lost.scenario],
                f"{user}'s append of {token!r} was acknowledged, "
                f"then missing from {len(final.value)} visits",
                [lost, final],
            )
