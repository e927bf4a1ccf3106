"""A test suite whose clients share `g`: requests made inside one pushed app context.

No server here: Flask's test client, as a test suite uses it. A test (or a
fixture) opens `with app.app_context():`, to reach the database or
current_app, and makes its requests inside the block. Up to Flask 3.1, a
request that starts where a context of its app is already pushed runs in that
context instead of a new one (see flask_version.py): every request of the
block, whichever client sends it, shares one `g`. A view that keeps the
logged-in user on `g`, loading it once per request as Flask's get_db()
pattern does, then shows client 1's user to client 2, which never logged in.
The suite tests something no server ever does, and passes or fails for the
wrong reason.

The same goes for any context left pushed around requests: a fixture that
yields inside `with app.app_context():`, or a `with app.test_request_context():`
block. The right shape is the one of Flask's tutorial's conftest.py: the
fixture creates the app, uses a context only for its own set-up, and yields
outside it; each request then pushes and pops a context of its own.

A run (Flask 3.1.3), client 1 logs in as ann, then client 2 asks who it is:

    requests inside `with app.app_context():`           client 2 is 'ann'
    a fixture that yields inside app_context()           client 2 is 'ann'
    requests inside `with app.test_request_context():`  client 2 is 'ann'
    no block around the requests                         client 2 is None
    the tutorial's fixture shape                         client 2 is None

Flask 3.2 pushes a new context for each request even inside such a block;
there, this proof says so and no longer holds.
"""

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from flask import Flask, g, session

from examples.flask_version import installed, no_longer_reused, reuses_pushed_app_context

LABEL = "proven"
USER = "ann"


def create_app() -> Flask:
    app = Flask(__name__)
    app.config.update(TESTING=True, SECRET_KEY="test")

    def current_user() -> str | None:
        # Load once per request and keep it on g: the pattern of Flask's get_db().
        if "user" not in g:
            g.user = session.get("user")
        return g.user

    @app.post("/login/<name>")
    def login(name: str):
        session["user"] = name
        return {"user": current_user()}

    @app.get("/me")
    def me():
        return {"user": current_user()}

    return app


# Fixtures, shaped as in a conftest.py (there, each with @pytest.fixture).


def app_fixture_yielding_in_context() -> Iterator[Flask]:
    """The leaky shape: the context stays pushed for the whole test."""
    app = create_app()
    with app.app_context():
        # set-up that needs a context: create tables, seed data...
        yield app


def app_fixture_as_in_the_tutorial() -> Iterator[Flask]:
    """The right shape: a context for set-up only, then yield outside it."""
    app = create_app()
    with app.app_context():
        pass  # set-up that needs a context: init_db(), as the tutorial does
    yield app


def two_clients(app: Flask) -> str | None:
    """Client 1 logs in and asks who it is; then client 2, a new browser, asks.
    Returns who client 2 was told it is."""
    first, second = app.test_client(), app.test_client()
    first.post(f"/login/{USER}")
    first.get("/me")
    return second.get("/me").json["user"]


def in_app_context(app: Flask) -> str | None:
    with app.app_context():
        return two_clients(app)


def in_test_request_context(app: Flask) -> str | None:
    with app.test_request_context():
        return two_clients(app)


def from_fixture(fixture: Callable[[], Iterator[Flask]]) -> str | None:
    with contextlib.contextmanager(fixture)() as app:
        return two_clients(app)


@dataclass
class Finding:
    flask: str  # the installed version
    client_two: dict[str, str | None]  # shape -> who client 2 was told it is

    LEAKY = ("inside app_context()", "fixture yielding in app_context()", "inside a test request")
    RIGHT = ("no block", "the tutorial's fixture")

    @property
    def holds(self) -> bool:
        return (
            reuses_pushed_app_context(self.flask)
            and all(self.client_two[shape] == USER for shape in self.LEAKY)
            and all(self.client_two[shape] is None for shape in self.RIGHT)
        )

    def summary(self) -> str:
        if not reuses_pushed_app_context(self.flask):
            return no_longer_reused(self.flask)
        seen = "; ".join(f"{shape}: {self.client_two[shape]!r}" for shape in self.client_two)
        return (
            f"Flask {self.flask}: client 1 logs in as {USER!r}, a new client 2 asks who "
            f"it is: {seen}"
        )


def prove() -> Finding:
    shapes: dict[str, Callable[[], str | None]] = {
        "inside app_context()": lambda: in_app_context(create_app()),
        "fixture yielding in app_context()": lambda: from_fixture(app_fixture_yielding_in_context),
        "inside a test request": lambda: in_test_request_context(create_app()),
        "no block": lambda: two_clients(create_app()),
        "the tutorial's fixture": lambda: from_fixture(app_fixture_as_in_the_tutorial),
    }
    return Finding(installed(), {shape: run() for shape, run in shapes.items()})
