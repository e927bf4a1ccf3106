"""The module-level dict counter, a classic snippet, made runnable.

A counter kept in a module-level dict, three routes to create, increment and
read it, and a client that calls them one after another. Its author expected
trouble with several users; this shows exactly what happens.

- One user, one process (the threaded dev server): the client prints
  0 1 2 2 3 0 0, as promised.
- The same client, alone, against gunicorn with 2 workers: each worker
  process has its own dict, so the client's requests meet different counts,
  and a worker that never saw /create fails with a KeyError (HTTP 500). A
  busy server spreads one user's requests over its workers on its own; the
  proof makes it certain by pausing the worker that answered last.
- Four users running the client at once on the threaded dev server: one dict
  for everybody, so each sees the others' increments and resets.

A run on a 2-core machine:

    one user:  0 1 2 2 3 0 0
    gunicorn:  0 HTTP500 1 HTTP500 2 0 2   (workers 29861, 29862, 29861, ... in turn)
    4 users:   0 4 6 8 12 0 0 | 0 3 8 8 9 0 0 | 0 1 5 8 11 0 0 | 0 2 7 8 10 0 0

Serve it yourself with `flask --app examples.seed_dict_counter run`, then run
the client with `python -m examples.seed_dict_counter http://127.0.0.1:5000`.
"""

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

import requests
from flask import Flask, jsonify

from examples.servers import Gunicorn, dev_server, stamp_worker, worker_of

LABEL = "proven"
SCRIPT = ("create", "increment", "increment", "read", "increment", "create", "read")
ONE_USER_PRINTS = "0 1 2 2 3 0 0"

app = stamp_worker(Flask(__name__))
counts: dict[str, int] = {}  # one per process, shared by every thread and user in it


# GET routes that change state, as in the snippet: the point here is where the state lives.
@app.get("/create")
def create():
    counts["clicks"] = 0
    return jsonify(counts["clicks"])


@app.get("/increment")
def increment():
    counts["clicks"] += 1
    return jsonify(counts["clicks"])


@app.get("/read")
def read():
    return jsonify(counts["clicks"])


Send = Callable[[str], requests.Response]


@dataclass
class Run:
    printed: list[str]  # what the client prints, one item per request
    workers: list[int]  # the PID that answered each request

    @property
    def line(self) -> str:
        return " ".join(self.printed)


def run_client(send: Send) -> Run:
    """The client: every route of SCRIPT in turn, printing what comes back."""
    run = Run([], [])
    for route in SCRIPT:
        response = send(route)
        run.printed.append(str(response.json()) if response.ok else f"HTTP{response.status_code}")
        run.workers.append(worker_of(response))
    return run


def plain(url: str) -> Send:
    return lambda route: requests.get(f"{url}/{route}", timeout=5)


def each_on_another_worker(server: Gunicorn) -> Send:
    """On a busy server, the worker that answered you is often busy with someone
    else when your next request arrives. Pausing it makes that certain."""
    previous: int | None = None

    def send(route: str) -> requests.Response:
        nonlocal previous
        with server.paused(previous):
            response = requests.get(f"{server.url}/{route}", timeout=5)
        previous = worker_of(response)
        return response

    return send


def in_step(url: str, step: threading.Barrier) -> Send:
    """Every user sends request n at the same moment as the others."""

    def send(route: str) -> requests.Response:
        step.wait(timeout=10)
        return requests.get(f"{url}/{route}", timeout=5)

    return send


def users_at_once(url: str, users: int) -> list[Run]:
    step = threading.Barrier(users)
    runs: list[Run | None] = [None] * users

    def user(n: int) -> None:
        runs[n] = run_client(in_step(url, step))

    threads = [threading.Thread(target=user, args=(n,)) for n in range(users)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    if None in runs:
        raise RuntimeError("a user's client did not finish")
    return runs


@dataclass
class Finding:
    one_user: Run
    gunicorn: Run
    together: list[Run]

    @property
    def holds(self) -> bool:
        return (
            self.one_user.line == ONE_USER_PRINTS
            and len(set(self.gunicorn.workers)) > 1
            and self.gunicorn.line != ONE_USER_PRINTS
            and all(run.line != ONE_USER_PRINTS for run in self.together)
        )

    def summary(self) -> str:
        wrong = sum(run.line != ONE_USER_PRINTS for run in self.together)
        return (
            f"one user prints {self.one_user.line}; alone against 2 gunicorn workers: "
            f"{self.gunicorn.line}; {len(self.together)} users at once: "
            f"{', '.join(run.line for run in self.together[:2])}, ... "
            f"({wrong} of {len(self.together)} wrong)"
        )


def prove(users: int = 4) -> Finding:
    with dev_server(app) as url:
        one_user = run_client(plain(url))
        together = users_at_once(url, users)
    with Gunicorn("examples.seed_dict_counter:app", workers=2) as server:
        alone = run_client(each_on_another_worker(server))
    return Finding(one_user, alone, together)


if __name__ == "__main__":
    print(run_client(plain(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:5000")).line)
