"""What a Locust process keeps of each answer, and how events travel.

broken_global's visits list is one list for every user that only grows, so
over a long run each answer holds tens of thousands of other users' tokens.
The checker reads three things of it: the caller's own tokens, whether any
other token is there (and the first, for the witness), and its length.
compact() keeps exactly those on arrival, so a user's memory does not grow
with the run, and the verdict is the same (tests/test_locust.py):

    >>> event = Event("list_visits", "v1-ab", None, 0.0, 0.1, 200, ["x/0", "v1-ab/0", "x/1"])
    >>> kept = compact(event).value
    >>> list(kept), len(kept)
    (['x/0', 'v1-ab/0'], 3)

Events cross processes (a Locust worker to its master, a run to a file) as
plain dicts: to_wire and from_wire.
"""

from dataclasses import fields
from typing import Any

from loadtests.judge.history import Event

VISITS_OPS = frozenset({"add_visit", "list_visits"})
EVENT_FIELDS = [f.name for f in fields(Event)]


class Visits(list):
    """A visits answer cut down by compact(): iterating gives the tokens kept,
    in their order; len() is the length of the whole answer."""

    __slots__ = ("total",)

    def __init__(self, kept: list[str], total: int) -> None:
        super().__init__(kept)
        self.total = total

    def __len__(self) -> int:
        return self.total

    def __repr__(self) -> str:
        return f"Visits({list.__repr__(self)}, total={self.total})"


def compact(event: Event) -> Event:
    """Cut a visits answer down to the caller's tokens and the first other one."""
    value = event.value
    if event.op not in VISITS_OPS or type(value) is not list:
        return event
    mine = f"{event.user}/"
    kept = [t for t in value if isinstance(t, str) and t.startswith(mine)]
    if len(kept) < len(value):
        # Every token before the first other one is the caller's: same place.
        first = next(
            i for i, t in enumerate(value) if not (isinstance(t, str) and t.startswith(mine))
        )
        kept.insert(first, value[first])
    event.value = Visits(kept, len(value))
    return event


def to_wire(unit: list[Event]) -> list[dict[str, Any]]:
    wire = []
    for event in unit:
        fields_ = {name: getattr(event, name) for name in EVENT_FIELDS}
        if isinstance(event.value, Visits):
            fields_["value"] = {"kept": event.value[:], "total": event.value.total}
        wire.append(fields_)
    return wire


def from_wire(unit: list[dict[str, Any]]) -> list[Event]:
    events = []
    for fields_ in unit:
        value = fields_.get("value")
        if fields_["op"] in VISITS_OPS and isinstance(value, dict):
            fields_ = {**fields_, "value": Visits(value["kept"], value["total"])}
        events.append(Event(**fields_))
    return events
