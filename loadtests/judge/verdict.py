"""A verdict's vocabulary: every kind of anomaly, named once, and the Verdict
that counts them for one history, with the smallest witness of each kind.

Every table, chart, tab and test takes its names here (KINDS, SCOPES); the
rules that fill a Verdict are in checker.py (greet) and writes.py (the
counter, the visits), which both import this module and not each other's.
"""

from dataclasses import dataclass, field

from loadtests.judge.history import Event


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
# The anomaly counts per scope that the hammer's charts and Locust's tab add
# up: a write's fate under faults is left out (the hammer never retries).
CHART_SCOPES = {
    scope: tuple(name for name in names if not KIND[name].faults) for scope, names in SCOPES.items()
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
