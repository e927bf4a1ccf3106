"""The Idempotency-Key protocol, once for every fixed app, and the answers
for writes whose outcome is unknown.

A client that gets no answer to a write cannot tell "never applied" from
"applied, and the answer was lost"; re-sending it blindly may apply it
twice. So every fixed app's write routes carry @idempotent: the header of
the IETF httpapi draft, recorded with the answer in the same atomic step as
the write (each store's KeyStore), so the same key again gets the first
answer back and changes nothing. A key is never a credential: a keyed write
needs an identity the client already holds (IdentityRequired, 428, without
one), the key is looked up only within that identity and the route, a
replay carries no cookie, and the same key with another request is a 422
(KeyReused). A store's failure ends as one answer, JSON with an "outcome":

    NotApplied      503  the write provably never reached the store: retry
    OutcomeUnknown  503  it may have been applied: retry with the same key
    StoreFull       507  refused for lack of space: nothing was applied, and
                         a retry fails too until space is freed
"""

import functools
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from flask import Response, current_app, request
from werkzeug.exceptions import BadRequest, HTTPException, ServiceUnavailable

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# How long a key is remembered: the IETF draft leaves it to the server, and
# payment APIs keep keys for 24 hours. A client retries within seconds to
# hours (an outage, a phone offline overnight); after a day it is forgotten.
TTL_SECONDS = 24 * 60 * 60
MAX_KEY_LENGTH = 128
# Visible ASCII: a UUID, as the draft recommends, or any token a client makes.
VALID_KEY = re.compile(rf"[\x21-\x7e]{{1,{MAX_KEY_LENGTH}}}")


def idempotency_key() -> str | None:
    """The request's Idempotency-Key header, validated; None when absent.

    Raises BadRequest (400) for an empty, over-long or non-ASCII key."""
    raw = request.headers.get(HEADER)
    if raw is None:
        return None
    if not VALID_KEY.fullmatch(raw):
        raise BadRequest(
            f"the {HEADER} header must be 1 to {MAX_KEY_LENGTH} visible ASCII characters"
        )
    return raw


def scoped_key(identity: str | None, key: str) -> str:
    """The key as the store records it: the route and the user, then the key.

    identity: who the request's cookie names, from before this request; None
    when it names nobody. Raises IdentityRequired (428) then."""
    if identity is None:
        raise IdentityRequired()
    return f"{request.method} {request.path} {identity} {key}"


def fingerprint() -> str:
    """What the key was first sent with: method, path and body, hashed."""
    digest = hashlib.sha256(f"{request.method} {request.path}\n".encode())
    digest.update(request.get_data(cache=True))
    return digest.hexdigest()


def replayed(status: int, body: str, recorded_fingerprint: str) -> Response:
    """The answer recorded with the key, sent again, with no cookie.

    Raises KeyReused (422) if the key was first sent with another request."""
    if recorded_fingerprint != fingerprint():
        raise KeyReused()
    response = current_app.response_class(body, status, mimetype="application/json")
    response.headers[REPLAYED_HEADER] = "true"
    return response


class IdentityRequired(HTTPException):
    """428: a precondition of the request is missing, and the request cannot
    succeed until the client sends it (RFC 6585). Not 400: the key is well
    formed; not 401: there is no authentication scheme to name."""

    code = 428
    name = "Precondition Required"
    description = (
        f"a write with an {HEADER} needs the cookie that names you, and this request "
        "has none: make a first request without the key (GET /) to get your cookie, "
        "then send the write with the cookie and the key. Nothing was written"
    )


class KeyReused(HTTPException):
    code = 422
    name = "Unprocessable Content"
    description = (
        f"this {HEADER} was first used with another request (method, path or body); "
        "nothing was applied. A key names one request: make a new key for a new one"
    )


class NotApplied(ServiceUnavailable):
    outcome = "not applied"
    description = "the store is unavailable and nothing was written: retry"


class OutcomeUnknown(ServiceUnavailable):
    outcome = "unknown"
    description = (
        "the store stopped answering after the write may have reached it: it may or may not "
        f"have been applied. Retry with the same {HEADER} header to apply it at most once; "
        "without one, a retry may apply it twice"
    )


class StoreFull(HTTPException):
    code = 507
    name = "Insufficient Storage"
    outcome = "not applied"
    description = (
        "the store is full and refused the write; nothing was applied, and retrying will "
        "not help until space is freed"
    )


@dataclass(frozen=True)
class KeyedWrite:
    """A write's key as a store records it: `scope` (route, identity, key) is
    what it looks up; `fingerprint` is recorded with the answer."""

    scope: str
    fingerprint: str


class KeyStore(Protocol):
    """What a store supplies to @idempotent: only what must be atomic with its
    own write. Set as app.extensions["idempotency"] by the store's init_app."""

    def identity(self) -> str | None:
        """Who the request's cookie names, from before this request; None if nobody."""

    def write_once(self, view: Callable[[], Response], keyed: KeyedWrite | None) -> Response:
        """Run the view. Without a key, as it is. With one, look keyed.scope up
        and, if it is recorded, return replayed(status, body, fingerprint)
        having written nothing; else run the view and record its answer
        (status, JSON body, keyed.fingerprint) for TTL_SECONDS, in the same
        atomic step as the view's write. A view that raises records nothing.
        Raises NotApplied, OutcomeUnknown or StoreFull when the store fails."""


def idempotent(view: Callable) -> Callable:
    """Make a write route answer once per Idempotency-Key, in any fixed app.

    Without the header the view runs as it is (its store still answers a
    failure with NotApplied, OutcomeUnknown or StoreFull). With it: a key that
    is malformed is a 400, one sent with no identity a 428 (before the view
    runs), and the app's KeyStore runs the view once per (route, identity, key).
    """

    @functools.wraps(view)
    def write(*args: Any, **kwargs: Any) -> Response:
        store: KeyStore = current_app.extensions["idempotency"]
        keyed = None
        if (key := idempotency_key()) is not None:
            keyed = KeyedWrite(scoped_key(store.identity(), key), fingerprint())
        return store.write_once(lambda: current_app.make_response(view(*args, **kwargs)), keyed)

    return write
