"""A connection opened before the fork: one user's data in another user's response.

connection_before_fork_app.py opens a Redis client with a single connection
at import, as many apps open their database or cache client. Under gunicorn
--preload the master imports the app and connects; fork() then gives every
worker a copy of the same socket. Each worker sends its commands down it and
reads whatever reply comes first, so a worker can read the reply meant for
another, and answer one user's request with another user's data. Without
--preload every worker imports the app and connects on its own.

The same goes for anything else made before the fork that must belong to one
process. Here, a random.Random() seeded at import: every worker forked from
it draws the same "random" numbers, so two users get the same invite code.

    python -m gunicorn --workers 2 --preload examples.connection_before_fork_app:app

The proof, on 2 sync workers A and B:

- both say which server-side connection they use (CLIENT ID);
- A waits on its connection for ann's next job (BLPOP, a long poll); the
  proof pauses A (SIGSTOP), then sends B a plain GET for the key "b" and
  waits until Valkey holds B's GET behind A's wait. Then it pushes ann's
  job. Valkey answers A's wait, then B's GET, down the one socket, and B,
  the only one reading, takes A's reply: the answer to "b" is ann's job;
- 8 clients fetch 50 keys each, every key holding its own name as value,
  and count the answers that carry another key's value;
- A and B each make an invite code.

A run:

    --preload:        one connection (5); B's GET 'b' answered ['jobs:ann', "ann's job"];
                      217 of 400 answers carried another key's value; the same invite code
    no --preload:     connections [7, 8]; B's GET 'b' answered 'b'; 0 of 400; different codes
    made after fork:  connections [9, 10]; B's GET 'b' answered 'b'; 0 of 400; different codes

The fix: make such things per worker, after the fork: on first use with a
check of the process id (create_app() below, as fixed_cache/store.py does),
or in gunicorn's post_fork hook; for random numbers, the secrets module.
"""

import os
import secrets
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis
import requests
from flask import Flask

from examples.servers import Gunicorn, stamp_worker, worker_of
from serve.valkey import EmbeddedValkey

LABEL = "proven"
BROKEN = "examples.connection_before_fork_app:app"
FIXED = "examples.connection_before_fork:create_app()"
CLIENTS, EACH = 8, 50
USER, JOB = "ann", "ann's job"
WAIT_SECONDS = 5.0


class PerProcess:
    """A client made on first use in each process, after any fork."""

    def __init__(self, make: Callable[[], redis.Redis]) -> None:
        self.make = make
        self.pid: int | None = None
        self.client: redis.Redis | None = None

    def __call__(self) -> redis.Redis:
        if self.pid != os.getpid():  # first use in this process
            self.client, self.pid = self.make(), os.getpid()
        return self.client


def create_app() -> Flask:
    """The fix: the same routes; the connection made per worker, codes from secrets."""
    app = stamp_worker(Flask(__name__))
    client = PerProcess(
        lambda: redis.Redis.from_url(
            os.environ["REDIS_URL"],
            single_connection_client=True,
            decode_responses=True,
            socket_timeout=0.5,
        )
    )

    @app.get("/items/<key>")
    def item(key: str):
        return {"key": key, "value": client().get(key)}

    @app.get("/jobs/<user>/next")
    def next_job(user: str):
        return {"user": user, "job": client().blpop([f"jobs:{user}"], timeout=1)}

    @app.get("/connection")
    def connection():
        return {"id": client().client_id()}

    @app.post("/invites")
    def invite():
        return {"code": secrets.token_hex(8)}

    return app


@dataclass
class Crossing:
    """A's long poll and B's GET, B answering while A is paused."""

    b_asked: str
    b_got: object  # what B answered to its GET
    a_got: object  # what A answered to its long poll (None: an error)

    @property
    def crossed(self) -> bool:
        return self.b_got != self.b_asked

    @property
    def right(self) -> bool:
        return self.b_got == self.b_asked and self.a_got == [f"jobs:{USER}", JOB]


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting until {what}")
        time.sleep(0.005)


def cross(server: Gunicorn, valkey: redis.Redis, connections: dict[int, int]) -> Crossing:
    a = server.worker_pids[0]
    answers: dict[str, object] = {}

    def ask(who: str, path: str, field: str) -> None:
        response = requests.get(server.url + path, timeout=10)
        answers[who] = response.json()[field] if response.ok else None

    def a_connection() -> dict:
        [info] = [c for c in valkey.client_list() if int(c["id"]) == connections[a]]
        return info

    valkey.delete(f"jobs:{USER}")
    long_poll = threading.Thread(target=ask, args=("a", f"/jobs/{USER}/next", "job"))
    with server.only(a):
        long_poll.start()
        wait_for(lambda: "b" in a_connection()["flags"], "A waits in BLPOP")
    with server.paused(a):
        get = threading.Thread(target=ask, args=("b", "/items/b", "value"))
        get.start()
        # Shared: B's GET queues behind A's wait. Not shared: B is answered at once.
        wait_for(
            lambda: not get.is_alive() or int(a_connection()["qbuf"]) > 0,
            "B's GET is queued or answered",
        )
        valkey.rpush(f"jobs:{USER}", JOB)
        get.join(timeout=10)
    long_poll.join(timeout=10)
    return Crossing("b", answers.get("b"), answers.get("a"))


