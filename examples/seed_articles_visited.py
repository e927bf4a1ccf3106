"""The "articles visited" Flask-Session example, repaired.

The snippet keeps the list of articles a user has read in a server-side
session (Flask-Session), which is the right place for it. As written it does
not work:

1. The view that records a visit has no route, so no request ever reaches it.
2. Give it one, and it appends to the list inside the session in place. A
   session notices assignments (`session[key] = value`), not changes made
   inside a value, so it does not know it changed. With Flask-Session's
   defaults the append survives anyway, only because every request saves the
   whole session back (SESSION_REFRESH_EACH_REQUEST), the very setting that
   half_fix_session_defaults shows erasing writes. Turn that off and every
   in-place append is silently dropped.
3. Its index page starts a new, empty list on every visit.

The repair: a route, a new list assigned rather than appended in place, and
an index that leaves the list alone. A run:

    original: /articles/a1 -> 404 (no route)
    routed, in-place append, defaults:     ['a1', 'a2', 'a3']
    routed, in-place append, refresh off:  []
    original, after the index again:       []
    repaired, refresh off:                 ['a1', 'a2', 'a3'], and after the index too
"""

import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import requests
from cachelib.file import FileSystemCache
from flask import Flask, session
from flask_session import Session

from examples.servers import dev_server

LABEL = "proven"
ARTICLES = ["a1", "a2", "a3"]


def session_app(store_dir: str, refresh_each_request: bool) -> Flask:
    """A Flask app with server-side sessions in files under store_dir."""
    app = Flask(__name__)
    app.config.update(
        SESSION_TYPE="cachelib",
        SESSION_CACHELIB=FileSystemCache(store_dir, mode=0o600),
        SESSION_REFRESH_EACH_REQUEST=refresh_each_request,
    )
    Session(app)

    @app.get("/visited")
    def visited():
        return {"articles_visited": session.get("articles_visited", [])}

    return app


def original_app(store_dir: str, *, routed: bool, refresh_each_request: bool = True) -> Flask:
    """The snippet's logic; routed=False leaves the recording view without a route."""
    app = session_app(store_dir, refresh_each_request)

    @app.get("/")
    def index():
        session["articles_visited"] = []  # a new list on every visit of the index
        return {"articles_visited": session["articles_visited"]}

    def headlines(article_id: str):
        # In place: the session is not told, so it is saved only if saved anyway.
        session["articles_visited"].append(article_id)
        return {"articles_visited": session["articles_visited"]}

    if routed:
        app.add_url_rule("/articles/<article_id>", view_func=headlines)
    return app


def repaired_app(store_dir: str) -> Flask:
    # Only changed sessions are saved: see half_fix_session_defaults for why.
    app = session_app(store_dir, refresh_each_request=False)

    @app.get("/")
    def index():
        return {"articles_visited": session.get("articles_visited", [])}

    @app.get("/articles/<article_id>")
    def headlines(article_id: str):
        # Assigning a new list marks the session modified, so it is saved.
        session["articles_visited"] = [*session.get("articles_visited", []), article_id]
        return {"articles_visited": session["articles_visited"]}

    return app


@dataclass
class Reading:
    statuses: list[int]  # of the article visits
    visited: list[str]  # what /visited said after them
    after_index: list[str]  # and after opening the index once more


def read_articles(make_app: Callable[[str], Flask]) -> Reading:
    """One browser: the index, three articles, the list, the index, the list."""
    with tempfile.TemporaryDirectory() as store_dir, dev_server(make_app(store_dir)) as url:
        browser = requests.Session()
        browser.get(url + "/", timeout=5)
        statuses = [browser.get(f"{url}/articles/{a}", timeout=5).status_code for a in ARTICLES]
        visited = browser.get(url + "/visited", timeout=5).json()["articles_visited"]
        browser.get(url + "/", timeout=5)
        after_index = browser.get(url + "/visited", timeout=5).json()["articles_visited"]
        browser.close()
    return Reading(statuses, visited, after_index)


@dataclass
class Finding:
    unrouted: Reading
    in_place_defaults: Reading
    in_place_refresh_off: Reading
    repaired: Reading

    @property
    def holds(self) -> bool:
        return (
            set(self.unrouted.statuses) == {404}
            and self.in_place_defaults.visited == ARTICLES
            and self.in_place_defaults.after_index == []
            and self.in_place_refresh_off.visited == []
            and self.repaired.visited == self.repaired.after_index == ARTICLES
        )

    def summary(self) -> str:
        n = len(ARTICLES)
        return (
            f"the original's view answers HTTP {self.unrouted.statuses[0]} (no route); routed, "
            f"its in-place append keeps {len(self.in_place_defaults.visited)} of {n} visits "
            f"with the defaults (every request rewrites the session), "
            f"{len(self.in_place_refresh_off.visited)} of {n} without, and "
            f"{len(self.in_place_defaults.after_index)} after the index again; repaired: "
            f"{len(self.repaired.visited)} of {n}, {len(self.repaired.after_index)} after the index"
        )


def prove() -> Finding:
    return Finding(
        unrouted=read_articles(lambda d: original_app(d, routed=False)),
        in_place_defaults=read_articles(lambda d: original_app(d, routed=True)),
        in_place_refresh_off=read_articles(
            lambda d: original_app(d, routed=True, refresh_each_request=False)
        ),
        repaired=read_articles(repaired_app),
    )
