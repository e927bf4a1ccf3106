"""The fault only PostgreSQL can suffer, and its writes in flight.

crash_backend(postgres, origin) SIGKILLs one backend serving the app, as a
crash of that process would: the postmaster ends every session, runs crash
recovery and accepts connections again, by itself. A backend is a child of
the postmaster the run started; it is signalled only after its parent and
start time are checked, with the postmaster paused, so a PID reused
meanwhile is never reached. Pausing and killing the whole server are the
launcher object's own (serve/postgres.py, behind serve/store.py).

PostgresWritesInFlight is WritesInFlight (loadtests/faults/inject.py) as
PostgreSQL's writes meet a stopped server: each first try fails (a 503, or
no answer), and a write sent without a key was applied all the same.
"""

import os
import signal
import time
from pathlib import Path

import psycopg

from loadtests.faults.inject import Fault, WritesInFlight
from serve.pids import descendants, proc_stat, start_time
from serve.postgres import START_TIMEOUT_SECONDS, EmbeddedPostgres

VICTIM_SEARCH_SECONDS = 1.0  # how long crash_backend looks for a backend mid-write
# What a backend's title shows while it writes (update_process_title): the
# statements of fixed_db's writes, and a keyed write's open transaction.
WRITING = ("UPDATE", "INSERT", "COMMIT", "BEGIN", "SELECT", "idle in transaction")


def reaped(pid: int, started: str) -> bool:
    """Gone from /proc (not a zombie waiting for its parent), or its PID reused."""
    fields = proc_stat(pid)
    return fields is None or fields[19] != started


def title(pid: int) -> list[str]:
    """A backend's process title, in words: "postgres:", its user, its
    database, its client, then what it does ("idle", "UPDATE", ...)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().split()
    except (OSError, UnicodeDecodeError):
        return []


def app_backends(postgres: EmbeddedPostgres) -> list[tuple[int, str, str]]:
    """The backends of the app's database: PID, start time, what it does."""
    found = []
    for pid, started in descendants(postgres.processes()[0]):
        words = title(pid)
        if len(words) >= 5 and words[0] == "postgres:" and words[2] == postgres.database:
            found.append((pid, started, " ".join(words[4:])))
    return found


def victim(postgres: EmbeddedPostgres) -> tuple[int, str, str] | None:
    """A backend of the app caught mid-write, looked for during
    VICTIM_SEARCH_SECONDS; else any backend of the app; None if it has none."""
    deadline, seen = time.monotonic() + VICTIM_SEARCH_SECONDS, []
    while time.monotonic() < deadline:
        seen = app_backends(postgres)
        if writing := [b for b in seen if b[2].startswith(WRITING)]:
            return writing[0]
        time.sleep(0.002)
    return seen[0] if seen else None


def answers(postgres: EmbeddedPostgres) -> bool:
    try:
        with psycopg.connect(postgres.url_for("postgres"), connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.OperationalError:  # refused, or still in crash recovery
        return False


def crash_backend(postgres: EmbeddedPostgres, origin: float) -> Fault:
    """SIGKILL one backend serving the app, as a crash of that process would
    (a segfault, the OOM killer). The postmaster cannot know what the dead
    process left in shared memory: it ends every other session, reinitialises
    and replays the WAL (restart_after_crash, on by default), by itself.
    Returns once the victim is gone and the server accepts connections again."""
    began = time.monotonic()
    postmaster = postgres.processes()[0]
    found = victim(postgres)
    with postgres.paused(below=False):  # the victim's PID cannot be reused meanwhile
        if found is None or start_time(found[0]) != found[1]:
            return Fault("crash backend", began - origin, 0.0, "no backend of the app: skipped")
        pid, started, doing = found
        began = time.monotonic()
        os.kill(pid, signal.SIGKILL)
    deadline = began + START_TIMEOUT_SECONDS
    # Reaped by the postmaster, which then knows of the crash, and answering again.
    while not reaped(pid, started) or not answers(postgres):
        if time.monotonic() > deadline or postgres.process.poll() is not None:
            raise RuntimeError(f"postgres {postmaster} did not recover from the crash of {pid}")
        time.sleep(0.005)
    detail = f"SIGKILL backend {pid} ({doing}) of postgres {postmaster}; "
    detail += "it ended every session and recovered"
    return Fault("crash backend", began - origin, time.monotonic() - began, detail)


class PostgresWritesInFlight(WritesInFlight):
    """WritesInFlight (loadtests/faults/inject.py) with the whole server stopped:
    each app thread sends its write's first statement into a stopped backend
    and waits. Each first try then fails: the app answers 503 when its own
    deadline on a statement ends (it closes the connection, the statement in
    flight), or, where it has none, the client gives up after
    FIRST_TRY_TIMEOUT (no answer: outcome unknown). Only then does the server
    resume: a backend runs what was sent to it before it finds the
    connection closed, or, where the app still waits, the app commits the
    write its client gave up on. An autocommit write (no key) was applied
    either way; a keyed write whose BEGIN was in flight was not, and the app
    says so. Then the clients retry, with their own timeout again."""

    FIRST_TRY_TIMEOUT = 2.0  # longer than the app's deadline, so its answer is seen
    FAILED = "failed"  # a 503 from the app, or no answer within FIRST_TRY_TIMEOUT
