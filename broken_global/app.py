"""broken_global: state in module-level globals. THIS IS THE BUG.

The shared counter, the users' visits and each request's name to greet all
live in module-level variables, with nothing to protect them. README.md shows
the four ways that breaks under a real server.
"""

from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Flask

from plumbing import (
    article_from_body,
    create_base_app,
    do_some_work,
    name_from_query,
    visits_page,
)

# The state, as module-level globals: one copy per worker process, shared by
# every thread and every user in that process, lost on restart.
counter = 0
visits: list[str] = []
name_to_greet = ""

bp = Blueprint("routes", __name__)
bp.get("/")(visits_page)  # the page for people, the same in every app (plumbing/page.py)


@bp.post("/counter/increment")
def increment_counter():
    global counter
    new_value = counter + 1  # read
    do_some_work()  # other threads run here and read the same counter
    counter = new_value  # write: overwrites whatever they wrote meanwhile
    return {"value": new_value}


@bp.get("/counter")
def read_counter():
    return {"value": counter}


@bp.post("/counter/reset")
def reset_counter():
    global counter
    counter = 0
    return {"value": counter}


@bp.post("/visits")
def add_visit():
    global visits
    article = article_from_body()
    updated = [*visits, article]  # read: one list for everyone, per process
    do_some_work()
    visits = updated  # write: drops appends made meanwhile
    return {"visits": visits}, 201


@bp.get("/visits")
def list_visits():
    return {"visits": visits}


@bp.get("/greet")
def greet():
    global name_to_greet
    name_to_greet = name_from_query()
    do_some_work()  # another user's request sets name_to_greet here
    return {"greeting": f"Hello, {name_to_greet}!"}


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    app = create_base_app(__name__, test_config)
    app.register_blueprint(bp)
    return app
