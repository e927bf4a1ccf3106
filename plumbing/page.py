"""A page for people: every app answers GET / with it, from one identical line.

    bp.get("/")(visits_page)  # the page for people (plumbing/page.py)

The page (plumbing/visits.html) is static: its script calls the app's own
JSON routes with fetch, so what it shows is what the HTTP contract answers:
the visits of the user the browser's cookie names, and an "add" button per
article that sends POST /visits. Two browsers are two users; on
broken_global one sees the other's visits (tests/test_browser.py). It sets
the user cookie, storing nothing: the identity a write with an
Idempotency-Key needs (plumbing/idempotency.py).
"""

from pathlib import Path

from flask import Response

from plumbing.users import current_user_id

PAGE = Path(__file__).with_name("visits.html")


def visits_page() -> Response:
    current_user_id()  # a new user's cookie, on first contact
    return Response(PAGE.read_text(encoding="utf-8"), mimetype="text/html")
