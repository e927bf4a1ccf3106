"""Exercise 3: a shared counter.

A page's hit counter: POST /hits counts one more and answers the new value,
GET /hits reads it. The count is a row in SQLite, changed in one statement
(UPDATE ... RETURNING): the store does the read and the write as one step,
for every thread, worker process, instance and restart.

Users report: "two of us got ticket number 7", "the count goes down".

Run it by hand from this folder: flask --app app run
"""

import os
import sqlite3
import time
from contextlib import closing

from flask import Flask, current_app, g
from werkzeug.exceptions import HTTPException

WORK_SECONDS = 0.002  # the work between reading and writing: a query, an API call


def connect(path: str) -> sqlite3.Connection:
    # Autocommit: each statement is its own transaction; wait for a writer's lock.
    return sqlite3.connect(path, timeout=10, isolation_level=None)


def get_db() -> sqlite3.Connection:
    """This request's connection, made on first use and closed at its end."""
    if "db" not in g:
        g.db = connect(current_app.config["DATABASE"])
    return g.db


def create_app() -> Flask:
    app = Flask(__name__)
    # A file for a store, if you need one: the check gives each run a fresh one.
    app.config["DATABASE"] = os.environ.get("DATABASE", "hits.sqlite3")
    with closing(connect(app.config["DATABASE"])) as db:
        db.execute("CREATE TABLE IF NOT EXISTS hits (id INTEGER PRIMARY KEY, value INTEGER)")
        db.execute("INSERT OR IGNORE INTO hits (id, value) VALUES (1, 0)")

    @app.teardown_appcontext
    def close_db(_error):
        db = g.pop("db", None)
        if db is not None:
            db.close()

    @app.post("/hits")
    def count_hit():
        time.sleep(WORK_SECONDS)
        [(new_value,)] = get_db().execute(
            "UPDATE hits SET value = value + 1 WHERE id = 1 RETURNING value"
        )
        return {"value": new_value}

    @app.get("/hits")
    def read_hits():
        [(value,)] = get_db().execute("SELECT value FROM hits WHERE id = 1")
        return {"value": value}

    # Not the lesson: an error is a JSON answer, never an HTML page.
    @app.errorhandler(HTTPException)
    def json_error(error: HTTPException):
        return {"error": error.name, "detail": error.description}, error.code

    return app
