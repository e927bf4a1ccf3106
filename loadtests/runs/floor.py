"""A store's own floor: the app's main write, straight from the store's client.

The bench (bench.py) asks how fast an increment could go if the web stack
cost nothing: the same operation the app sends, to the same store server (the
very one the app under test uses, so with its durability: Valkey with its
appendfsync, PostgreSQL with synchronous_commit=on, the SQLite file in WAL
with synchronous=NORMAL, fixed_session's session files rewritten in place
under an exclusive flock), from as many client threads as the app has:
`workers` processes of `threads` threads each, the gunicorn shape. Each
process counts the CPU time it spent (user and system, all its threads),
so the operation's own cost, client side, is known; the store server's is
read from /proc by the caller (cpu.py).
"""

import fcntl
import multiprocessing
import os
import resource
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.pool import Pool
from pathlib import Path

from loadtests.runs.cpu import Groups, cpu_spent, cpu_used
from registry import APPS
from serve.processes import AppServer

SESSION_BYTES = 1024  # about what fixed_session saves for a user with a few visits
BUSY_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class Store:
    """Where the floor's operation goes: a kind and its address."""

    kind: str  # "valkey", "postgres", "sqlite" or "session-files"
    where: str  # a URL, a file or a folder

    @property
    def operation(self) -> str:
        return OPERATIONS[self.kind]


OPERATIONS = {
    "valkey": "INCR (redis-py)",
    "postgres": "UPDATE ... RETURNING, autocommit (psycopg)",
    "sqlite": "UPDATE ... RETURNING (sqlite3)",
    "session-files": "session file rewritten under flock",
}
INCREMENT_SQL = "UPDATE counter SET value = value + 1 WHERE id = 1 RETURNING value"


@dataclass
class Floor:
    completed: int
    seconds: float
    client_cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0


def one_operation(store: Store, thread: int) -> Callable[[], object]:
    """A connection of this thread's own, and the operation on it."""
    if store.kind == "valkey":
        import redis

        client = redis.Redis.from_url(store.where)
        return lambda: client.incr("bench:floor")
    if store.kind == "postgres":
        import psycopg

        conn = psycopg.connect(store.where, autocommit=True)
        return lambda: conn.execute(INCREMENT_SQL).fetchone()
    if store.kind == "sqlite":
        conn = sqlite3.connect(
            store.where, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False
        )  # made here, used by one thread only
        conn.execute("PRAGMA synchronous=NORMAL")  # the app's; WAL is the file's own
        return lambda: conn.execute(INCREMENT_SQL).fetchone()
    path = Path(store.where) / f"floor-{os.getpid()}-{thread}"
    payload = os.urandom(SESSION_BYTES)

    def rewrite() -> None:  # BoundedFileStore.set in fixed_session/store.py, less the pickle
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.fstat(fd)
            os.pwrite(fd, payload, 0)
        finally:
            os.close(fd)

    return rewrite


def cpu_seconds_of_this_process() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_process(store: Store, threads: int, seconds: float) -> Floor:
    """`threads` threads, each with its own connection, for `seconds`."""
    operations = [one_operation(store, n) for n in range(threads)]
    counts = [0] * threads
    errors: list[BaseException] = []
    start = threading.Barrier(threads + 1)
    deadline = 0.0

    def loop(n: int) -> None:
        operation = operations[n]
        start.wait()
        try:
            while time.perf_counter() < deadline:
                operation()
                counts[n] += 1
        except Exception as error:  # raised again in the parent: a floor that failed is no floor
            errors.append(error)

    workers = [threading.Thread(target=loop, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    cpu_before, began = cpu_seconds_of_this_process(), time.perf_counter()
    deadline = began + seconds
    start.wait()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - began
    if errors:
        raise errors[0]
    return Floor(sum(counts), elapsed, cpu_seconds_of_this_process() - cpu_before)


def _run_process_args(args: tuple) -> Floor:
    return run_process(*args)


@contextmanager
def client_pool(processes: int) -> Iterator[Pool]:
    """Client processes, forked: spawn would leave its resource tracker running
    until this process ends. A forked child inherits the launcher's SIGTERM
    handler (serve/processes.py launcher(), which raises KeyboardInterrupt),
    and one that stopped that way holding the pool's queue lock would leave
    the others waiting on it for ever: they take SIGTERM's default back, and
    end by the pool's own sentinel when all went well."""
    pool = multiprocessing.get_context("fork").Pool(
        processes, initializer=signal.signal, initargs=(signal.SIGTERM, signal.SIG_DFL)
    )
    try:
        yield pool
    except BaseException:
        pool.terminate()
        raise
    else:
        pool.close()
    finally:
        pool.join()


def measure_floor(store: Store, processes: int, threads: int, seconds: float) -> Floor:
    """The operation from `processes` x `threads` clients at once."""
    if store.kind == "session-files":
        Path(store.where).mkdir(parents=True, exist_ok=True)
    with client_pool(processes) as pool:
        parts = pool.map(_run_process_args, [(store, threads, seconds)] * processes)
    # The processes ran side by side: their counts add up over one span.
    return Floor(
        sum(p.completed for p in parts),
        max(p.seconds for p in parts),
        sum(p.client_cpu_seconds for p in parts),
    )


def floor_store(server: AppServer) -> Store | None:
    """Where the app's main write goes, for its floor; None: no store (broken_global)."""
    if server.backend == "sqlite":
        return Store("sqlite", str(server.sqlite_file()))
    if server.backing is not None:
        return Store(APPS[server.app].embedded_server(server.environment()), server.backing.url)
    if server.app == "fixed_session" and not server.setting("SESSION_REDIS_URL"):
        return Store("session-files", str(server.var_dir / "sessions"))
    return None


def floor_slice(store: Store, server: AppServer, groups: Groups, seconds: float) -> Floor:
    """The floor for one turn, with its store server's CPU time added to the client's."""
    threads = int(server.setting("GUNICORN_THREADS", "1"))
    before = cpu_used(groups)
    floor = measure_floor(store, server.workers(), threads, seconds)
    if (spent := cpu_spent(before, cpu_used(groups))) and "store" in spent:
        floor.client_cpu_seconds += spent["store"]  # PostgreSQL's or Valkey's own
    return floor
