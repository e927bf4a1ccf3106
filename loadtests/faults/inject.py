"""The faults a fault run injects (loadtests/faults/run.py), each undone
before it returns, each returning a Fault: what, when, for how long.

    pause_store(store, seconds, origin)   SIGSTOP the store's server, SIGCONT after
    kill_store(store, origin)             SIGKILL it, and wait until one answers again
    kill_worker(server, history, origin)  SIGKILL the gunicorn worker that answered last
    WritesInFlight(...).run(server, origin)
        stop the store, send one write per app thread, resume once each has
        failed its first try: each was applied, none acknowledged

How a store is paused or killed is its launcher object's own (serve/store.py
StoreServer: Valkey's supervisor restarts it, PostgreSQL's postmaster and
backends are stopped together), so nothing here asks which store it faces.
`origin` is the run's time.monotonic() at its start.
"""

import functools
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from loadtests.clients.client import Client, Retry
from loadtests.clients.placement import Placement
from loadtests.judge.history import Event
from serve.pids import join_all
from serve.processes import AppServer
from serve.store import StoreServer

ANSWER_LIMIT_SECONDS = 10.0  # the most a write in flight may take to be answered


@dataclass
class Fault:
    name: str
    at: float  # seconds since the run started
    seconds: float  # how long the fault lasted
    detail: str

    def __str__(self) -> str:
        lasted = f", {self.seconds:.2f} s" if self.seconds >= 0.01 else ""
        return f"+{self.at:.2f}s  {self.name}: {self.detail}{lasted}"


def pause_store(store: StoreServer, seconds: float, origin: float) -> Fault:
    """SIGSTOP the store's server (serve/store.py), SIGCONT `seconds` later."""
    began = time.monotonic()
    with store.paused() as paused:
        time.sleep(seconds)
    return Fault("pause store", began - origin, time.monotonic() - began, f"SIGSTOP {paused}")


def kill_store(store: StoreServer, origin: float) -> Fault:
    """SIGKILL the store's server, as a crash would, and wait until one
    answers again: Valkey's supervisor starts it, PostgreSQL's launcher
    object does, each on the same files (serve/store.py crash())."""
    began = time.monotonic()
    detail = store.crash()
    return Fault("kill store", began - origin, time.monotonic() - began, detail)


def parent_pid(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[1])


def kill_worker(server: AppServer, history: list[Event], origin: float) -> Fault:
    """SIGKILL the gunicorn worker that answered most recently, mid-load:
    gunicorn starts another. Only a child of this server's master is killed."""
    began = time.monotonic()
    master = server.process.pid
    recent = (e.pid for e in reversed(history[-200:]) if e.worker)
    pid = next((int(p) for p in recent if parent_pid(int(p)) == master), None)
    if pid is None:
        return Fault("kill worker", began - origin, 0.0, "no live worker answered lately: skipped")
    os.kill(pid, signal.SIGKILL)
    return Fault("kill worker", began - origin, time.monotonic() - began, f"SIGKILL worker {pid}")


class HeldRetry(Retry):
    """A Retry that, after a first failed try, says so and waits until the
    store is resumed (bounded): the retry then reaches a store that runs.
    `resuming` is called then, before the retry (in the client's thread).
    Each failed first try is appended to `firsts`."""

    def __init__(
        self,
        base: Retry,
        answered: threading.Semaphore,
        resumed: threading.Event,
        resuming: Callable[[], object] = lambda: None,
        firsts: list[Event] | None = None,
    ) -> None:
        super().__init__(base.attempts, base.backoff, base.cap)
        self.answered, self.resumed, self.resuming = answered, resumed, resuming
        self.firsts = [] if firsts is None else firsts

    def wait(self, event: Event) -> None:
        if event.attempt == 1:
            self.firsts.append(event)  # list.append is atomic under the GIL
            self.answered.release()
            self.resumed.wait(ANSWER_LIMIT_SECONDS)
            self.resuming()
        else:
            super().wait(event)


