"""Benchmark references, not apps: the smallest Flask app that does each
store's write, for the bench to measure beside the project's own.

The bench (loadtests/runs/bench.py) serves each under the same gunicorn
config and shape as the app it stands beside, on the same store server or
file, and drives it in the same interleaved turns. Whatever the project's
write loses that the bare one loses too belongs to the stack (gunicorn
gthread, Flask, Werkzeug, and a blocking call to a store), not to this
project's code. Each module's create_app() is one route doing the floor's
operation (loadtests/runs/floor.py) and a /healthz that names its worker, as
the bench's client needs to place its connections. None of them keeps a
guarantee the project's apps keep (no timeouts, no breaker, no idempotency,
no answer for a failed write): they are the cost of a request, nothing more.
"""

import os
import threading
from collections.abc import Callable
from typing import TypeVar

from flask import Flask

Connection = TypeVar("Connection")
INCREMENT_SQL = "UPDATE counter SET value = value + 1 WHERE id = 1 RETURNING value"


def bare_app(name: str) -> Flask:
    """A Flask app with only GET /healthz, stamped with its process and thread."""
    app = Flask(name)

    @app.get("/healthz")
    def healthz() -> tuple[dict, int, dict]:
        worker = f"{os.getpid()}-{threading.get_native_id()}"
        return {"status": "ok", "strategy": name}, 200, {"X-Worker": worker}

    return app


def per_thread(connect: Callable[[], Connection]) -> Callable[[], Connection]:
    """This server thread's connection, made on its first request and kept, as
    the floor's client keeps its own (loadtests/runs/floor.py)."""
    mine = threading.local()

    def connection() -> Connection:
        if not hasattr(mine, "conn"):
            mine.conn = connect()
        return mine.conn

    return connection


def counter_app(name: str, connection: Callable) -> Flask:
    """bare_app with POST /counter/increment: INCREMENT_SQL on this thread's connection."""
    app = bare_app(name)

    @app.post("/counter/increment")
    def increment() -> dict:
        [(value,)] = connection().execute(INCREMENT_SQL).fetchall()
        return {"value": value}

    return app
