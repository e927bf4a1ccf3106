"""The Redis-protocol server behind fixed_cache: a connection pool per worker
process, and a connection of its own for each of the worker's threads.

init_app(app) takes the server's address from REDIS_URL (any Redis or
Valkey; `python -m serve` and the tests start an embedded one and set it, see
serve/valkey.py) and answers 503 when the server fails. Routes call
store.redis() for their thread's client. The pool is made on first use in
each worker process, after gunicorn forks, never at import.

gthread's threads live as long as their worker, so each keeps the connection
it first borrowed: a command then skips the pool's lock and its check that
the connection is idle. Under load on 2 cores, that check-out per command
cost the workers 40 to 80 us of CPU per increment, as much as the rest of
the command (the "app CPU" column of `python -m loadtests.bench fixed_cache`,
run with either version). A thread that ends (`flask run` starts one per
connection) gives its connection back to the pool.

A dead server must cost a request at most about a second, then a 503:
socket timeouts of 0.45 s and a single immediate retry, which also makes
recovery seamless: after a server restart, each pooled connection fails once
and the retry reconnects.
"""

import os
import threading

from flask import Flask, current_app
from redis import ConnectionPool, Redis, RedisError
from redis.backoff import NoBackoff
from redis.retry import Retry

from plumbing import setting, unavailable_when

TIMEOUT_SECONDS = 0.45


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.pool: ConnectionPool | None = None
        self.pid: int | None = None
        self.threads = threading.local()

    def connection(self) -> Redis:
        if self.pid != os.getpid():  # first use in this process
            self.pool = ConnectionPool.from_url(
                self.url,
                socket_timeout=TIMEOUT_SECONDS,
                socket_connect_timeout=TIMEOUT_SECONDS,
                retry=Retry(NoBackoff(), retries=1),
                decode_responses=True,
            )
            self.threads = threading.local()
            self.pid = os.getpid()
        if (client := getattr(self.threads, "client", None)) is None:
            client = Redis(connection_pool=self.pool, single_connection_client=True)
            self.threads.client = client
        return client


def redis() -> Redis:
    """This thread's client of the server."""
    return current_app.extensions["fixed_cache"].connection()


def init_app(app: Flask) -> None:
    url = setting(app, "REDIS_URL")
    if not url:
        raise RuntimeError(
            "REDIS_URL is not set. `make run-fixed` or `python -m serve fixed_cache` "
            "start an embedded server and set it; or point it at yours: "
            "REDIS_URL=redis://127.0.0.1:6379/0"
        )
    app.extensions["fixed_cache"] = Store(url)
    unavailable_when(app, (RedisError,), "the Redis server is unavailable; retry")
