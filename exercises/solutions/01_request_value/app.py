"""Exercise 1: a value for one request.

A greeting: GET /hello?name=Ann answers {"greeting": "Hello, Ann!"}. The
handler keeps the visitor's name where its helper can read it without being
passed it: on flask.g, which every request gets new and empty, and which no
other request sees.

Users report: "I typed my name and it greeted somebody else."

Run it by hand from this folder: flask --app app run
"""

import time

from flask import Flask, g, request
from werkzeug.exceptions import HTTPException

LOOKUP_SECONDS = 0.005  # the greeting is looked up (a translation service): other requests run


def greeting_for_visitor() -> str:
    time.sleep(LOOKUP_SECONDS)
    return f"Hello, {g.visitor_name}!"


def create_app() -> Flask:
    app = Flask(__name__)

    @app.get("/hello")
    def hello():
        g.visitor_name = request.args.get("name", "stranger")
        return {"greeting": greeting_for_visitor()}

    # Not the lesson: an error is a JSON answer, never an HTML page.
    @app.errorhandler(HTTPException)
    def json_error(error: HTTPException):
        return {"error": error.name, "detail": error.description}, error.code

    return app
