"""A background thread started at import: it stops under --preload, and runs N times without.

An app that polls a feed or refreshes a cache every few seconds often starts
a thread when its module is imported (thread_started_at_import_app.py: it
appends to a global list every 50 ms, and /ticks says how long the list is).
Under `flask run` it works. Under gunicorn:

- with --preload, the master imports the app, so the thread runs in the
  master. fork() copies a process's memory but only the thread that called
  it: each worker gets a copy of the list as it was and no thread to grow
  it. The counts never move, and nothing says why.
- without --preload, every worker imports the app and runs a thread of its
  own: N workers, N producers, each filling its own list; a job that should
  run once (a reminder e-mail, a cleanup) runs N times.

The proof reads /ticks on each of 2 sync workers, waits 8 ticks, reads again.
A run:

    --preload:                  A 1 -> 1, B 1 -> 1, no producer running in either
    no --preload:               A 1 -> 9, B 1 -> 9, 2 producers (one per worker)
    post_fork hook, --preload:  A 1 -> 10, B 1 -> 9, 2 producers, started after the fork
    one producer, Valkey:       A 16 -> 24, B 16 -> 24, 1 producer, one count for all

The fixes, by what the thread is for:

- work for the whole site: one producer, its own process (here
  `python -m examples.thread_started_at_import`), writing to a store every
  worker reads;
- work each worker needs for itself (a local cache): a thread per worker,
  started after the fork in gunicorn's post_fork hook (this module serves as
  its config, `-c python:examples.thread_started_at_import`), knowing that
  there are as many as workers.
"""

import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import redis
import requests
from flask import Flask

from examples.servers import START_TIMEOUT_SECONDS, Gunicorn, at_once, stamp_worker, worker_of
from plumbing.config import REPO_ROOT
from serve.pids import stop_process
from serve.valkey import EmbeddedValkey

LABEL = "proven"
TICK_SECONDS = 0.05
WAIT_TICKS = 8
BROKEN = "examples.thread_started_at_import_app:app"

# The post_fork fix: nothing starts at import; gunicorn's hook starts it in each worker.
ticks: list[float] = []
producer: threading.Thread | None = None


def produce() -> None:
    while True:
        ticks.append(time.monotonic())
        time.sleep(TICK_SECONDS)


def post_fork(server, worker) -> None:
    """gunicorn's hook, run in each new worker just after the fork."""
    global producer
    producer = threading.Thread(target=produce, name="producer", daemon=True)
    producer.start()


def create_app() -> Flask:
    app = stamp_worker(Flask(__name__))

    @app.get("/ticks")
    def count_ticks():
        running = producer is not None and producer.is_alive()
        return {"ticks": len(ticks), "producer": os.getpid() if running else None}

    return app


# The one-producer fix: a process of its own writes; every worker reads.


def produce_into_store(url: str) -> None:
    valkey = redis.Redis.from_url(url)
    valkey.set("producer", os.getpid())
    while True:
        valkey.incr("ticks")
        time.sleep(TICK_SECONDS)


def create_store_app() -> Flask:
    app = stamp_worker(Flask(__name__))
    valkey = redis.Redis.from_url(os.environ["REDIS_URL"])  # connects on first use

    @app.get("/ticks")
    def count_ticks():
        count, pid = valkey.mget("ticks", "producer")
        return {"ticks": int(count or 0), "producer": int(pid) if pid else None}

    return app


@dataclass
class Run:
    ticks: dict[int, list[int]]  # worker -> its count, then its count WAIT_TICKS later
    producers: set[int | None]  # the process each worker's producer runs in (None: none runs)

    @property
    def grew(self) -> bool:
        return len(self.ticks) == 2 and all(after > before for before, after in self.readings)

    @property
    def frozen(self) -> bool:
        return len(self.ticks) == 2 and all(after == before for before, after in self.readings)

    @property
    def readings(self) -> list[list[int]]:
        return list(self.ticks.values())

    def describe(self) -> str:
        counts = ", ".join(f"{before} -> {after}" for before, after in self.readings)
        running = len(self.producers - {None})
        return f"{counts} ({running} producer{'' if running == 1 else 's'} running)"


def read_twice(server: Gunicorn) -> Run:
    ticks: dict[int, list[int]] = {pid: [] for pid in server.worker_pids}
    producers: set[int | None] = set()
    for reading in range(2):
        if reading:
            time.sleep(WAIT_TICKS * TICK_SECONDS)
        for pid in server.worker_pids:
            with server.only(pid):
                response = requests.get(server.url + "/ticks", timeout=5)
            ticks[worker_of(response)].append(response.json()["ticks"])
            producers.add(response.json()["producer"])
    return Run(ticks, producers)


@dataclass
class Finding:
    preloaded: Run
    not_preloaded: Run
    post_fork: Run
    one_producer: Run
    workers: dict[str, list[int]]  # run -> its worker PIDs

    @property
    def holds(self) -> bool:
        one = self.one_producer.producers
        return (
            self.preloaded.frozen
            and self.preloaded.producers == {None}  # the thread stayed in the master
            and self.not_preloaded.grew
            and self.not_preloaded.producers == set(self.workers["not_preloaded"])
            and self.post_fork.grew
            and self.post_fork.producers == set(self.workers["post_fork"])
            and self.one_producer.grew
            and len(one) == 1
            and not one & set(self.workers["one_producer"])  # a process of its own
        )

    def summary(self) -> str:
        return (
            f"ticks on each of 2 workers, {WAIT_TICKS} ticks apart: --preload "
            f"{self.preloaded.describe()}; no --preload {self.not_preloaded.describe()}; "
            f"post_fork hook {self.post_fork.describe()}; one producer writing to Valkey "
            f"{self.one_producer.describe()}"
        )


def prove() -> Finding:
    this = "examples.thread_started_at_import"

    def serve(server: Gunicorn) -> tuple[Run, list[int]]:
        with server:
            return read_twice(server), server.worker_pids

    def serve_one_producer() -> tuple[Run, list[int]]:
        with tempfile.TemporaryDirectory() as directory, EmbeddedValkey(Path(directory)) as store:
            env = {"REDIS_URL": store.url}
            producing = start_producer(env, redis.Redis.from_url(store.url))
            try:
                return serve(Gunicorn(f"{this}:create_store_app()", options=["--preload"], env=env))
            finally:
                stop_process(producing)

    hooks = ["--preload", "--config", f"python:{this}"]
    results = at_once(
        lambda: serve(Gunicorn(BROKEN, options=["--preload"])),
        lambda: serve(Gunicorn(BROKEN)),
        lambda: serve(Gunicorn(f"{this}:create_app()", options=hooks)),
        serve_one_producer,
    )
    names = ("preloaded", "not_preloaded", "post_fork", "one_producer")
    runs = {name: run for name, (run, _) in zip(names, results, strict=True)}
    workers = {name: pids for name, (_, pids) in zip(names, results, strict=True)}
    return Finding(**runs, workers=workers)


def start_producer(env: dict[str, str], valkey: redis.Redis) -> subprocess.Popen:
    """The one producer, in a process of its own; returns once it has written."""
    process = subprocess.Popen(
        [sys.executable, "-m", "examples.thread_started_at_import"],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        start_new_session=True,
    )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not valkey.exists("producer"):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process(process)
            raise RuntimeError("the producer did not start")
        time.sleep(0.02)
    return process


if __name__ == "__main__":  # the one producer, a process of its own
    produce_into_store(os.environ["REDIS_URL"])
