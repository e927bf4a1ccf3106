"""fixed_session: per-user state in a server-side session (Flask-Session).

The visits list of the classic "articles visited" example belongs to one
user, so it lives in that user's session: the browser keeps only a long
random session id, the data stays on the server (cachelib's file store under
var/sessions by default, Redis when SESSION_REDIS_URL is set), and every
worker process reads the same store.

Three details decide whether it works (see README.md):

- Assign, do not mutate. `session["visits"].append(x)` changes a list the
  session cannot see, so nothing is saved; assigning a new list marks the
  session modified.
- Do not rewrite the session on every request (SESSION_REFRESH_EACH_REQUEST
  is off): a slow read-only request would save the copy it loaded at its
  start over an append that finished meanwhile.
- A session is saved whole at the end of each request, so one user's
  concurrent requests (several tabs) still race: last writer wins. Sessions
  suit small per-user state changed one request at a time.

The counter is shared by all users, which no session can hold: 501.
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
    name_from_query,
)

NO_SHARED_STATE = (
    "a session holds one user's state; a counter shared by all users needs "
    "a database or a Redis-protocol server: see fixed_db or fixed_cache"
)

bp = Blueprint("routes", __name__)


@bp.post("/counter/increment")
def increment_counter():
    raise exceptions.NotImplemented(NO_SHARED_STATE)


@bp.get("/counter")
def read_counter():
    raise exceptions.NotImplemented(NO_SHARED_STATE)


@bp.post("/counter/reset")
def reset_counter():
    raise exceptions.NotImplemented(NO_SHARED_STATE)


@bp.post("/visits")
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
