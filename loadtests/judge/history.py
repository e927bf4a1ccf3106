"""The history's vocabulary: one Event per request the harness sent.

The client records them, the checker reads nothing else, and the report, the
locustfile and the tests pass them around; answer() is how a witness line or
a timeline shows one. An Event is what one request showed from the outside:
what was asked, by which user, when it started and ended, the HTTP status,
the value the app returned and which worker answered.

A write may take several attempts (a client that retries after no answer or
a 503): each attempt is an Event of its own, and `key` ties the attempts of
one logical request together, so the checker can judge the request's fate.
"""

from dataclasses import asdict, dataclass
from typing import Any

# The writes: a retry of one of these may apply it twice.
WRITES = frozenset({"increment", "reset", "add_visit"})
NOT_APPLIED = "not applied"  # the app (or the transport) says the write never happened
UNKNOWN = "unknown"  # it may or may not have been applied


@dataclass(slots=True)
class Event:
    op: str  # a key of loadtests.clients.client.ROUTES: increment, read, reset, add_visit, ...
    user: str
    arg: str | None  # the article appended or the name greeted
    start: float  # seconds, time.monotonic() of the process that sent it
    end: float
    status: int  # 0 when no HTTP answer arrived
    value: Any  # the counter value, the visits list, the greeting; else None
    worker: str = ""  # X-Worker: "<pid>-<thread id>"
    error: str = ""
    scenario: str = ""  # "tabs" for one user's concurrent requests
    # The logical request this attempt belongs to: its Idempotency-Key, or a
    # request id of the client's own when it sends none; "" for one of its own.
    key: str = ""
    attempt: int = 1  # 1 for the first try, 2 for the first retry, ...
    outcome: str = ""  # on a failed write: NOT_APPLIED, UNKNOWN (or the app's word); else ""
    replayed: bool = False  # the app answered "Idempotent-Replayed: true": the first answer again

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def pid(self) -> str:
        return self.worker.partition("-")[0]

    def to_dict(self) -> dict:
        return asdict(self)


def answer(e: Event) -> str:
    """What one attempt got back, as a witness line shows it: "7", "[3 visits]",
    "503 (unknown)", "no answer (unknown)"; ", attempt 2" after a retry, and
    " replayed" for a first answer sent again for the same Idempotency-Key."""
    if e.ok:
        shown = f"[{len(e.value)} visits]" if isinstance(e.value, list) else str(e.value)
    else:
        shown = str(e.status) if e.status else "no answer"
        shown += f" ({e.outcome})" if e.outcome else ""
    if e.replayed:
        shown += " replayed"
    return shown + (f", attempt {e.attempt}" if e.attempt > 1 else "")
