"""Exercise 6: the secret key that keeps users logged in.

POST /login with {"name": "ann"} logs the browser in, GET /me answers
{"name": "ann"} (or null for a visitor who never logged in). Who is logged
in travels in Flask's session cookie, signed with the app's secret key. The
key comes from the environment, where the deployment puts the same one for
every worker, every instance and every restart (here the spec's [app].env;
in production a secret store). To change it without logging everyone out,
put the old one in SECRET_KEY_FALLBACKS (Flask 3.1+).

Users report: "everybody was logged out after the deploy", "I am logged out
whenever the load balancer sends me to the other server".

Run it by hand from this folder: SECRET_KEY=dev flask --app app run
"""

import os

from flask import Flask, abort, request, session
from werkzeug.exceptions import HTTPException


def posted_name() -> str:
    body = request.get_json(silent=True)
    name = body.get("name") if isinstance(body, dict) else None
    if not isinstance(name, str) or not name:
        abort(400, description='send JSON {"name": "<user name>"}')
    return name


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 16 * 1024
    if not os.environ.get("SECRET_KEY"):
        raise RuntimeError("set SECRET_KEY: the one key of every worker, instance and restart")
    app.secret_key = os.environ["SECRET_KEY"]

    @app.post("/login")
    def log_in():
        name = posted_name()
        session.clear()
        session["name"] = name
        return {"name": name}

    @app.get("/me")
    def who_am_i():
        return {"name": session.get("name")}

    # Not the lesson: an error is a JSON answer, never an HTML page.
    @app.errorhandler(HTTPException)
    def json_error(error: HTTPException):
        return {"error": error.name, "detail": error.description}, error.code

    return app
