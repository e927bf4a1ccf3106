"""bare_valkey: one redis-py client per worker, and a route doing INCR.

The reference for fixed_cache (see __init__.py): the client redis-py's
documentation shows, made in create_app(), which gunicorn calls in each
worker after it forks; its pool lends each thread a connection.
"""

import os

import redis
from flask import Flask

from loadtests.runs.bare import bare_app


def create_app() -> Flask:
    app = bare_app("bare_valkey")
    client = redis.Redis.from_url(os.environ["REDIS_URL"])

    @app.post("/counter/increment")
    def increment() -> dict:
        return {"value": client.incr("counter")}

    return app
