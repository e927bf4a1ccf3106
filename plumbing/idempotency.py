"""Idempotency keys, and answers for writes whose outcome is unknown.

A client that gets no answer to a write cannot tell "never applied" from
"applied, and the answer was lost". Re-sending it blindly may apply it twice.
The fixed apps therefore accept an `Idempotency-Key` request header on every
write route (the name of the IETF httpapi draft, "The Idempotency-Key HTTP
Header Field", and of the payment APIs that use it): the store records the
key and the answer in the same atomic step as the write, so the same key
sent again gets the first answer back and changes nothing.

Keys are scoped to the route and the user who sent them, so one user's key
can never replay another user's answer.

The store's failures end as one of three answers (plumbing.http turns them
into JSON with an "outcome" field the harness reads):

    NotApplied      503  the write provably never reached the store: retry
    OutcomeUnknown  503  it may have been applied: retry with the same key
    StoreFull       507  the store refused it for lack of space: nothing was
                         applied, and a retry will fail too until space is freed
"""

import re

from flask import request
from werkzeug.exceptions import BadRequest, HTTPException, ServiceUnavailable

HEADER = "Idempotency-Key"
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


def scoped_key(user_id: str, key: str) -> str:
    """The key as the store records it: the route and the user, then the key."""
    return f"{request.method} {request.path} {user_id} {key}"


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
