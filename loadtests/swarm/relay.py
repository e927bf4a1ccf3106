"""Where a Locust process's users put what they record, and how a distributed
run's workers send it to the master.

Local or master: into the Tally. Worker: into an outbox sent to the master
every FLUSH_SECONDS; at the end of a test the master asks each worker to stop
its users and send the rest, and waits for it, so one tab shows the whole
run. Monotonic clocks of two hosts are unrelated, so each batch carries the
sender's wall-clock offset and the master shifts the events by it.
"""

import json
import logging
import time
from typing import IO, Any

import gevent
from locust.env import Environment
from locust.exception import RPCError
from locust.runners import MasterRunner, WorkerRunner

from loadtests.clients.client import Client
from loadtests.judge.compact import from_wire, to_wire
from loadtests.judge.history import Event
from loadtests.judge.tally import Tally

log = logging.getLogger(__name__)

GRACEFUL_STOP_SECONDS = 3.0  # users finish the request they are in: nothing left unrecorded
FLUSH_SECONDS = 1.0  # how often a worker sends what it recorded
SYNC_TIMEOUT_SECONDS = GRACEFUL_STOP_SECONDS + 15.0
SWEEP_ROUNDS = 4  # rounds of requests the master sends to reach every app process

# Messages between master and workers.
EVENTS, EPOCH, SYNC = "correctness_events", "correctness_epoch", "correctness_sync"
HELLO = "correctness_hello"


class Recorder:
    """Where this process's users put what they record.

    Local and master: into the Tally. Worker: into an outbox that is sent to
    the master. A new epoch (a new test, or Reset Stats) drops what a task
    that started before it records, so a visitor is never judged half."""

    def __init__(self) -> None:
        self.environment: Environment | None = None
        self.epoch = 0
        self.outbox: list[list[Event]] = []
        self.tally = Tally()
        self.served_app = "unknown"  # the app, as its /healthz says
        self.app = "unknown"  # whose rules judge the run: the same, or --judge-as
        self.sync_round = 0
        self.synced: set[str] = set()  # workers that sent all they had for this round
        self.workers: set[str] = set()  # every worker that ever said hello (master only)
        self.history: IO[str] | None = None  # --correctness-history: every unit, as JSON lines

    @property
    def is_worker(self) -> bool:
        return isinstance(self.environment.runner, WorkerRunner)

    @property
    def is_master(self) -> bool:
        return isinstance(self.environment.runner, MasterRunner)

    def record(self, unit: list[Event], epoch: int) -> None:
        if epoch != self.epoch:
            return  # begun before a reset: part of it was dropped with the rest
        if self.is_worker:
            self.outbox.append(unit)
        else:
            self.judge([unit], "local")

    def judge(self, units: list[list[Event]], source: str) -> None:
        if self.history:
            for unit in units:
                self.history.write(json.dumps({"source": source, "unit": to_wire(unit)}) + "\n")
        self.tally.add(units, source)

    # worker side
    def flush(self, sync_round: int | None = None) -> None:
        units, self.outbox = self.outbox, []
        if not units and sync_round is None:
            return
        self.environment.runner.send_message(
            EVENTS,
            {
                "epoch": self.epoch,
                "units": [to_wire(unit) for unit in units],
                "clock": time.time() - time.monotonic(),
                "sync_round": sync_round,
            },
        )

    def keep_flushing(self) -> None:
        while True:
            gevent.sleep(FLUSH_SECONDS)
            try:
                self.flush()
            except RPCError as error:  # the master is away for a moment: the next try
                log.warning("could not send events to the master: %s", error)

    # master side
    def receive(self, node_id: str, data: dict[str, Any]) -> None:
        if data["epoch"] == self.epoch:
            # Monotonic clocks of two hosts are unrelated; the wall clocks agree.
            shift = data["clock"] - (time.time() - time.monotonic())
            units = [from_wire(unit) for unit in data["units"]]
            for unit in units:
                for event in unit:
                    event.start += shift
                    event.end += shift
            self.judge(units, node_id)
        if data["sync_round"] == self.sync_round:
            self.synced.add(node_id)

    def new_epoch(self) -> None:
        self.epoch += 1
        self.tally.clear()
        if self.history:
            self.history.write(json.dumps({"epoch": self.epoch}) + "\n")
        for worker in self.workers:
            self.tell_epoch(worker)

    def tell_epoch(self, worker: str) -> None:
        # By id: a worker that reported "stopped" is off runner.clients until it
        # is ready again, and must hear it all the same.
        self.environment.runner.send_message(EPOCH, {"epoch": self.epoch}, client_id=worker)

    def gather_from_workers(self) -> None:
        """Ask every worker to stop its users and send all it recorded; wait for it."""
        runner = self.environment.runner
        self.sync_round += 1
        self.synced = set()
        # The workers in this test; one that quit since then is waited for in vain.
        workers = {client.id for client in runner.clients.all} | set(self.tally.sources)
        workers &= self.workers
        for worker in workers:
            runner.send_message(SYNC, {"sync_round": self.sync_round}, client_id=worker)
        deadline = time.monotonic() + SYNC_TIMEOUT_SECONDS
        while not workers <= self.synced and time.monotonic() < deadline:
            gevent.sleep(0.05)
        if missing := workers - self.synced:
            log.warning("no final events from workers %s: judged without them", sorted(missing))

    def app_client(self) -> Client:
        """A client of the master's own, on a connection of its own."""
        return Client(self.environment.host or "", "master")

    def sweep(self, op: str, workers: int) -> list[Event]:
        """`op` ("reset" or "read") on every worker process of the app, as far as
        it goes. A request reaches the one process that accepts its connection,
        and one process often wins that race many times in a row; requests
        sent together on connections of their own spread better. So: rounds
        of two per process at once, until `workers` processes have answered
        (SWEEP_ROUNDS at most; one round of 8 when `workers` is unknown, 0)."""
        events: list[Event] = []

        def one() -> Event:
            client = self.app_client()
            try:
                return client.reset() if op == "reset" else client.read_counter()
            finally:
                client.close()

        for _ in range(SWEEP_ROUNDS if workers else 1):
            requests = [gevent.spawn(one) for _ in range(2 * workers or 8)]
            gevent.joinall(requests, raise_error=True)
            events += [request.value for request in requests]
            if not all(event.ok for event in events):
                break  # not served (501), or the app is not answering: no use trying on
            if len({event.pid for event in events}) >= workers:
                break
        return events


RUN = Recorder()
