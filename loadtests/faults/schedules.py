"""When a fault run (loadtests/faults/run.py) injects each fault, as a fraction
of its load, by what the run started: the store's faults where it started
the store, else the workers'. Each fault is in loadtests/faults/inject.py or, for
PostgreSQL, loadtests/faults/inject_postgres.py.

    fixed_cache (Valkey)           writes in flight 0.2, pause 0.5, kill 0.7
    fixed_db (FIXED_DB_BACKEND=postgres)
                                   writes in flight 0.15, pause 0.4, crash a backend 0.6,
                                   kill the server 0.8
    fixed_db (SQLite), fixed_session, or a server the run did not start (DATABASE_URL)
                                   a gunicorn worker killed at 0.25 and 0.6
"""

from collections.abc import Callable
from typing import TYPE_CHECKING

from loadtests.faults.inject import Fault, kill_store, kill_worker, pause_store
from loadtests.faults.inject_postgres import (
    PostgresWritesInFlight,
    crash_backend,
    kill_postgres,
    pause_postgres,
)
from serve.postgres import EmbeddedPostgres
from serve.processes import AppServer

if TYPE_CHECKING:
    from loadtests.faults.run import Run

PAUSE_SECONDS = 0.8
# What a fault does, given the run and its server.
Injection = Callable[["Run", AppServer], Fault]


def schedule(server: AppServer) -> list[tuple[float, Injection]]:
    """(when, as a fraction of the run's seconds; the fault), in order."""
    if isinstance(server.backing, EmbeddedPostgres):
        return [
            (0.15, lambda run, server: run.writes_in_flight(server, PostgresWritesInFlight).run(
                server, run.origin)),
            (0.4, lambda run, server: pause_postgres(server, PAUSE_SECONDS, run.origin)),
            (0.6, lambda run, server: crash_backend(server, run.origin)),
            (0.8, lambda run, server: kill_postgres(server, run.origin)),
        ]  # fmt: skip
    if server.backing is not None:
        return [
            (0.2, lambda run, server: run.writes_in_flight(server).run(server, run.origin)),
            (0.5, lambda run, server: pause_store(server, PAUSE_SECONDS, run.origin)),
            (0.7, lambda run, server: kill_store(server, run.origin)),
        ]
    return [
        (0.25, lambda run, server: kill_worker(server, run.history, run.origin)),
        (0.6, lambda run, server: kill_worker(server, run.history, run.origin)),
    ]
