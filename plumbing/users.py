"""Who is calling: a signed user-id cookie, set the first time a route asks.

The cookie holds a random id, never the user's data, and is signed with the
app's secret key so nobody can pick another user's id. A missing, tampered or
unreadable cookie simply gets a fresh id, always random.

known_user_id() is who the cookie names, or None: an Idempotency-Key is
looked up only for a user who existed before the request
(plumbing/idempotency.py), never for one the request would create.
"""

import secrets

from flask import Flask, current_app, g, request
from itsdangerous import BadSignature, URLSafeSerializer

COOKIE_NAME = "uid"


def _serializer() -> URLSafeSerializer:
    # Signs with the current key; reads cookies signed with a fallback too.
    keys = [*(current_app.config.get("SECRET_KEY_FALLBACKS") or []), current_app.secret_key]
    return URLSafeSerializer(keys, salt="user-id")


def known_user_id() -> str | None:
    """The id the request's cookie names, if it is valid; never a new one."""
    try:
        return _serializer().loads(request.cookies.get(COOKIE_NAME, ""))
    except BadSignature:
        return None


def current_user_id() -> str:
    """The caller's id; a new random one, sent as a cookie, if it has none."""
    if "user_id" not in g:
        g.user_id = known_user_id()
        if g.user_id is None:
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
