"""Exercise 3: a shared counter.

A page's hit counter: POST /hits counts one more and answers the new value,
GET /hits reads it. The count is a module-level integer: read, a little
work, then written back. Threads that read at once write the same value,
and each worker process counts on its own.

Users report: "two of us got ticket number 7", "the count goes down".

Run it by hand from this folder: flask --app app run
"""

import os
import time

from flask import Flask
from werkzeug.exceptions import HTTPException

WORK_SECONDS = 0.002  # the work between reading and writing: a query, an API call

hits = 0


def create_app() -> Flask:
    app = Flask(__name__)
    # A file for a store, if you need one: the check gives each run a fresh one.
    app.config["DATABASE"] = os.environ.get("DATABASE", "hits.sqlite3")

    @app.post("/hits")
    def count_hit():
        global hits
        new_value = hits + 1
        time.sleep(WORK_SECONDS)
        hits = new_value
        return {"value": new_value}

    @app.get("/hits")
    def read_hits():
        return {"value": hits}

    # Not the lesson: an error is a JSON answer, never an HTML page.
    @app.errorhandler(HTTPException)
    def json_error(error: HTTPException):
        return {"error": error.name, "detail": error.description}, error.code

    return app
