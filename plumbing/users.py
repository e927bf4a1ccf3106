"""Who is calling: a signed user-id cookie, set the first time a route asks.

The cookie holds a random id, never the user's data, and is signed with the
app's secret key so nobody can pick another user's id. A missing, tampered or
unreadable cookie simply gets a fresh id.

A new user's first write may carry an Idempotency-Key and get no answer: the
cookie that named the user was lost with it, and the retry, with the same key
and still no cookie, would be a new user whose key the store has never seen,
so the write would be applied again. A new user who sends a key therefore
gets an id derived from it (an HMAC under the secret key): the retry is the
same user, finds its key, and gets the first answer and the cookie back. The
key then works as a credential for the user that request created, which is
why clients must keep keys as private as the cookie (a random UUID per write).
"""

import base64
import hashlib
import hmac
import secrets

from flask import Flask, current_app, g, request
from itsdangerous import BadSignature, URLSafeSerializer

from plumbing.idempotency import idempotency_key

COOKIE_NAME = "uid"


def _serializer() -> URLSafeSerializer:
    # Signs with the current key; reads cookies signed with a fallback too.
    keys = [*(current_app.config.get("SECRET_KEY_FALLBACKS") or []), current_app.secret_key]
    return URLSafeSerializer(keys, salt="user-id")


def new_user_id() -> str:
    """A fresh id: random, or derived from the request's Idempotency-Key."""
    if (key := idempotency_key()) is None:
        return secrets.token_urlsafe(16)
    secret = current_app.secret_key.encode()
    digest = hmac.new(secret, b"new user, idempotency key " + key.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()[:16]).decode().rstrip("=")


def current_user_id() -> str:
    if "user_id" not in g:
        try:
            g.user_id = _serializer().loads(request.cookies.get(COOKIE_NAME, ""))
        except BadSignature:
            g.user_id = new_user_id()
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
