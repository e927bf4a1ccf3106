"""Exercise 4: a setting an admin changes for every worker.

The banner above every page: an admin sets it with POST /admin/banner and
{"text": "Closed on Monday"}, every visitor reads it with GET /banner. The
text is a row in SQLite, read on every request: a change made through any
worker is what every worker, instance and restart reads next. app.config
keeps what the app is started with, and is not changed after.

Users report: "I changed the banner, and half the time the old one shows."

Run it by hand from this folder: flask --app app run
"""

import os
import sqlite3
from contextlib import closing

from flask import Flask, abort, current_app, g, request
from werkzeug.exceptions import HTTPException


def connect(path: str) -> sqlite3.Connection:
    # Autocommit: each statement is its own transaction; wait for a writer's lock.
    return sqlite3.connect(path, timeout=10, isolation_level=None)


def get_db() -> sqlite3.Connection:
    """This request's connection, made on first use and closed at its end."""
    if "db" not in g:
        g.db = connect(current_app.config["DATABASE"])
    return g.db


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
    with closing(connect(app.config["DATABASE"])) as db:
        db.execute("CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value TEXT)")
        db.execute("INSERT OR IGNORE INTO settings (name, value) VALUES ('banner', 'Welcome!')")

    @app.teardown_appcontext
    def close_db(_error):
        db = g.pop("db", None)
        if db is not None:
            db.close()

    @app.post("/admin/banner")
    def set_banner():
        text = posted_text()
        get_db().execute("UPDATE settings SET value = ? WHERE name = 'banner'", (text,))
        return {"text": text}

    @app.get("/banner")
    def show_banner():
        [(text,)] = get_db().execute("SELECT value FROM settings WHERE name = 'banner'")
        return {"text": text}

    # Not the lesson: an error is a JSON answer, never an HTML page.
    @app.errorhandler(HTTPException)
    def json_error(error: HTTPException):
        return {"error": error.name, "detail": error.description}, error.code

    return app
