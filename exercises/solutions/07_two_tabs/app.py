"""Exercise 7: two tabs of one user writing at once.

A notebook: POST /notes with {"text": "buy milk"} adds a note to the
caller's notebook and answers it, GET /notes lists it. A user is one
browser, given a random id in a cookie on its first visit. Each note is a
row of its own, keyed by the user: adding one is one INSERT, which changes
nothing another request wrote, so two tabs that add at once both keep their
note. (Keeping one JSON row per user also works if the append is one
statement the store runs, json_insert(notes, '$[#]', ?), never a list
rebuilt in Python and written back whole.)

Users report: "I added notes in two tabs and one of them is gone."

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
FORMAT_SECONDS = 0.002  # the note is checked and formatted before it is saved
SCHEMA = """CREATE TABLE IF NOT EXISTS notes (
    id INTEGER PRIMARY KEY,
    user_id TEXT NOT NULL,
    text TEXT NOT NULL
)"""


def connect(path: str) -> sqlite3.Connection:
    # Autocommit: each statement is its own transaction; wait for a writer's lock.
    return sqlite3.connect(path, timeout=10, isolation_level=None)


def get_db() -> sqlite3.Connection:
    """This request's connection, made on first use and closed at its end."""
    if "db" not in g:
        g.db = connect(current_app.config["DATABASE"])
    return g.db


def users_notes(user_id: str) -> list[str]:
    rows = get_db().execute("SELECT text FROM notes WHERE user_id = ? ORDER BY id", (user_id,))
    return [text for (text,) in rows]


def posted_text() -> str:
    body = request.get_json(silent=True)
    text = body.get("text") if isinstance(body, dict) else None
    if not isinstance(text, str) or not text:
        abort(400, description='send JSON {"text": "<note>"}')
    return text


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 16 * 1024
    app.config["DATABASE"] = os.environ.get("DATABASE", "notes.sqlite3")
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

    @app.post("/notes")
    def add_note():
        text = posted_text()
        time.sleep(FORMAT_SECONDS)
        get_db().execute("INSERT INTO notes (user_id, text) VALUES (?, ?)", (g.user_id, text))
        return {"notes": users_notes(g.user_id)}, 201

    @app.get("/notes")
    def show_notes():
        return {"notes": users_notes(g.user_id)}

    # Not the lesson: an error is a JSON answer, never an HTML page.
    @app.errorhandler(HTTPException)
    def json_error(error: HTTPException):
        return {"error": error.name, "detail": error.description}, error.code

    return app
