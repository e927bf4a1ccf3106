"""Exercise 2: one user's data.

A shopping cart: POST /cart with {"item": "tea"} adds to the caller's cart
and answers it, GET /cart lists it. A user is one browser: on its first
visit the app gives it a random id in a cookie. But the items go into one
module-level list, which every user of the process shares, and which each
worker process has a copy of.

Users report: "my cart has things I never added", "half my cart vanished".

Run it by hand from this folder: flask --app app run
"""

import os
import secrets
import time

from flask import Flask, abort, g, request
from werkzeug.exceptions import HTTPException

USER_COOKIE = "uid"
STOCK_CHECK_SECONDS = 0.002  # the item's stock is checked before it is added

cart_items: list[str] = []


def posted_item() -> str:
    body = request.get_json(silent=True)
    item = body.get("item") if isinstance(body, dict) else None
    if not isinstance(item, str) or not item:
        abort(400, description='send JSON {"item": "<name>"}')
    return item


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 16 * 1024
    # A file for a store, if you need one: the check gives each run a fresh one.
    app.config["DATABASE"] = os.environ.get("DATABASE", "cart.sqlite3")

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
        cart_items.append(item)
        return {"items": list(cart_items)}, 201

    @app.get("/cart")
    def show_cart():
        return {"items": list(cart_items)}

    # Not the lesson: an error is a JSON answer, never an HTML page.
    @app.errorhandler(HTTPException)
    def json_error(error: HTTPException):
        return {"error": error.name, "detail": error.description}, error.code

    return app
