"""Half-fix 4: per-user state in Flask-Session, left with the defaults.

A server-side session is the right home for one user's small state, and the
app below uses it correctly (it assigns a new list rather than appending in
place). But under the defaults, SESSION_REFRESH_EACH_REQUEST is on, and
Flask-Session then saves the whole session at the end of every request,
read-only ones included. A slow read that loaded the session before a write
of the same user finished saves its stale copy over that write.

The proof, one browser with two tabs, on the threaded dev server:

1. tab 1 appends a1;
2. tab 2 opens the list, a slow page: it loads the session, then is held
   (a pause stands in for a slow query or template) until...
3. tab 1 appends a2, which is saved;
4. tab 2's page finishes, and its session, still [a1], is saved again.

A run: with the defaults the list ends as ['a1'], the append erased; with
SESSION_REFRESH_EACH_REQUEST = False (what fixed_session sets) only
changed sessions are saved and it ends as ['a1', 'a2'].

That setting fixes read-only requests, not writes: two concurrent appends of
one user still race, since each saves the whole session it loaded (see
fixed_session/README.md). Per-user data written concurrently belongs in rows
keyed by the user, as in fixed_db.
"""

import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass

import requests
from cachelib.file import FileSystemCache
from flask import Flask, request, session
from flask_session import Session

from examples.servers import dev_server

LABEL = "still broken"
HOLD_TIMEOUT_SECONDS = 5.0


def create_app(store_dir: str, refresh_each_request: bool, slow_work: Callable[[], None]) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SESSION_TYPE="cachelib",
        SESSION_CACHELIB=FileSystemCache(store_dir, mode=0o600),
        SESSION_REFRESH_EACH_REQUEST=refresh_each_request,  # True is the default
    )
    Session(app)

    @app.post("/visits")
    def add_visit():
        session["visits"] = [*session.get("visits", []), request.json["article"]]
        return {"visits": session["visits"]}

    @app.get("/visits")
    def list_visits():
        visits = session.get("visits", [])
        slow_work()
        return {"visits": visits}

    return app


class HeldOnce:
    """slow_work() for the proof: the first call waits until released; later calls do not."""

    def __init__(self) -> None:
        self.started, self.release = threading.Event(), threading.Event()
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self) -> None:
        with self.lock:
            self.calls += 1
            first = self.calls == 1
        if first:
            self.started.set()
            self.release.wait(HOLD_TIMEOUT_SECONDS)


def read_during_append(refresh_each_request: bool) -> list[str]:
    """The four steps above; returns the list the session holds at the end."""
    held = HeldOnce()
    with (
        tempfile.TemporaryDirectory() as store_dir,
        dev_server(create_app(store_dir, refresh_each_request, held)) as url,
    ):
        tab1, tab2 = requests.Session(), requests.Session()
        tab2.cookies = tab1.cookies  # one browser, one cookie jar
        tab1.post(url + "/visits", json={"article": "a1"}, timeout=5).raise_for_status()
        slow_page = threading.Thread(
            target=tab2.get, args=(url + "/visits",), kwargs={"timeout": 10}
        )
        slow_page.start()
        if not held.started.wait(HOLD_TIMEOUT_SECONDS):
            raise RuntimeError("the slow page never started")
        tab1.post(url + "/visits", json={"article": "a2"}, timeout=5).raise_for_status()
        held.release.set()
        slow_page.join(10)
        visits = tab1.get(url + "/visits", timeout=5).json()["visits"]
        tab1.close()
        tab2.close()
    return visits


@dataclass
class Finding:
    with_defaults: list[str]
    refresh_off: list[str]

    @property
    def holds(self) -> bool:
        return self.with_defaults == ["a1"] and self.refresh_off == ["a1", "a2"]

    def summary(self) -> str:
        return (
            f"a slow read-only page open while a2 was appended: with the defaults the list "
            f"ends {self.with_defaults}; with SESSION_REFRESH_EACH_REQUEST = False, "
            f"{self.refresh_off}"
        )


def prove() -> Finding:
    return Finding(with_defaults=read_during_append(True), refresh_off=read_during_append(False))
