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

from flask import Flask


def bare_app(name: str) -> Flask:
    """A Flask app with only GET /healthz, stamped with its process and thread."""
    app = Flask(name)

    @app.get("/healthz")
    def healthz() -> tuple[dict, int, dict]:
        worker = f"{os.getpid()}-{threading.get_native_id()}"
        return {"status": "ok", "strategy": name}, 200, {"X-Worker": worker}

    return app