def together(clients: list[Client], action: Callable[[int, Client], object]) -> None:
    """action(index, client) for every client at once, each in a thread of
    its own, released by one barrier."""
    barrier = threading.Barrier(len(clients))

    def go(index: int, client: Client) -> None:
        barrier.wait()
        action(index, client)

    threads = [threading.Thread(target=go, args=pair) for pair in enumerate(clients)]
    for thread in threads:
        thread.start()
    join_all(threads)


class WritesInFlight:
    """One write per app thread, sent while the store is stopped, so that each
    one's outcome is certain to be unknown, and certain to be applied.

    The other users hold still (`hold`), so these are the only requests.
    The writers' connections are spread over the worker processes, one per
    thread of each, and WARM_ROUNDS rounds of `warm` writes sent all at once
    make every app thread open its connection to the store. Then the store
    is stopped (SIGSTOP) and every writer sends its `write` at the same
    moment: each app thread sends its command into the stopped store's
    socket and, when its timeout ends, answers 503 "unknown". Only when all
    have that answer does the store resume and run the queued commands:
    every write was applied, none acknowledged. Then the clients retry. With
    an Idempotency-Key a retry gets the first answer back; without one it
    applies the write a second time.

    One exception, which the detail counts: a write that reaches its worker
    after three others there timed out finds the worker's circuit breaker
    open, and is answered 503 "not applied" with nothing sent. On a loaded
    machine one of a worker's four writes sometimes arrives that late; the
    breaker opens on three, so at least three of each worker's four are
    sent."""

    WARM_ROUNDS = 10
    # The clients' timeout while the store is stopped, where the app does not
    # answer by itself (None: their own); their own again once it resumes.
    FIRST_TRY_TIMEOUT: float | None = None
    FAILED = "answered"  # what every first try did before the store resumed

    def __init__(
        self,
        clients: list[Client],
        warm: Callable[[int, Client], object],
        write: Callable[[int, Client], object],
        hold: Callable[[], AbstractContextManager],
    ) -> None:
        self.clients, self.warm, self.write, self.hold = clients, warm, write, hold

    def run(self, server: AppServer, origin: float) -> Fault:
        own = {id(client): client.timeout for client in self.clients}

        def timeout(client: Client, seconds: float) -> None:
            if client.timeout != seconds:
                client.timeout = seconds
                client.http.close()  # a connection keeps the timeout it was opened with

        with self.hold():
            for client in self.clients:
                timeout(client, self.FIRST_TRY_TIMEOUT or own[id(client)])
            placement = Placement(len(self.clients), server.workers())
            for client in self.clients:
                placement.settle(client, 1)
            for n in range(self.WARM_ROUNDS):
                together(self.clients, lambda _, client, n=n: self.warm(n, client))
            answered, resumed = threading.Semaphore(0), threading.Event()
            firsts: list[Event] = []
            for client in self.clients:
                back = functools.partial(timeout, client, own[id(client)])
                client.retry = HeldRetry(client.retry, answered, resumed, back, firsts)
            stopped, began, got = server.backing.paused(), time.monotonic(), 0
            writing = threading.Thread(target=together, args=(self.clients, self.write))
            with stopped:
                writing.start()
                deadline = began + ANSWER_LIMIT_SECONDS
                while got < len(self.clients) and answered.acquire(
                    timeout=max(0.0, deadline - time.monotonic())
                ):
                    got += 1
            stopped_for = time.monotonic() - began
            resumed.set()
            writing.join()
        sent = f"{len(self.clients)} sent to stopped {stopped}"
        outcomes = Counter(e.outcome if e.status else "no answer" for e in firsts)
        shown = ", ".join(f"{n} {outcome}" for outcome, n in sorted(outcomes.items()))
        detail = f"{sent}, {got} {self.FAILED} before it resumed ({shown})"
        return Fault("writes in flight", began - origin, stopped_for, detail)
