"""broken_global: state in module-level globals. THIS IS THE BUG.

It works on a laptop with one user and one process. Under a real server it
breaks in four ways, each one visible to the load tests:

1. Threads share the globals. A handler reads, does some work (a query, an
   API call), then writes; another thread writes in between and one of the two
   updates is lost. A bare `counter += 1` hides this on CPython 3.10+, which
   only switches threads at calls and backward jumps, so the read and the
   write almost never get split; real handlers do work between them, so this
   app does too (do_some_work, WORK_MS long). On a free-threaded build even
   the bare `+= 1` loses updates.
2. Processes each get their own copy. gunicorn's workers are separate
   processes, so each counts on its own and a user's second request may land
   in a worker that has never seen their first.
3. Users share the globals too. Request data parked in a global (the name to
   greet) is read back after another user's request has replaced it.
4. A restart, or a worker recycled by max_requests, forgets everything.

Under the shared gunicorn config, `make demo` (2026-11-21, 2 cores) found:

    app            ops  lost updates  divergence  ...  visits lost  visits leaked  greet leaks
    broken_global  2465           394         196  ...          430            827          488
"""

from collections.abc import Mapping
from typing import Any

from flask import Blueprint, Flask

from plumbing import article_from_body, create_base_app, do_some_work, name_from_query

# The state, as module-level globals: one copy per worker process, shared by
# every thread and every user in that process, lost on restart.
counter = 0
visits: list[str] = []
name_to_greet = ""

bp = Blueprint("routes", __name__)


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
