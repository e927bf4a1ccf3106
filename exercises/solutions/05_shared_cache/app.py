"""Exercise 5: a cache every worker sees.

The price of tea: GET /price answers {"price": ...}, worked out from the
price list in SQLite by a slow calculation (taxes, currencies), so the
answer is cached. An admin sets a new price with POST /admin/price and
{"price": "4.20"}. The cache is a table in the same SQLite file, which every
worker, instance and restart reads:

- a new price and the cache's clearing are one transaction, so no request
  ever reads the new price list next to the old cached price;
- a request that calculated from the old price list and finishes after the
  change must not put its stale answer back: it stores it only if the price
  list's version is still the one it calculated from, checked by the store
  in the same statement.

Users report: "I changed the price and customers still see the old one."

Run it by hand from this folder: flask --app app run
"""

import os
import sqlite3
import time
from contextlib import closing

from flask import Flask, abort, current_app, g, request
from werkzeug.exceptions import HTTPException

ITEM = "tea"
CALCULATION_SECONDS = 0.01  # why the price is cached at all
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS prices (item TEXT PRIMARY KEY, price TEXT, version INTEGER)",
    "CREATE TABLE IF NOT EXISTS price_cache (item TEXT PRIMARY KEY, price TEXT, version INTEGER)",
)


def connect(path: str) -> sqlite3.Connection:
    # Autocommit: each statement is its own transaction; wait for a writer's lock.
    return sqlite3.connect(path, timeout=10, isolation_level=None)


def get_db() -> sqlite3.Connection:
    """This request's connection, made on first use and closed at its end."""
    if "db" not in g:
        g.db = connect(current_app.config["DATABASE"])
    return g.db


def calculate_price(item: str) -> tuple[str, int]:
    """The price, and the version of the price list it was calculated from."""
    [(price, version)] = get_db().execute(
        "SELECT price, version FROM prices WHERE item = ?", (item,)
    )
    time.sleep(CALCULATION_SECONDS)
    return price, version


def cached_price(item: str) -> str:
    db = get_db()
    for (price,) in db.execute("SELECT price FROM price_cache WHERE item = ?", (item,)):
        return price
    price, version = calculate_price(item)
    db.execute(
        "INSERT OR IGNORE INTO price_cache (item, price, version)"
        " SELECT item, ?, version FROM prices WHERE item = ? AND version = ?",
        (price, item, version),
    )
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
        for statement in SCHEMA:
            db.execute(statement)
        db.execute("INSERT OR IGNORE INTO prices VALUES (?, '3.50', 0)", (ITEM,))

    @app.teardown_appcontext
    def close_db(_error):
        db = g.pop("db", None)
        if db is not None:
            db.close()

    @app.get("/price")
    def show_price():
        return {"price": cached_price(ITEM)}

    @app.post("/admin/price")
    def set_price():
        price = posted_price()
        db = get_db()
        with db:  # commits both statements together, or neither
            db.execute("BEGIN IMMEDIATE")
            db.execute(
                "UPDATE prices SET price = ?, version = version + 1 WHERE item = ?", (price, ITEM)
            )
            db.execute("DELETE FROM price_cache WHERE item = ?", (ITEM,))
        return {"price": price}

    # Not the lesson: an error is a JSON answer, never an HTML page.
    @app.errorhandler(HTTPException)
    def json_error(error: HTTPException):
        return {"error": error.name, "detail": error.description}, error.code

    return app
