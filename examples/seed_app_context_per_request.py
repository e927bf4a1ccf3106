"""The application context is pushed for each request, not shared by a thread's requests.

One of the seed texts says Flask's application context is shared by all the
requests handled in the same thread, and suggests keeping data there. It is
not shared: Flask pushes a new application context when a request starts and
pops it (running the teardown_appcontext functions) when the request ends.
`g` lives on that context, which is why it is empty at the start of every
request (see seed_g_per_request). Up to Flask 3.1 there is one exception, a
context of the same app already pushed in that thread and never popped: the
request then runs in it, and that is a bug (see half_fix_app_context_push and
g_shared_by_test_clients). Flask 3.2 pushes a new context even then. What
this proof shows holds for both.

The proof serves three requests from one thread (the dev server without
threads), keeps every application context a request ran in, and counts the
teardowns. A run:

    request 1: thread 140582884435648, a new context, 0 torn down before it
    request 2: thread 140582884435648, a new context, 1 torn down before it
    request 3: thread 140582884435648, a new context, 2 torn down before it

Data for the whole app belongs in app.config or app.extensions, set up once
at start-up; data shared between requests belongs in a database or a cache.
"""

import threading
from dataclasses import dataclass

import requests
from flask import Flask
from flask.globals import app_ctx

from examples.servers import dev_server

LABEL = "proven"
REQUESTS = 3


def create_app() -> Flask:
    app = Flask(__name__)
    contexts = []  # every context a request ran in, kept so that no id is reused
    torn_down = []

    @app.teardown_appcontext
    def count_teardown(_error: BaseException | None) -> None:
        torn_down.append(1)

    @app.get("/context")
    def context():
        current = app_ctx._get_current_object()
        new = all(current is not seen for seen in contexts)
        contexts.append(current)
        return {"thread": threading.get_ident(), "new": new, "torn_down_before": len(torn_down)}

    return app


@dataclass
class Finding:
    answers: list[dict]

    @property
    def holds(self) -> bool:
        return (
            len({answer["thread"] for answer in self.answers}) == 1
            and all(answer["new"] for answer in self.answers)
            and [answer["torn_down_before"] for answer in self.answers] == list(range(REQUESTS))
        )

    def summary(self) -> str:
        threads = len({answer["thread"] for answer in self.answers})
        new = sum(answer["new"] for answer in self.answers)
        torn_down = [answer["torn_down_before"] for answer in self.answers]
        return (
            f"{len(self.answers)} requests in {threads} thread ran in {new} new application "
            f"contexts; contexts torn down as each request began: {torn_down}"
        )


def prove() -> Finding:
    with dev_server(create_app(), threaded=False) as url:
        return Finding([requests.get(f"{url}/context", timeout=5).json() for _ in range(REQUESTS)])
