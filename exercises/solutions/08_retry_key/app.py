"""Exercise 8: a write retried after its store timed out.

Orders: POST /orders with {"item": "tea"} places an order and answers the
caller's orders, GET /orders lists them. A user is one browser, given a
random id in a cookie on its first visit; each user's orders are a list in
Valkey (a Redis-protocol server) at STORE_URL. When the store stalls, the
order reaches it but its answer comes later than the client waits
(socket_timeout), and the app tries again. Each order carries a key made
once, before the first try; one Lua script, which the store runs as one
step, sets the key only if it is new (SET NX) and pushes the order only
then, so a second try with the same key changes nothing. A browser that
retries can send its own key in an Idempotency-Key header.

Users report: "I ordered once and was charged twice."

Run it by hand from this folder, with a Valkey or Redis server running:
STORE_URL=redis://127.0.0.1:6379/0 flask --app app run
"""

import os
import secrets
import time
import uuid

import redis
from flask import Flask, abort, current_app, g, request
from redis.backoff import NoBackoff
from redis.retry import Retry
from werkzeug.exceptions import HTTPException

USER_COOKIE = "uid"
STORE_TIMEOUT_SECONDS = 0.25  # how long one try waits for the store's answer
ATTEMPTS = 5  # tries in all
BACKOFF_SECONDS = 0.1  # before the second try; doubled before each next one
KEY_SECONDS = 24 * 3600  # how long an order's key is kept: longer than any retry
# The order pushed only if its key is new, in one step the store runs alone.
PLACE_ONCE = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then
    redis.call('RPUSH', KEYS[2], ARGV[1])
end
return 1
"""


def orders_key(user_id: str) -> str:
    return f"orders:{user_id}"


def save_order(store: redis.Redis, user_id: str, item: str, order_key: str) -> None:
    place_once = store.register_script(PLACE_ONCE)  # sent by its SHA1, else whole
    place_once(keys=[f"order-key:{order_key}", orders_key(user_id)], args=[item, KEY_SECONDS])


def place_order_retrying(store: redis.Redis, user_id: str, item: str, order_key: str) -> bool:
    """Save the order, trying again after a timeout; False if every try timed out."""
    for attempt in range(ATTEMPTS):
        try:
            save_order(store, user_id, item, order_key)
            return True
        except redis.TimeoutError:
            if attempt + 1 < ATTEMPTS:
                time.sleep(BACKOFF_SECONDS * 2**attempt)
    return False


def users_orders(store: redis.Redis, user_id: str) -> list[str]:
    return store.lrange(orders_key(user_id), 0, -1)


def posted_item() -> str:
    body = request.get_json(silent=True)
    item = body.get("item") if isinstance(body, dict) else None
    if not isinstance(item, str) or not item:
        abort(400, description='send JSON {"item": "<name>"}')
    return item


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 16 * 1024
    # One client per worker process, made here: redis-py's client is
    # thread-safe and connects on first use. Its own retries are off
    # (redis-py retries a timed-out command by default), so that the only
    # retry is the one in place_order_retrying, in sight.
    app.extensions["store"] = redis.Redis.from_url(
        os.environ.get("STORE_URL", "redis://127.0.0.1:6379/0"),
        socket_timeout=STORE_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 0),
        decode_responses=True,
    )

    def store() -> redis.Redis:
        return current_app.extensions["store"]

    @app.before_request
    def identify_user():
        # Who is asking: the id in their cookie, or a new one for a first visit.
        g.user_id = request.cookies.get(USER_COOKIE) or secrets.token_urlsafe(16)

    @app.after_request
    def remember_user(response):
        if request.cookies.get(USER_COOKIE) != g.user_id:
            response.set_cookie(USER_COOKIE, g.user_id, httponly=True, samesite="Lax")
        return response

    @app.post("/orders")
    def place_order():
        item = posted_item()
        # One key for every try of this order; the user's own, if the browser sent one.
        header = request.headers.get("Idempotency-Key")
        order_key = f"{g.user_id}:{header}" if header else uuid.uuid4().hex
        if not place_order_retrying(store(), g.user_id, item, order_key):
            # Never sent again from here: the store may have saved it.
            detail = "the store did not answer in time; the order may or may not have been saved"
            return {"error": "store timed out", "detail": detail, "outcome": "unknown"}, 503
        return {"orders": users_orders(store(), g.user_id)}, 201

    @app.get("/orders")
    def show_orders():
        return {"orders": users_orders(store(), g.user_id)}

    # Not the lesson: an error is a JSON answer, never an HTML page.
    @app.errorhandler(HTTPException)
    def json_error(error: HTTPException):
        return {"error": error.name, "detail": error.description}, error.code

    @app.errorhandler(redis.RedisError)
    def store_error(error: redis.RedisError):
        return {"error": "store unavailable", "detail": f"the store failed: {error}"}, 503

    return app
