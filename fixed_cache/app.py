"""fixed_cache: state in a Redis-protocol server.

The shared counter is one atomic INCR, each user's visits are a list appended
in one MULTI/EXEC, and each request's name to greet lives on flask.g.
store.py sends them, once, and answers for a failure; @idempotent applies
each keyed write once. README.md explains what happens when the server stalls.
"""

from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Flask, g

from fixed_cache import store
from plumbing import (
    article_from_body,
    create_base_app,
    current_user_id,
    do_some_work,
    idempotent,
    name_from_query,
    visits_page,
)

MAX_VISITS_PER_USER = 1000  # older visits are dropped, in the same step as the append

bp = Blueprint("routes", __name__)
bp.get("/")(visits_page)  # the page for people, the same in every app (plumbing/page.py)


@bp.post("/counter/increment")
@idempotent
def increment_counter():
    do_some_work()  # the same work; what changed is that read and write are one step
    # Read and write in one command, on a server that runs one at a time.
    return store.write(("INCR", "counter"), answer={"value": store.REPLY})


@bp.get("/counter")
def read_counter():
    return {"value": int(store.read("GET", "counter") or 0)}


@bp.post("/counter/reset")
@idempotent
def reset_counter():
    return store.write(("SET", "counter", 0), answer={"value": 0})


@bp.post("/visits")
@idempotent
def add_visit():
    article = article_from_body()
    do_some_work()
    key = f"visits:{current_user_id()}"
    # Append, cap and read back as one transaction: no other command runs between.
    return store.write(
        ("RPUSH", key, article),
        ("LTRIM", key, -MAX_VISITS_PER_USER, -1),
        ("LRANGE", key, 0, -1),
        answer={"visits": store.REPLY},
        status=201,
    )


@bp.get("/visits")
def list_visits():
    return {"visits": store.read("LRANGE", f"visits:{current_user_id()}", 0, -1)}


@bp.get("/greet")
def greet():
    g.name_to_greet = name_from_query()
    do_some_work()  # other requests run here, each with its own g
    return {"greeting": f"Hello, {g.name_to_greet}!"}


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    app = create_base_app(__name__, test_config)
    store.init_app(app)
    app.register_blueprint(bp)
    return app
