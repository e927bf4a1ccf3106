"""JSON in, JSON out: errors, input validation and the X-Worker header.

Every error, including 404, 405, 413 and an unexpected 500, is answered as
{"error": ..., "detail": ...}; a traceback never reaches the client.
"""

import io
import logging
import os
import threading
import unicodedata

from flask import Flask, current_app, request
from werkzeug.exceptions import (
    BadRequest,
    HTTPException,
    InternalServerError,
    RequestEntityTooLarge,
    ServiceUnavailable,
    UnsupportedMediaType,
)

MAX_FIELD_LENGTH = 64
log = logging.getLogger(__name__)


def worker_id() -> str:
    """Which process and thread answered: the harness groups results by it."""
    return f"{os.getpid()}-{threading.get_native_id()}"


def json_error(error: HTTPException):
    body = {"error": error.name.lower(), "detail": error.description}
    if outcome := getattr(error, "outcome", None):  # a write's fate, when the store failed
        body["outcome"] = outcome
    return body, error.code


def body_within_limit() -> None:
    """Before every view: a body over MAX_CONTENT_LENGTH is a 413 however it is
    framed, and a body whose chunked framing is broken is a 400.

    Flask checks the limit against Content-Length only, and only when a view
    reads the body: a chunked body has no Content-Length, and a view that never
    reads its body never checks it. So a chunked body is read here, at most one
    byte past the limit, and handed on as if it had come with a Content-Length.
    gunicorn's chunked reader raises its framing errors when the body is read
    (InvalidChunkSize, ChunkMissingTerminator: ParseException, and NoMoreData,
    an IOError, in gunicorn/http/errors.py)."""
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    environ = request.environ
    declared = environ.get("CONTENT_LENGTH")
    if declared and declared.isdigit() and int(declared) > limit:
        raise RequestEntityTooLarge(f"the body is over the {limit}-byte limit")
    if "chunked" not in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return
    try:
        body = environ["wsgi.input"].read(limit + 1)
    except Exception:  # the server's own error types; the apps do not import the server
        raise BadRequest("the body's chunked framing is malformed") from None
    if len(body) > limit:
        raise RequestEntityTooLarge(f"the body is over the {limit}-byte limit")
    environ.update(
        {"wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body))},
        HTTP_TRANSFER_ENCODING="",
    )
    environ.pop("wsgi.input_terminated", None)


def install_http(app: Flask) -> None:
    app.register_error_handler(HTTPException, json_error)
    app.before_request(body_within_limit)

    @app.errorhandler(Exception)
    def unexpected_error(error: Exception):
        log.exception("unhandled error in %s %s", request.method, request.path)
        return json_error(InternalServerError("the server failed; see its log"))

    @app.after_request
    def add_worker_header(response):
        response.headers["X-Worker"] = worker_id()
        return response


def unavailable_when(app: Flask, errors: tuple[type[Exception], ...], detail: str) -> None:
    """Answer 503 when a backing server fails, instead of a 500.

    A view's errors reach the handlers registered for their type. The session
    is loaded before the view and saved after it, and Flask hands errors from
    there to the 500 handler only, with the error attached."""

    def backing_server_down(error: Exception):
        log.warning("backing server unavailable: %s", error)
        return json_error(ServiceUnavailable(detail))

    for error in errors:
        app.register_error_handler(error, backing_server_down)

    @app.errorhandler(InternalServerError)
    def failed_outside_a_view(error: InternalServerError):
        if isinstance(error.original_exception, errors):
            return backing_server_down(error.original_exception)
        if isinstance(error.original_exception, HTTPException):  # e.g. OutcomeUnknown on save
            return json_error(error.original_exception)
        return json_error(error)


def checked_text(field: str, value: object) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"'{field}' must be a string, got {type(value).__name__}")
    if not 1 <= len(value) <= MAX_FIELD_LENGTH:
        raise BadRequest(f"'{field}' must be 1 to {MAX_FIELD_LENGTH} characters, got {len(value)}")
    if any(unicodedata.category(char) == "Cc" for char in value):
        raise BadRequest(f"'{field}' must not contain control characters")
    if any(unicodedata.category(char) == "Cs" for char in value):  # "\ud800" in JSON
        raise BadRequest(f"'{field}' must be valid Unicode: it holds a lone surrogate")
    return value


def article_from_body() -> str:
    """The "article" field of a JSON object body, validated."""
    if not request.is_json:
        raise UnsupportedMediaType("send a JSON body with Content-Type: application/json")
    try:
        body = request.get_json(silent=True)
    except RecursionError:  # the parser's limit, not a ValueError: silent does not catch it
        raise BadRequest("the body's JSON is nested too deeply") from None
    if body is None:
        raise BadRequest("the body is not valid JSON")
    if not isinstance(body, dict):
        raise BadRequest(f"the body must be a JSON object, got {type(body).__name__}")
    if "article" not in body:
        raise BadRequest("the field 'article' is required")
    return checked_text("article", body["article"])


def name_from_query() -> str:
    """The "name" query parameter, validated."""
    if "name" not in request.args:
        raise BadRequest("the query parameter 'name' is required")
    return checked_text("name", request.args["name"])
