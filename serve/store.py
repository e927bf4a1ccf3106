"""What a fault may do to a store's server, behind one interface.

A fault run (loadtests/faults/) pauses and kills the store an app runs on.
How depends on the server: Valkey is one process that its supervisor starts
again; PostgreSQL is a postmaster and a process per connection, started
again by whoever started it. Each launcher object (EmbeddedValkey,
EmbeddedPostgres) knows its own processes and implements StoreServer, so
the harness never asks which store it faces to find a PID.
"""

import contextlib
import os
import signal
import time
from typing import Protocol

from serve.pids import descendants, proc_stat, start_time

STOP_LIMIT_SECONDS = 2.0  # the most a SIGSTOPped process may take to show it stopped
# A process that can run no more: stopped (T), or exited (Z, X). A PostgreSQL
# backend that was exiting when the pause came (the app's pool closed its
# connection) stays a zombie until its parent, stopped too, reaps it.
HALTED = ("T", "Z", "X", None)


class StoreServer(Protocol):
    name: str  # what faults call it: "valkey", "postgres"

    @property
    def url(self) -> str: ...

    def processes(self) -> list[int]:
        """Every process of the running server, its main one first."""
        ...

    def paused(self) -> "Paused":
        """SIGSTOP the server for a `with` block; SIGCONT however it ends."""
        ...

    def crash(self) -> str:
        """SIGKILL the server, as a crash would, and return once a server
        answers again on the same files: what was killed and who started it
        again, in words."""
        ...


def state(pid: int) -> str | None:
    """The process's state letter (R, S, T for stopped, ...), None if gone."""
    fields = proc_stat(pid)
    return fields[0] if fields else None


class Paused:
    """SIGSTOP a server's main process, then (with `below`) every process
    below it, for the length of a `with` block; SIGCONT to each however it
    ends. str(): what was stopped, "postgres 812 and its 16 processes".

    The main process is stopped first and waited for, so it forks nothing
    after its processes are listed; each is waited for too, so that nothing
    sent after the `with` begins is read before it ends. A process is
    signalled only while its start time is the one seen, so a PID reused
    meanwhile is never reached."""

    def __init__(self, name: str, pid: int, below: bool = True) -> None:
        self.name, self.pid, self.below = name, pid, below
        self.stopped: list[tuple[int, str]] = []

    def __str__(self) -> str:
        if not self.below:
            return f"{self.name} {self.pid}"
        return f"{self.name} {self.pid} and its {len(self.stopped) - 1} processes"

    def __enter__(self) -> "Paused":
        try:
            self.stop([(self.pid, start_time(self.pid))])
            if self.below:
                self.stop(descendants(self.pid))
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
        while running := [(pid, s) for pid, _ in self.stopped if (s := state(pid)) not in HALTED]:
            if time.monotonic() > deadline:
                states = ", ".join(f"{pid} in state {letter}" for pid, letter in running)
                raise RuntimeError(f"{self} did not stop within {STOP_LIMIT_SECONDS} s: {states}")
            time.sleep(0.001)

    def resume(self) -> None:
        for pid, started in reversed(self.stopped):  # the main process last
            if start_time(pid) == started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
