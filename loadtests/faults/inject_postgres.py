"""The faults a fault run injects into fixed_db's PostgreSQL server
(loadtests/faults/run.py, FIXED_DB_BACKEND=postgres): the embedded server the run
started (serve/postgres.py), each fault on its processes by PID, and each
undone before it returns. `origin` is the run's time.monotonic() at its
start; each returns a Fault (loadtests/faults/inject.py).

    pause_postgres(server, 0.8, origin)  SIGSTOP the postmaster and every process
                                         below it, SIGCONT 0.8 s later
    crash_backend(server, origin)        SIGKILL one backend serving the app: the
                                         postmaster ends every session, runs crash
                                         recovery and accepts connections again
    kill_postgres(server, origin)        SIGKILL the postmaster and every process below
                                         it; the harness starts it on the same data folder
    PostgresWritesInFlight(...).run(server, origin)
        stop the whole server, send one write per app thread, resume once every
        first try has failed (a 503, or no answer): each write sent without a
        key was applied, none acknowledged

A backend is a child of the postmaster the run started; it is signalled only
after its parent and start time are checked (serve/postgres.py
descendants()), so a PID reused meanwhile is never reached. kill_postgres
starts the server again from the thread it runs in, which must live as long
as the server (the main thread): the server gets the parent-death signal
when the thread that started it ends (serve/postgres.py _spawn()).

From `make faults DB=postgres` (2026-11-29, 2 cores), fixed_db with keys:

    +1.50s  writes in flight: 8 sent to stopped postgres 20372 and its 16 processes, 8 failed before it resumed (8 not applied), 1.02 s
    +3.25s  pause store: SIGSTOP postgres 20372 and its 16 processes, 0.82 s
    +4.81s  crash backend: SIGKILL backend 20510 (idle in transaction) of postgres 20372; it ended every session and recovered, 0.20 s
    +6.40s  kill store: SIGKILL postgres 20372 and its 16 processes; restarted as 20568 by the harness, 0.16 s
"""  # noqa: E501

import contextlib
import os
import signal
import time
from pathlib import Path

import psycopg

from loadtests.faults.inject import Fault, WritesInFlight
from serve.postgres import (
    START_TIMEOUT_SECONDS,
    EmbeddedPostgres,
    descendants,
    proc_stat,
    start_time,
)
from serve.processes import AppServer

STOP_LIMIT_SECONDS = 2.0  # the most a SIGSTOPped process may take to show it stopped
VICTIM_SEARCH_SECONDS = 1.0  # how long crash_backend looks for a backend mid-write
# What a backend's title shows while it writes (update_process_title): the
# statements of fixed_db's writes, and a keyed write's open transaction.
WRITING = ("UPDATE", "INSERT", "COMMIT", "BEGIN", "SELECT", "idle in transaction")


def postgres_of(server: AppServer) -> EmbeddedPostgres:
    if not isinstance(server.backing, EmbeddedPostgres) or server.backing.process is None:
        raise RuntimeError(f"{server.app} runs on no PostgreSQL server of its own to fault")
    return server.backing


def state(pid: int) -> str | None:
    """The process's state letter (R, S, T for stopped, ...), None if gone."""
    fields = proc_stat(pid)
    return fields[0] if fields else None


def reaped(pid: int, started: str) -> bool:
    """Gone from /proc (not a zombie waiting for its parent), or its PID reused."""
    fields = proc_stat(pid)
    return fields is None or fields[19] != started


class ServerStopped:
    """SIGSTOP the postmaster, then every process below it, for the length of
    a `with` block; SIGCONT to each however it ends.

    The postmaster is stopped first and waited for, so it forks nothing
    after its processes are listed; each is waited for too, so that nothing
    sent after the `with` begins is read before it ends."""

    def __init__(self, postgres: EmbeddedPostgres, below: bool = True) -> None:
        """below=False: the postmaster only, which then reaps no child, so
        the PID of one that exits stays that child's."""
        self.postmaster, self.below = postgres.process.pid, below
        self.stopped: list[tuple[int, str]] = []

    def __str__(self) -> str:
        return f"postgres {self.postmaster} and its {len(self.stopped) - 1} processes"

    def __enter__(self) -> "ServerStopped":
        try:
            self.stop([(self.postmaster, start_time(self.postmaster))])
            if self.below:
                self.stop(descendants(self.postmaster))
        except BaseException:
            self.resume()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.resume()

    def stop(self, processes: list[tuple[int, str | None]]) -> None:
        for pid, started in processes:
            if started is not None and start_time(pid) == started:
                os.kill(pid, signal.SIGSTOP)
                self.stopped.append((pid, started))
        deadline = time.monotonic() + STOP_LIMIT_SECONDS
        while any(state(pid) not in ("T", None) for pid, _ in self.stopped):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self} did not stop within {STOP_LIMIT_SECONDS} s")
            time.sleep(0.001)

    def resume(self) -> None:
        for pid, started in reversed(self.stopped):  # the postmaster last
            if start_time(pid) == started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)


def pause_postgres(server: AppServer, seconds: float, origin: float) -> Fault:
    began = time.monotonic()
    with ServerStopped(postgres_of(server)) as stopped:
        time.sleep(seconds)
    return Fault("pause store", began - origin, time.monotonic() - began, f"SIGSTOP {stopped}")


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
    for pid, started in descendants(postgres.process.pid):
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


def crash_backend(server: AppServer, origin: float) -> Fault:
    """SIGKILL one backend serving the app, as a crash of that process would
    (a segfault, the OOM killer). The postmaster cannot know what the dead
    process left in shared memory: it ends every other session, reinitialises
    and replays the WAL (restart_after_crash, on by default), by itself.
    Returns once the victim is gone and the server accepts connections again."""
    postgres, began = postgres_of(server), time.monotonic()
    postmaster = postgres.process.pid
    found = victim(postgres)
    with ServerStopped(postgres, below=False):  # the victim's PID cannot be reused meanwhile
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


def kill_postgres(server: AppServer, origin: float) -> Fault:
    """SIGKILL the postmaster and every process below it at once, as a crash
    of the whole server would, then start it again on the same data folder,
    as its service manager would: crash recovery from the WAL brings back
    every commit that was flushed, that is every one acknowledged
    (synchronous_commit=on)."""
    postgres, began = postgres_of(server), time.monotonic()
    old, processes = postgres.process.pid, len(descendants(postgres.process.pid))
    postgres.kill()  # serve/postgres.py kill_group(): returns once every one is gone
    postgres.start()
    detail = f"SIGKILL postgres {old} and its {processes} processes; "
    detail += f"restarted as {postgres.process.pid} by the harness"
    return Fault("kill store", began - origin, time.monotonic() - began, detail)


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

    def stop(self, server: AppServer) -> ServerStopped:
        return ServerStopped(postgres_of(server))
