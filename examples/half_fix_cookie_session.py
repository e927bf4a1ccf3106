"""Half-fix 7: per-user state in Flask's default session, a signed cookie.

Moving a user's cart out of a global and into `session` fixes the leak
between users: the data now travels in each user's own cookie, signed so
they cannot forge it. But the cookie is the state, and the browser holds it.
Two requests from one browser at once (two tabs, two clicks, parallel
fetches) both carry the same cookie; the server builds two new cookies, each
from the old cart plus one item, and the browser keeps whichever response
arrives last.

The proof: one cookie jar shared by two tabs, on the threaded dev server.
Both add an item at the same moment; each handler waits for the other to
have read the cart (a barrier stands in for the work in between), so both
requests are certain to have carried the same cookie. A run:

    tab 1 adds 'book' -> cart ['book']
    tab 2 adds 'pen'  -> cart ['pen']
    the cart, read back: ['pen']     (or ['book']: whichever answered last)

No server setting fixes this: the server never sees the two carts together.
The real fix keeps the cart on the server, keyed by the user, and appends in
one atomic step (rows in fixed_db, a list in fixed_cache); the cookie then
carries only the user's id.
"""

import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass

import requests
from flask import Flask, request, session

from examples.servers import dev_server

LABEL = "still broken"
ITEMS = ["book", "pen"]


def create_app(between_read_and_write: Callable[[], None]) -> Flask:
    app = Flask(__name__)
    app.secret_key = secrets.token_hex(32)  # one key for the app's whole life

    @app.post("/cart")
    def add_to_cart():
        cart = session.get("cart", [])
        between_read_and_write()
        session["cart"] = [*cart, request.json["item"]]
        return {"cart": session["cart"]}

    @app.get("/cart")
    def show_cart():
        return {"cart": session.get("cart", [])}

    return app


@dataclass
class Finding:
    answered: list[list[str]]  # what each tab's response said the cart was
    final: list[str]  # the cart the browser is left with

    @property
    def holds(self) -> bool:
        each_right = sorted(self.answered) == [[item] for item in sorted(ITEMS)]
        return each_right and self.final in self.answered

    def summary(self) -> str:
        return (
            f"two tabs of one browser added {' and '.join(map(repr, ITEMS))} at once; the "
            f"responses said {' and '.join(map(str, self.answered))}; the cookie jar "
            f"now holds {self.final}"
        )


def prove() -> Finding:
    both_read = threading.Barrier(len(ITEMS), timeout=5)
    with dev_server(create_app(both_read.wait)) as url:
        browser = requests.Session()
        answered: list[list[str]] = []

        def tab(item: str) -> None:
            with requests.Session() as tab_session:
                tab_session.cookies = browser.cookies  # one browser, one cookie jar
                response = tab_session.post(url + "/cart", json={"item": item}, timeout=10)
                answered.append(response.json()["cart"])

        tabs = [threading.Thread(target=tab, args=(item,)) for item in ITEMS]
        for thread in tabs:
            thread.start()
        for thread in tabs:
            thread.join(timeout=15)
        final = browser.get(url + "/cart", timeout=5).json()["cart"]
        browser.close()
    return Finding(answered, final)
