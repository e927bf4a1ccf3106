"""Half-fix 3: an application context pushed at import, "so that g works everywhere".

`app.app_context().push()` at module level is a common way to make
current_app and g usable outside requests (in setup code, in scripts). But up
to Flask 3.1, Flask pushes an application context for a request only when the
thread has none of this app's already; otherwise the request runs in the
existing one, and shares its g. See half_fix_app_context_push_app.py for the
app: it keeps the visitor's name on g, loading it once per request, as
Flask's get_db() pattern does.

- Under gunicorn's sync workers, each worker serves every request in the
  thread that imported the app, so every request runs in that one pushed
  context: g is never emptied, and each worker greets its first visitor's
  name to everyone after.
- The dev server (`flask run`) starts a new thread for each connection, and
  each request here comes on a connection of its own; a new thread has no
  context, so each request gets a fresh one: the bug hides on a laptop.

A run (Flask 3.1.3), five visitors one after another:

    flask run:         Hello, ann! / bob! / cat! / dan! / eve!
    gunicorn, 2 sync:  Hello, ann! / ann! / ann! / dan! / ann!

Flask 3.2 pushes a new context for every request, pushed one or not: the
greetings come out right, and this proof says that it holds for Flask 3.1
and earlier only (flask_version.py). The context pushed at import is still a
mistake there: it stays on the thread for good, with whatever was put on its g.

The real fix: never push a context you do not pop. Setup code runs inside
`with app.app_context():`, and per-request data goes on g, which a request
then always gets empty.
"""

from dataclasses import dataclass

import requests

from examples.flask_version import installed, no_longer_reused, reuses_pushed_app_context
from examples.servers import Gunicorn, flask_run, worker_of

LABEL = "still broken"
APP = "examples.half_fix_app_context_push_app"
VISITORS = ["ann", "bob", "cat", "dan", "eve"]


@dataclass
class Greetings:
    names: list[str]  # the name each visitor was greeted with, in order
    workers: list[int]

    @property
    def wrong(self) -> int:
        return sum(name != visitor for name, visitor in zip(self.names, VISITORS, strict=True))


def greet_everyone(url: str) -> Greetings:
    greetings = Greetings([], [])
    for visitor in VISITORS:
        response = requests.get(url + "/greet", params={"name": visitor}, timeout=5)
        greetings.names.append(response.json()["greeting"].removeprefix("Hello, ").rstrip("!"))
        greetings.workers.append(worker_of(response))
    return greetings


@dataclass
class Finding:
    flask: str  # the installed version
    dev_server: Greetings
    gunicorn: Greetings

    @property
    def holds(self) -> bool:
        # Each of the 2 workers greets its first visitor rightly, everyone after wrongly.
        return (
            reuses_pushed_app_context(self.flask)
            and self.dev_server.wrong == 0
            and self.gunicorn.wrong >= len(VISITORS) - 2
        )

    def summary(self) -> str:
        if not reuses_pushed_app_context(self.flask):
            return no_longer_reused(self.flask)
        return (
            f"Flask {self.flask}: flask run greets {len(VISITORS) - self.dev_server.wrong} "
            f"of {len(VISITORS)} visitors by their own name; 2 gunicorn sync workers greet "
            f"{self.gunicorn.wrong} of them by an earlier visitor's name "
            f"({', '.join(self.gunicorn.names)})"
        )


def prove() -> Finding:
    with flask_run(APP) as url:
        dev = greet_everyone(url)
    with Gunicorn(f"{APP}:app", workers=2) as server:
        sync = greet_everyone(server.url)
    return Finding(installed(), dev, sync)
