"""The history's vocabulary: one Event per operation the harness sent.

The client records them, the checker reads nothing else, and the report, the
locustfile and the tests pass them around. An Event is what one request
showed from the outside: what was asked, by which user, when it started and
ended, the HTTP status, the value the app returned and which worker answered.
"""

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(slots=True)
class Event:
    op: str  # a key of loadtests.client.ROUTES: increment, read, reset, add_visit, ...
    user: str
    arg: str | None  # the article appended or the name greeted
    start: float  # seconds, time.monotonic() of the process that sent it
    end: float
    status: int  # 0 when no HTTP answer arrived
    value: Any  # the counter value, the visits list, the greeting; else None
    worker: str = ""  # X-Worker: "<pid>-<thread id>"
    error: str = ""
    scenario: str = ""  # "tabs" for one user's concurrent requests

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def pid(self) -> str:
        return self.worker.partition("-")[0]

    def to_dict(self) -> dict:
        return asdict(self)
