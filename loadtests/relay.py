"""Where a Locust process's users put what they record, and how a distributed
run's workers send it to the master.

Local or master: into the Tally. Worker: into an outbox sent to the master
every FLUSH_SECONDS; at the end of a test the master asks each worker to stop
its users and send the rest, and waits for it, so one tab shows the whole
run. Monotonic clocks of two hosts are unrelated, so each batch carries the
sender's wall-clock offset and the master shifts the events by it.
"""

import logging
import time
from dataclasses import fields
from typing import Any

import gevent
from locust.env import Environment
from locust.exception import RPCError
from locust.runners import MasterRunner, WorkerRunner

from loadtests.client import Client
from loadtests.history import Event
from loadtests.tally import Tally

log = logging.getLogger(__name__)

GRACEFUL_STOP_SECONDS = 3.0  # users finish the request they are in: nothing left unrecorded
FLUSH_SECONDS = 1.0  # how often a worker sends what it recorded
SYNC_TIMEOUT_SECONDS = GRACEFUL_STOP_SECONDS + 15.0

# Messages between master and workers.
EVENTS, EPOCH, SYNC = "correctness_events", "correctness_epoch", "correctness_sync"
HELLO = "correctness_hello"

EVENT_FIELDS = [f.name for f in fields(Event)]


def to_wire(unit: list[Event]) -> list[dict[str, Any]]:
    return [{name: getattr(event, name) for name in EVENT_FIELDS} for event in unit]


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
            self.tally.add([unit], "local")

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
            units = [[Event(**wire) for wire in unit] for unit in data["units"]]
            for unit in units:
                for event in unit:
                    event.start += shift
                    event.end += shift
            self.tally.add(units, node_id)
        if data["sync_round"] == self.sync_round:
            self.synced.add(node_id)

    def new_epoch(self) -> None:
        self.epoch += 1
        self.tally.clear()
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
        """The master's own client, for the reset, the final read and /healthz."""
        return Client(self.environment.host or "", "master")


RUN = Recorder()
