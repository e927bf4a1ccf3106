"""bare_flask_session: Flask-Session over bare_session's file write.

The reference that splits fixed_session's cost in two (see __init__.py):
Flask-Session set up as its documentation shows (SESSION_TYPE "cachelib"),
each session a file rewritten in place under flock as bare_session writes
one, and a route appending to a list in the session as fixed_session's does.
Against bare_session it costs what any server-side session costs: the
session found from its cookie, read and unpickled before the view, pickled
and written after it. Against it, fixed_session's extra is this project's
(the bound on files, the space reserved, the failures' answers, the
Idempotency-Keys). cachelib's own file store writes a new file and renames
it over the old one, which would add a cost of its own.
"""

import fcntl
import os
import pickle
import struct
from pathlib import Path
from typing import Any

from cachelib.file import FileSystemCache
from flask import Flask, request, session
from flask_session import Session

from loadtests.runs.bare import bare_app

EXPIRY = struct.Struct("I")  # cachelib's header: when the entry expires


class InPlaceFiles(FileSystemCache):
    """cachelib's file store, each entry read and rewritten in place under flock."""

    def get(self, key: str) -> Any:
        try:
            fd = os.open(self._get_filename(key), os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            data = os.pread(fd, os.fstat(fd).st_size, 0)
        finally:
            os.close(fd)
        return pickle.loads(data[EXPIRY.size :]) if data else None

    def set(self, key: str, value: Any, timeout: int | None = None, **_: Any) -> bool:
        data = EXPIRY.pack(self._normalize_timeout(timeout)) + pickle.dumps(value, protocol=5)
        fd = os.open(self._get_filename(key), os.O_RDWR | os.O_CREAT, self._mode)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if len(data) < os.fstat(fd).st_size:
                os.ftruncate(fd, len(data))
            os.pwrite(fd, data, 0)
        finally:
            os.close(fd)
        return True


def create_app() -> Flask:
    app = bare_app("bare_flask_session")
    folder = Path(os.environ["BARE_SESSION_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    app.config.update(
        SESSION_TYPE="cachelib",
        SESSION_CACHELIB=InPlaceFiles(str(folder), threshold=0),  # 0: no count file
        SESSION_REFRESH_EACH_REQUEST=False,  # as fixed_session: saved when changed
    )
    Session(app)

    @app.post("/visits")
    def add_visit() -> tuple[dict, int]:
        session["visits"] = [*session.get("visits", []), request.get_json()["article"]]
        return {"visits": session["visits"]}, 201

    return app
