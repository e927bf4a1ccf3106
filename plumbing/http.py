"""JSON in, JSON out: errors, input validation and the X-Worker header.

Every error, including 404, 405, 413 and an unexpected 500, is answered as
{"error": ..., "detail": ...}; a traceback never reaches the client.
"""

import logging
import os
import threading
import unicodedata

from flask import Flask, request
from werkzeug.exceptions import (
    BadRequest,
    HTTPException,
    InternalServerError,
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


def install_http(app: Flask) -> None:
    app.register_error_handler(HTTPException, json_error)

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
    return value


def article_from_body() -> str:
    """The "article" field of a JSON object body, validated."""
    if not request.is_json:
        raise UnsupportedMediaType("send a JSON body with Content-Type: application/json")
    body = request.get_json(silent=True)
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
