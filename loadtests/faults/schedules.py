"""When a fault run (loadtests/faults/run.py) injects each fault: data, by
the store server the run started (serve/store.py StoreServer.name), or by
none where it started no store (fixed_db on SQLite, fixed_session, or a
store the run did not start, such as DATABASE_URL's): then the gunicorn
workers take the faults. `at` is a fraction of the run's seconds; `fault`
names one of Run.inject()'s faults (loadtests/faults/inject.py,
loadtests/faults/inject_postgres.py).
"""

from dataclasses import dataclass

PAUSE_SECONDS = 0.8
WRITES_IN_FLIGHT = "writes in flight"
PAUSE_STORE = "pause store"
KILL_STORE = "kill store"
CRASH_BACKEND = "crash backend"
KILL_WORKER = "kill worker"


@dataclass(frozen=True)
class Planned:
    at: float  # when, as a fraction of the run's seconds
    fault: str  # which, by name


SCHEDULES: dict[str | None, tuple[Planned, ...]] = {
    "valkey": (Planned(0.2, WRITES_IN_FLIGHT), Planned(0.5, PAUSE_STORE), Planned(0.7, KILL_STORE)),
    "postgres": (
        Planned(0.15, WRITES_IN_FLIGHT),
        Planned(0.4, PAUSE_STORE),
        Planned(0.6, CRASH_BACKEND),
        Planned(0.8, KILL_STORE),
    ),
    None: (Planned(0.25, KILL_WORKER), Planned(0.6, KILL_WORKER)),
}


def schedule(store: str | None) -> tuple[Planned, ...]:
    """The faults for a run whose store server is `store` (None: none of its own).

    >>> [(p.at, p.fault) for p in schedule(None)]
    [(0.25, 'kill worker'), (0.6, 'kill worker')]
    >>> schedule("valkey")[-1]
    Planned(at=0.7, fault='kill store')
    """
    return SCHEDULES[store]
