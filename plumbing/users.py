"""Who is calling: a signed user-id cookie, set the first time a route asks.

The cookie holds a random id, never the user's data, and is signed with the
app's secret key so nobody can pick another user's id. A missing, tampered or
unreadable cookie simply gets a fresh id.
"""

import secrets

from flask import Flask, current_app, g, request
from itsdangerous import BadSignature, URLSafeSerializer

COOKIE_NAME = "uid"


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.secret_key, salt="user-id")


def current_user_id() -> str:
    if "user_id" not in g:
        try:
            g.user_id = _serializer().loads(request.cookies.get(COOKIE_NAME, ""))
        except BadSignature:
            g.user_id = secrets.token_urlsafe(16)
            g.new_user_id = True
    return g.user_id


def install_users(app: Flask) -> None:
    @app.after_request
    def set_user_cookie(response):
        if g.get("new_user_id"):
            response.set_cookie(
                COOKIE_NAME,
                _serializer().dumps(g.user_id),
                max_age=365 * 24 * 3600,
                httponly=True,
                samesite="Lax",
                secure=current_app.config["SESSION_COOKIE_SECURE"],
            )
        return response