@dataclass
class Load:
    answers: int
    wrong: list[tuple[str, str]]  # (asked, got) for each answer with another key's value
    errors: int


def fetch_distinct_keys(url: str) -> Load:
    start, lock = threading.Barrier(CLIENTS), threading.Lock()
    load = Load(0, [], 0)

    def client(number: int) -> None:
        start.wait(timeout=10)
        for i in range(EACH):
            key = f"key-{number}-{i}"
            try:
                response = requests.get(f"{url}/items/{key}", timeout=10)
                value = response.json()["value"] if response.ok else None
            except requests.RequestException:
                response = value = None
            with lock:
                load.answers += 1
                if response is None or not response.ok:
                    load.errors += 1
                elif value != key:
                    load.wrong.append((key, value))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return load


@dataclass
class Run:
    connections: dict[int, int]  # worker -> its server-side connection id
    crossing: Crossing
    load: Load | None
    invites: dict[int, str]  # worker -> the first invite code it made

    @property
    def shared(self) -> bool:
        return len(set(self.connections.values())) == 1

    @property
    def same_invite(self) -> bool:
        return len(set(self.invites.values())) == 1

    @property
    def separate_and_right(self) -> bool:
        return (
            len(set(self.connections.values())) == 2
            and self.crossing.right
            and (self.load is None or (not self.load.wrong and not self.load.errors))
            and len(set(self.invites.values())) == 2
        )

    def describe(self) -> str:
        ids = sorted(set(self.connections.values()))
        connections = f"one connection ({ids[0]})" if self.shared else f"connections {ids}"
        load = (
            f"; {len(self.load.wrong)} of {self.load.answers} answers carried another key's "
            f"value ({self.load.errors} failed)"
            if self.load
            else ""
        )
        invites = "the same invite code" if self.same_invite else "different invite codes"
        return f"{connections}; B's GET 'b' answered {self.crossing.b_got!r}{load}; {invites}"


def observe(server: Gunicorn, valkey: redis.Redis, *, load: bool = True) -> Run:
    """Ask each worker its connection, cross A's and B's commands, then load and invites."""
    connections, invites = {}, {}
    for pid in server.worker_pids:
        with server.only(pid):
            response = requests.get(server.url + "/connection", timeout=5)
            connections[worker_of(response)] = response.json()["id"]
    crossing = cross(server, valkey, connections)  # first: a failed read may reconnect a worker
    hammered = fetch_distinct_keys(server.url) if load else None
    for pid in server.worker_pids:
        with server.only(pid):
            response = requests.post(server.url + "/invites", timeout=5)
            invites[worker_of(response)] = response.json()["code"]
    return Run(connections, crossing, hammered, invites)


def store_keys(valkey: redis.Redis) -> None:
    valkey.set("b", "b")
    valkey.mset({f"key-{n}-{i}": f"key-{n}-{i}" for n in range(CLIENTS) for i in range(EACH)})


@dataclass
class Finding:
    preloaded: Run
    not_preloaded: Run
    made_after_fork: Run

    @property
    def holds(self) -> bool:
        broken = self.preloaded
        return (
            broken.shared
            and broken.crossing.crossed
            and broken.crossing.b_got == [f"jobs:{USER}", JOB]  # ann's job, in B's answer
            and broken.same_invite
            and self.not_preloaded.separate_and_right
            and self.made_after_fork.separate_and_right
        )

    def summary(self) -> str:
        return (
            f"2 workers, --preload: {self.preloaded.describe()}; without --preload: "
            f"{self.not_preloaded.describe()}; made after the fork: "
            f"{self.made_after_fork.describe()}"
        )


def observe_each(servers: Callable[[dict[str, str]], dict[str, Gunicorn]]) -> dict[str, Run]:
    """One Valkey with the keys stored; each server `servers(env)` names, run
    in turn against it and observed (uwsgi_loads_before_fork uses this too)."""
    runs = {}
    with tempfile.TemporaryDirectory() as directory, EmbeddedValkey(Path(directory)) as server:
        valkey = redis.Redis.from_url(server.url, decode_responses=True, socket_timeout=5)
        store_keys(valkey)
        for name, app_server in servers({"REDIS_URL": server.url}).items():
            with app_server:
                runs[name] = observe(app_server, valkey)
        valkey.close()
    return runs


def prove() -> Finding:
    return Finding(
        **observe_each(
            lambda env: {
                "preloaded": Gunicorn(BROKEN, options=["--preload"], env=env),
                "not_preloaded": Gunicorn(BROKEN, env=env),
                "made_after_fork": Gunicorn(FIXED, options=["--preload"], env=env),
            }
        )
    )
