"""fixed_session: per-user state in a server-side session.

Each user's visits live in their session, which store.py keeps on the server
for every worker to read; each request's name to greet lives on flask.g. The
shared counter is state no session can hold: 501. A write's Idempotency-Key
is kept in the session too (@idempotent). README.md explains the three
details that decide whether it works.
"""

from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Flask, g, session
from werkzeug import exceptions

from fixed_session import store
from plumbing import (
    article_from_body,
    create_base_app,
    do_some_work,
    idempotent,
    name_from_query,
    visits_page,
)

NO_SHARED_STATE = (
    "a session holds one user's state; a counter shared by all users needs "
    "a database or a Redis-protocol server: see fixed_db or fixed_cache"
)

bp = Blueprint("routes", __name__)
bp.get("/")(visits_page)  # the page for people, the same in every app (plumbing/page.py)


@bp.post("/counter/increment")
@idempotent
def increment_counter():
    raise exceptions.NotImplemented(NO_SHARED_STATE)


@bp.get("/counter")
def read_counter():
    raise exceptions.NotImplemented(NO_SHARED_STATE)


@bp.post("/counter/reset")
@idempotent
def reset_counter():
    raise exceptions.NotImplemented(NO_SHARED_STATE)


@bp.post("/visits")
@idempotent
def add_visit():
    article = article_from_body()
    do_some_work()
    # Assign a new list: appending in place would not mark the session modified.
    session["visits"] = [*session.get("visits", []), article]
    return {"visits": session["visits"]}, 201


@bp.get("/visits")
def list_visits():
    return {"visits": session.get("visits", [])}


@bp.get("/greet")
def greet():
    g.name_to_greet = name_from_query()
    do_some_work()  # other requests run here, each with its own g
    return {"greeting": f"Hello, {g.name_to_greet}!"}


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    # Flask's default (True) would save the whole session after every request.
    app = create_base_app(__name__, test_config, defaults={"SESSION_REFRESH_EACH_REQUEST": False})
    store.init_app(app)
    app.register_blueprint(bp)
    return app
