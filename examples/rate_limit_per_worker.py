"""A rate limit counted per worker: "3 per hour" lets through 3 per worker, per restart.

Flask-Limiter counts hits in its storage, and its default storage,
`memory://`, is a dict in the process (it warns about that at start-up). Under
gunicorn each worker counts on its own: one client alternating between 2
sync workers is let through 3 times by each, and `X-RateLimit-Remaining`
goes up and down as requests land on one worker or the other. A restart (a
deploy) empties every count, so the client gets 3 more at once. More workers
or hosts multiply the limit; nothing ever shows an error.

    python -m gunicorn --workers 2 examples.rate_limit_per_worker:app

The proof sends 12 requests from one client, alternating workers by pausing
the other one (SIGSTOP), then 12 more to one worker after a restart on the
same port. A run:

    memory://:             6 accepted, remaining 2, 2, 1, 1, 0, 0;
                           after a restart 3 more accepted
    storage_uri on Valkey: 3 accepted, remaining 2, 1, 0; after a restart 0

The fix: `storage_uri` on a store every worker and host reaches (here Valkey,
`redis+unix://` for its socket); the count then also outlives a deploy.
"""

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import requests
from flask import Flask
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from examples.servers import Gunicorn, at_once, stamp_worker, worker_of
from serve.valkey import EmbeddedValkey

LABEL = "proven"
LIMIT = "3 per hour"
ALLOWED = 3
REQUESTS = 12  # from one client, alternating between the two workers


def create_app(storage_uri: str | None = None) -> Flask:
    """One limited route; the counts kept at storage_uri, else where
    RATELIMIT_STORAGE_URI says (unset: Flask-Limiter's default, memory://,
    in this process)."""
    app = stamp_worker(Flask(__name__))
    limiter = Limiter(
        get_remote_address,
        app=app,
        storage_uri=storage_uri or os.environ.get("RATELIMIT_STORAGE_URI", "memory://"),
        headers_enabled=True,
    )

    @app.get("/")
    def index():  # not limited: the start-up check asks here
        return {"ok": True}

    @app.get("/api/search")
    @limiter.limit(LIMIT)
    def search():
        return {"results": []}

    return app


def create_shared_app() -> Flask:
    """The fix, for python -m loadtests.check: the counts in Valkey at
    REDIS_URL (loadtests/check/specs/rate_limit.toml: the check's store)."""
    return create_app(limits_uri(os.environ["REDIS_URL"]))


def limits_uri(valkey_url: str) -> str:
    """The `limits` library's name for a Redis-protocol server on a unix socket."""
    return f"redis+{valkey_url}" if valkey_url.startswith("unix://") else valkey_url


@dataclass(frozen=True)
class Answer:
    status: int
    remaining: int
    worker: int


@dataclass
class Run:
    storage: str
    answers: list[Answer]  # the requests, in order, alternating workers
    after_restart: list[Answer]
    workers: tuple[int, int]

    @property
    def accepted(self) -> list[Answer]:
        return [answer for answer in self.answers if answer.status == 200]

    @property
    def accepted_after_restart(self) -> int:
        return sum(answer.status == 200 for answer in self.after_restart)

    @property
    def alternated(self) -> bool:
        return [a.worker for a in self.answers] == [*self.workers] * (len(self.answers) // 2)

    def summary(self) -> str:
        remaining = ", ".join(str(answer.remaining) for answer in self.accepted)
        return (
            f"{self.storage}: {len(self.accepted)} of {len(self.answers)} accepted, "
            f"remaining {remaining}; after a restart, {self.accepted_after_restart} more accepted "
            f"by one worker"
        )


def hit(url: str) -> Answer:
    response = requests.get(url + "/api/search", timeout=5)
    remaining = int(response.headers["X-RateLimit-Remaining"])
    return Answer(response.status_code, remaining, worker_of(response))


def alternate_then_restart(storage: str, env: dict[str, str]) -> Run:
    target = "examples.rate_limit_per_worker:create_app()"
    answers: list[Answer] = []
    with Gunicorn(target, workers=2, env=env) as server:
        workers = (server.worker_pids[0], server.worker_pids[1])
        for n in range(REQUESTS):
            with server.only(workers[n % 2]):
                answers.append(hit(server.url))
        port = server.port
    restarted = Gunicorn(target, workers=2, env=env, port=port)
    with restarted, restarted.only(restarted.worker_pids[0]):  # one worker's fresh count
        after_restart = [hit(restarted.url) for _ in range(REQUESTS)]
    return Run(storage, answers, after_restart, workers)


@dataclass
class Finding:
    in_memory: Run
    in_valkey: Run

    @property
    def holds(self) -> bool:
        broken, fixed = self.in_memory, self.in_valkey
        return (
            broken.alternated
            and [a.remaining for a in broken.accepted] == [2, 2, 1, 1, 0, 0]
            and broken.accepted_after_restart == ALLOWED
            and fixed.alternated
            and [a.remaining for a in fixed.accepted] == [2, 1, 0]
            and fixed.accepted_after_restart == 0
        )

    def summary(self) -> str:
        return f'"{LIMIT}", 2 workers: {self.in_memory.summary()}; {self.in_valkey.summary()}'


def prove() -> Finding:
    def in_valkey() -> Run:
        with tempfile.TemporaryDirectory() as directory, contextlib.ExitStack() as stack:
            valkey = stack.enter_context(EmbeddedValkey(Path(directory) / "valkey"))
            env = {"RATELIMIT_STORAGE_URI": limits_uri(valkey.url)}
            return alternate_then_restart("storage_uri on Valkey", env)

    in_memory, shared = at_once(lambda: alternate_then_restart("memory://", {}), in_valkey)
    return Finding(in_memory, shared)
