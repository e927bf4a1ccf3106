"""The Redis-protocol server behind fixed_cache, one connection pool per worker.

REDIS_URL names the server (any Redis or Valkey); `python -m serve` and the
tests start an embedded one and set it (serve/valkey.py). The pool is made on
first use in each worker process, after gunicorn forks, never at import.

A dead server must cost a request at most about a second, then a 503:
socket timeouts of 0.45 s and a single immediate retry, which also makes
recovery seamless: after a server restart, each pooled connection fails once
and the retry reconnects.
"""

import os

import redis
from flask import Flask, current_app
from redis.backoff import NoBackoff
from redis.retry import Retry

TIMEOUT_SECONDS = 0.45


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.client: redis.Redis | None = None
        self.pid: int | None = None

    def connection(self) -> redis.Redis:
        if self.pid != os.getpid():  # first use in this process
            self.client = redis.Redis.from_url(
                self.url,
                socket_timeout=TIMEOUT_SECONDS,
                socket_connect_timeout=TIMEOUT_SECONDS,
                retry=Retry(NoBackoff(), retries=1),
                decode_responses=True,
            )
            self.pid = os.getpid()
        return self.client


def get_redis() -> redis.Redis:
    return current_app.extensions["fixed_cache"].connection()


def init_app(app: Flask) -> None:
    url = app.config.get("REDIS_URL") or os.environ.get("REDIS_URL")
    if not url:
        raise RuntimeError(
            "REDIS_URL is not set. `make run-fixed` or `python -m serve fixed_cache` "
            "start an embedded server and set it; or point it at yours: "
            "REDIS_URL=redis://127.0.0.1:6379/0"
        )
    app.extensions["fixed_cache"] = Store(url)
