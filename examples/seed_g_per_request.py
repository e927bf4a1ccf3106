"""flask.g lasts one request: the next request starts with an empty g.

`g` is the place for data one request needs in several places (the current
user, a database connection), and it is emptied between requests, so it
cannot carry anything from one request to the next, nor from one user to
another.

"Between requests" holds even when both run in the same thread. This
proof serves the app with the dev server without threads, so every request
runs in the one server thread: a threading.local set by the first request is
still there in the second (which is why request data does not belong in a
thread-local either), while g is empty again. A run:

    POST /note?text=hello  -> g.note = 'hello', thread 140582884435648
    GET  /note             -> g.note = None, thread_local.note = 'hello', thread 140582884435648
"""

import threading
from dataclasses import dataclass

import requests
from flask import Flask, g, request

from examples.servers import dev_server

LABEL = "proven"
TEXT = "hello"


def create_app() -> Flask:
    app = Flask(__name__)
    thread_local = threading.local()

    @app.post("/note")
    def write_note():
        g.note = thread_local.note = request.args["text"]
        return {"g": g.note, "thread": threading.get_ident()}

    @app.get("/note")
    def read_note():
        return {
            "g": g.get("note"),
            "thread_local": getattr(thread_local, "note", None),
            "thread": threading.get_ident(),
        }

    return app


@dataclass
class Finding:
    written: dict
    read_back: dict

    @property
    def holds(self) -> bool:
        return (
            self.written["thread"] == self.read_back["thread"]
            and self.written["g"] == self.read_back["thread_local"] == TEXT
            and self.read_back["g"] is None
        )

    def summary(self) -> str:
        same = "the same" if self.written["thread"] == self.read_back["thread"] else "another"
        return (
            f"g.note = {self.written['g']!r} in one request is {self.read_back['g']!r} in the "
            f"next, in {same} thread, where a threading.local still holds "
            f"{self.read_back['thread_local']!r}"
        )


def prove() -> Finding:
    with dev_server(create_app(), threaded=False) as url:
        written = requests.post(f"{url}/note", params={"text": TEXT}, timeout=5).json()
        read_back = requests.get(f"{url}/note", timeout=5).json()
    return Finding(written, read_back)
