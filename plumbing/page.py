"""A page for people: every app answers GET / with it, from one identical line.

    bp.get("/")(visits_page)  # the page for people (plumbing/page.py)

The page (plumbing/visits.html) is static: its script calls the app's own
JSON routes with fetch, so what it shows is what the HTTP contract answers:
the visits of the user the browser's cookie names, and an "add" button per
article that sends POST /visits. Two browsers are two users; on
broken_global one sees the other's visits (tests/test_browser.py).
"""

from pathlib import Path

from flask import Response

PAGE = Path(__file__).with_name("visits.html")


def visits_page() -> Response:
    return Response(PAGE.read_text(encoding="utf-8"), mimetype="text/html")
