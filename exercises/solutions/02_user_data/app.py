"""Exercise 2: one user's data.

A shopping cart: POST /cart with {"item": "tea"} adds to the caller's cart
and answers it, GET /cart lists it. A user is one browser: on its first
visit the app gives it a random id in a cookie. The items are rows of a
SQLite table keyed by that id: every worker process reads the same file, a
restart keeps it, and each add is one INSERT of its own row, so two adds at
once cannot overwrite each other.

Users report: "my cart has things I never added", "half my cart vanished".

Run it by hand from this folder: flask --app app run
"""

import os
import secrets
import sqlite3
import time
from contextlib import closing

from flask import Flask, abort, current_app, g, request
from werkzeug.exceptions import HTTPException

USER_COOKIE = "uid"
STOCK_CHECK_SECONDS = 0.002  # the item's stock is checked before it is added
SCHEMA = """CREATE TABLE IF NOT EXISTS cart_items (
    id INTEGER PRIMARY KEY,
    user_id TEXT NOT NULL,
    item TEXT NOT NULL
)"""


def connect(path: str) -> sqlite3.Connection:
    # Autocommit: each statement is its own transaction; wait for a writer's lock.
    return sqlite3.connect(path, timeout=10, isolation_level=None)


def get_db() -> sqlite3.Connection:
    """This request's connection, made on first use and closed at its end."""
    if "db" not in g:
        g.db = connect(current_app.config["DATABASE"])
    return g.db


def users_items(user_id: str) -> list[str]:
    rows = get_db().execute("SELECT item FROM cart_items WHERE user_id = ? ORDER BY id", (user_id,))
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
    app.config["DATABASE"] = os.environ.get("DATABASE", "cart.sqlite3")
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

    @app.post("/cart")
    def add_to_cart():
        item = posted_item()
        time.sleep(STOCK_CHECK_SECONDS)
        get_db().execute("INSERT INTO cart_items (user_id, item) VALUES (?, ?)", (g.user_id, item))
        return {"items": users_items(g.user_id)}, 201

    @app.get("/cart")
    def show_cart():
        return {"items": users_items(g.user_id)}

    # Not the lesson: an error is a JSON answer, never an HTML page.
    @app.errorhandler(HTTPException)
    def json_error(error: HTTPException):
        return {"error": error.name, "detail": error.description}, error.code

    return app
