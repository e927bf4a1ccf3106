"""Exercise 5: a cache every worker sees.

The price of tea: GET /price answers {"price": ...}, worked out from the
price list in SQLite by a slow calculation (taxes, currencies), so the
answer is cached. An admin sets a new price with POST /admin/price and
{"price": "4.20"}, which writes the price list and clears the cache. The
cache is a dict in each worker process, guarded by a lock: exact in one
process, but the clear empties the cache of the worker that answered the
admin, and every other worker keeps serving the old price.

Users report: "I changed the price and customers still see the old one."

Run it by hand from this folder: flask --app app run
"""

import os
import sqlite3
import threading
import time
from contextlib import closing

from flask import Flask, abort, current_app, g, request
from werkzeug.exceptions import HTTPException

ITEM = "tea"
CALCULATION_SECONDS = 0.01  # why the price is cached at all

price_cache: dict[str, str] = {}
cache_lock = threading.Lock()


def connect(path: str) -> sqlite3.Connection:
    # Autocommit: each statement is its own transaction; wait for a writer's lock.
    return sqlite3.connect(path, timeout=10, isolation_level=None)


def get_db() -> sqlite3.Connection:
    """This request's connection, made on first use and closed at its end."""
    if "db" not in g:
        g.db = connect(current_app.config["DATABASE"])
    return g.db


def calculate_price(item: str) -> str:
    [(price,)] = get_db().execute("SELECT price FROM prices WHERE item = ?", (item,))
    time.sleep(CALCULATION_SECONDS)
    return price


def posted_price() -> str:
    body = request.get_json(silent=True)
    price = body.get("price") if isinstance(body, dict) else None
    if not isinstance(price, str) or not price:
        abort(400, description='send JSON {"price": "<amount>"}')
    return price


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 16 * 1024
    app.config["DATABASE"] = os.environ.get("DATABASE", "prices.sqlite3")
    with closing(connect(app.config["DATABASE"])) as db:
        db.execute("CREATE TABLE IF NOT EXISTS prices (item TEXT PRIMARY KEY, price TEXT)")
        db.execute("INSERT OR IGNORE INTO prices (item, price) VALUES (?, '3.50')", (ITEM,))

    @app.teardown_appcontext
    def close_db(_error):
        db = g.pop("db", None)
        if db is not None:
            db.close()

    @app.get("/price")
    def show_price():
        with cache_lock:
            if ITEM not in price_cache:
                price_cache[ITEM] = calculate_price(ITEM)
            return {"price": price_cache[ITEM]}

    @app.post("/admin/price")
    def set_price():
        price = posted_price()
        with cache_lock:
            get_db().execute("UPDATE prices SET price = ? WHERE item = ?", (price, ITEM))
            price_cache.clear()
        return {"price": price}

    # Not the lesson: an error is a JSON answer, never an HTML page.
    @app.errorhandler(HTTPException)
    def json_error(error: HTTPException):
        return {"error": error.name, "detail": error.description}, error.code

    return app
