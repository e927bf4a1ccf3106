"""Exercise 4: a setting an admin changes for every worker.

The banner above every page: an admin sets it with POST /admin/banner and
{"text": "Closed on Monday"}, every visitor reads it with GET /banner. The
text is kept in app.config, which looks like the app's one configuration
but is a dict in each worker process's memory: the admin's change reaches
the worker that answered the admin, and no other.

Users report: "I changed the banner, and half the time the old one shows."

Run it by hand from this folder: flask --app app run
"""

import os

from flask import Flask, abort, current_app, request
from werkzeug.exceptions import HTTPException


def posted_text() -> str:
    body = request.get_json(silent=True)
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str):
        abort(400, description='send JSON {"text": "<banner>"}')
    return text


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 16 * 1024
    # A file for a store, if you need one: the check gives each run a fresh one.
    app.config["DATABASE"] = os.environ.get("DATABASE", "settings.sqlite3")
    app.config["BANNER"] = "Welcome!"

    @app.post("/admin/banner")
    def set_banner():
        current_app.config["BANNER"] = posted_text()
        return {"text": current_app.config["BANNER"]}

    @app.get("/banner")
    def show_banner():
        return {"text": current_app.config["BANNER"]}

    # Not the lesson: an error is a JSON answer, never an HTML page.
    @app.errorhandler(HTTPException)
    def json_error(error: HTTPException):
        return {"error": error.name, "detail": error.description}, error.code

    return app
