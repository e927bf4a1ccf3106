"""Exercise 8: a write retried after its store timed out.

Orders: POST /orders with {"item": "tea"} places an order and answers the
caller's orders, GET /orders lists them. A user is one browser, given a
random id in a cookie on its first visit; each order is a row in SQLite.
The store sits across a network that sometimes loses its answer: the order
was saved, but the app waited in vain and got a timeout. The app does what
everyone does with a timeout: it tries again, and the order is saved twice.
The retry must stay (a timeout may also mean the order was not saved); the
second try must not save it again.

Users report: "I ordered once and was charged twice."

Run it by hand from this folder: flask --app app run
"""

import itertools
import os
import secrets
import sqlite3
from contextlib import closing

from flask import Flask, abort, current_app, g, request
from werkzeug.exceptions import HTTPException

USER_COOKIE = "uid"
ATTEMPTS = 3
SCHEMA = """CREATE TABLE IF NOT EXISTS orders (
    id INTEGER PRIMARY KEY,
    user_id TEXT NOT NULL,
    item TEXT NOT NULL
)"""


class StoreTimeout(Exception):
    """The store did not answer in time: the write may have been made, or not."""


# Stands in for the network between the app and its store, and is not the
# lesson: it loses every other answer, after the store has made the write.
LOST_ANSWER_EVERY = 2
answers_sent = itertools.count(1)


def store_answer_arrives() -> None:
    if next(answers_sent) % LOST_ANSWER_EVERY == 0:
        raise StoreTimeout("the store took too long to answer")


def connect(path: str) -> sqlite3.Connection:
    # Autocommit: each statement is its own transaction; wait for a writer's lock.
    return sqlite3.connect(path, timeout=10, isolation_level=None)


def get_db() -> sqlite3.Connection:
    """This request's connection, made on first use and closed at its end."""
    if "db" not in g:
        g.db = connect(current_app.config["DATABASE"])
    return g.db


def save_order(user_id: str, item: str) -> None:
    get_db().execute("INSERT INTO orders (user_id, item) VALUES (?, ?)", (user_id, item))
    store_answer_arrives()


def users_orders(user_id: str) -> list[str]:
    rows = get_db().execute("SELECT item FROM orders WHERE user_id = ? ORDER BY id", (user_id,))
    return [item for (item,) in rows]


def posted_item() -> str:
    body = request.get_json(silent=True)
    item = body.get("item") if isinstance(body, dict) else None
    if not isinstance(item, str) or not item:
        abort(400, description='send JSON {"item": "<name>"}')
    return item


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 16 * 1024
    app.config["DATABASE"] = os.environ.get("DATABASE", "orders.sqlite3")
    with closing(connect(app.config["DATABASE"])) as db:
        db.execute(SCHEMA)

    @app.teardown_appcontext
    def close_db(_error):
        db = g.pop("db", None)
        if db is not None:
            db.close()

    @app.before_request
    def identify_user():
        # Who is asking: the id in their cookie, or a new one for a first visit.
        g.user_id = request.cookies.get(USER_COOKIE) or secrets.token_urlsafe(16)

    @app.after_request
    def remember_user(response):
        if request.cookies.get(USER_COOKIE) != g.user_id:
            response.set_cookie(USER_COOKIE, g.user_id, httponly=True, samesite="Lax")
        return response

    @app.post("/orders")
    def place_order():
        item = posted_item()
        for _attempt in range(ATTEMPTS):
            try:
                save_order(g.user_id, item)
                break
            except StoreTimeout:
                continue
        else:
            detail = "the store did not answer; the order may or may not be placed"
            return {"error": "store timed out", "detail": detail, "outcome": "unknown"}, 503
        return {"orders": users_orders(g.user_id)}, 201

    @app.get("/orders")
    def show_orders():
        return {"orders": users_orders(g.user_id)}

    # Not the lesson: an error is a JSON answer, never an HTML page.
    @app.errorhandler(HTTPException)
    def json_error(error: HTTPException):
        return {"error": error.name, "detail": error.description}, error.code

    return app
