"""fixed_db: state in a database.

The shared counter is one atomic UPDATE ... RETURNING, each user's visits are
rows keyed by their user id, and each request's name to greet lives on
flask.g. store.py runs the SQL on SQLite (sqlite.py) or PostgreSQL
(postgres.py); @idempotent applies each keyed write once. README.md explains.
"""

from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Flask, g

from fixed_db import store
from plumbing import (
    article_from_body,
    create_base_app,
    current_user_id,
    do_some_work,
    idempotent,
    name_from_query,
    visits_page,
)

bp = Blueprint("routes", __name__)
bp.get("/")(visits_page)  # the page for people, the same in every app (plumbing/page.py)


@bp.post("/counter/increment")
@idempotent
def increment_counter():
    do_some_work()  # the same work; what changed is that read and write are one step
    # Read and write in one statement, under the database's write lock.
    [(new_value,)] = store.query(
        "UPDATE counter SET value = value + 1 WHERE id = 1 RETURNING value"
    )
    return {"value": new_value}


@bp.get("/counter")
def read_counter():
    [(value,)] = store.query("SELECT value FROM counter WHERE id = 1")
    return {"value": value}


@bp.post("/counter/reset")
@idempotent
def reset_counter():
    store.query("UPDATE counter SET value = 0 WHERE id = 1")
    return {"value": 0}


@bp.post("/visits")
@idempotent
def add_visit():
    article = article_from_body()
    do_some_work()
    store.query("INSERT INTO visits (user_id, article) VALUES (?, ?)", (current_user_id(), article))
    return {"visits": visits_of_current_user()}, 201


@bp.get("/visits")
def list_visits():
    return {"visits": visits_of_current_user()}


@bp.get("/greet")
def greet():
    g.name_to_greet = name_from_query()
    do_some_work()  # other requests run here, each with its own g
    return {"greeting": f"Hello, {g.name_to_greet}!"}


def visits_of_current_user() -> list[str]:
    rows = store.query(
        "SELECT article FROM visits WHERE user_id = ? ORDER BY id", (current_user_id(),)
    )
    return [article for (article,) in rows]


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    app = create_base_app(__name__, test_config)
    store.init_app(app)
    app.register_blueprint(bp)
    return app
