"""bare_session: a file rewritten in place under flock, per request.

The reference for fixed_session (see __init__.py): what its file store does
to save a session (fixed_session/store.py BoundedFileStore.set), less the
session itself: no cookie, no pickle, a file per thread, as the floor's
client writes (loadtests/runs/floor.py).
"""

import fcntl
import os
import threading
from pathlib import Path

from flask import Flask, request

from loadtests.runs.bare import bare_app

PAYLOAD_BYTES = 1024  # the floor's size of a session


def create_app() -> Flask:
    app = bare_app("bare_session")
    folder = Path(os.environ["BARE_SESSION_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    payload = os.urandom(PAYLOAD_BYTES)

    @app.post("/visits")
    def add_visit() -> tuple[dict, int]:
        article = request.get_json()["article"]
        path = folder / f"bare-{os.getpid()}-{threading.get_native_id()}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.fstat(fd)
            os.pwrite(fd, payload, 0)
        finally:
            os.close(fd)
        return {"visits": [article]}, 201

    return app
