"""Flask does not give each request a thread of its own: the server decides.

One of the seed texts says Flask handles each request in a separate thread.
Flask runs a view wherever the WSGI server calls it, and servers differ:

- gunicorn's sync workers serve one request at a time, each in the worker
  process's one thread: every request of a worker runs on the same thread,
  and the others wait their turn.
- gunicorn's gthread workers keep a pool of threads and hand each connection
  to one of them: requests run at the same time, and a few threads serve
  them all, one after another.
- Flask's development server (`flask run`, threaded by default) starts a
  new thread for every connection it accepts; the proof opens one per
  request, so here every request does get a thread of its own.

So whether two requests can touch a global at the same moment, and whether a
thread-local outlives a request, depends on how the app is served, not on
Flask. The proof serves broken_global under three of the shapes the
correctness matrix uses (serve.processes.SHAPES), sends 16 requests from 8
clients at once (each request does 30 ms of work, on a new connection), and
reads the thread id from each answer's X-Worker header. A run:

    sync-1:       16 requests on 1 thread, one at a time (0.55 s)
    gthread-1x8:  16 requests on 8 threads of one pool (0.12 s)
    flask-dev:    16 requests on 16 threads (0.12 s)
"""

import tempfile
import threading
import time
from dataclasses import dataclass

import requests

from serve.processes import AppServer, free_port

LABEL = "proven"
CLIENTS, EACH = 8, 2
WORK_MS = 30
APP = "broken_global"
SHAPES = ("sync-1", "gthread-1x8", "flask-dev")


@dataclass
class Served:
    shape: str
    workers: list[str]  # the X-Worker of each answer: "<pid>-<thread id>"
    seconds: float  # from the first request sent to the last answer

    @property
    def threads(self) -> int:
        return len(set(self.workers))

    @property
    def processes(self) -> int:
        return len({worker.partition("-")[0] for worker in self.workers})

    @property
    def one_at_a_time(self) -> bool:
        """As long as the requests' work end to end: nothing overlapped."""
        return self.seconds >= len(self.workers) * WORK_MS / 1000 * 0.95

    def line(self) -> str:
        if self.threads == 1:
            where = "1 thread, one at a time" if self.one_at_a_time else "1 thread"
        elif self.threads == len(self.workers):
            where = f"{self.threads} threads"
        else:
            where = f"{self.threads} threads of one pool"
        return f"{self.shape}: {len(self.workers)} requests on {where} ({self.seconds:.2f} s)"


def requests_at_once(url: str) -> tuple[list[str], float]:
    """CLIENTS clients start together, each sending EACH requests, each on a
    new connection; return the X-Worker of every answer and the time taken."""
    start, lock = threading.Barrier(CLIENTS + 1), threading.Lock()
    workers: list[str] = []

    def client(n: int) -> None:
        start.wait(timeout=10)
        for _ in range(EACH):
            response = requests.get(f"{url}/greet", params={"name": f"client{n}"}, timeout=10)
            response.raise_for_status()
            with lock:
                workers.append(response.headers["X-Worker"])

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    start.wait(timeout=10)
    began = time.monotonic()
    for thread in threads:
        thread.join(timeout=30)
    return workers, time.monotonic() - began


def serve_and_ask(shape: str, var: str) -> Served:
    env = {"VAR_DIR": var, "WORK_MS": str(WORK_MS)}
    with AppServer(APP, free_port(), shape=shape, env=env) as server:
        workers, seconds = requests_at_once(server.url)
    return Served(shape, workers, seconds)


@dataclass
class Finding:
    served: dict[str, Served]

    @property
    def holds(self) -> bool:
        total = CLIENTS * EACH
        sync, pool, dev = (self.served[shape] for shape in SHAPES)
        return (
            all(len(s.workers) == total and s.processes == 1 for s in self.served.values())
            and sync.threads == 1
            and sync.one_at_a_time
            and 1 < pool.threads < total
            and dev.threads == total
        )

    def summary(self) -> str:
        return "; ".join(self.served[shape].line() for shape in SHAPES)


def prove() -> Finding:
    with tempfile.TemporaryDirectory(prefix="thread-per-request-") as var:
        return Finding({shape: serve_and_ask(shape, var) for shape in SHAPES})
