"""State that rides on an object made once: a client's cookies, a connection's
transaction, a thread-local.

No global variable holds a user's data here, yet one request's state reaches
another, because an object made once per process and used by every request
keeps some between requests:

- a `requests.Session` made at import keeps the cookies a partner API set for
  one user, and sends them with the next user's calls: bob is shown ann's
  account;
- a database connection made at import (`check_same_thread=False`) is one
  transaction for every thread: a request whose payment is declined rolls
  back, but another request's commit has already committed its order;
- a `threading.local` set by one request is still set when the thread serves
  the next one: a visitor who is not logged in is greeted as the last user.

    python -m gunicorn --workers 1 --threads 4 examples.object_made_once_carries_state:app

A run: bob is shown ann's partner account; the declined order is in the
table; a visitor who is not logged in, served by a thread that served ann, is
greeted 'Hello, ann!'. Made per request, on `g`: bob's account, the declined
order not in the table, 'Hello, guest!'.

Safe to share are objects that are thread-safe and keep nothing between
requests (an engine or a connection pool, a client without a cookie jar,
app.config); anything else is made per request, on `g`.
"""

import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests
from flask import Flask, g, request

from examples.servers import Gunicorn, at_once, dev_server, stamp_worker

LABEL = "proven"
HOLD_SECONDS = 10.0  # how long a held request waits for the proof to release it
ANN_REQUESTS, GUEST_TRIES = 8, 20
LOCK_WINDOW_SECONDS = 1.5  # an order not answered by then waits for the held one's lock


def wait_for_payment_answer() -> None:
    """The payment provider's answer, slow: in the proof, until it is released."""
    hold = Path(os.environ["HOLD_DIR"])
    (hold / "waiting").touch()  # the order is inserted, not yet committed
    deadline = time.monotonic() + HOLD_SECONDS
    while not (hold / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def open_orders_db() -> sqlite3.Connection:
    path = os.environ.get("ORDERS_DB", ":memory:")  # unset where the module is only imported
    db = sqlite3.connect(path, check_same_thread=False, timeout=5)
    db.execute("CREATE TABLE IF NOT EXISTS orders (item TEXT NOT NULL)")
    db.commit()
    return db


def add_routes(
    app: Flask,
    partner: Callable[[], requests.Session],
    db: Callable[[], sqlite3.Connection],
    user: Callable[[], str | None],
) -> None:
    """The three routes, each reaching its object through a function: the
    broken app hands out the one made at import, the fixed one a new one per
    request."""

    @app.get("/partner/account")
    def partner_account():
        me = request.headers["X-User"]
        answer = partner().get(
            os.environ["PARTNER_URL"] + "/me", headers={"Authorization": f"Bearer {me}"}, timeout=5
        )
        return {"user": me, "partner_account": answer.json()["user"]}

    @app.post("/orders")
    def place_order():
        item, declined = request.json["item"], request.json.get("declined", False)
        db().execute("INSERT INTO orders (item) VALUES (?)", (item,))
        if declined:
            wait_for_payment_answer()
            db().rollback()
            return {"error": "payment declined", "item": item}, 402
        db().commit()
        return {"placed": item}, 201

    @app.get("/orders")
    def list_orders():
        return {"orders": [item for (item,) in db().execute("SELECT item FROM orders")]}

    @app.get("/greeting")
    def greeting():
        return {"greeting": f"Hello, {user() or 'guest'}!"}


# Made once, at import: one of each for every request of the worker.
app = stamp_worker(Flask(__name__))
partner_session = requests.Session()  # keeps every cookie it is sent
orders_db = open_orders_db()  # one connection: one transaction for all threads
current = threading.local()  # one per thread, and a thread serves request after request


@app.before_request
def remember_user():
    if name := request.headers.get("X-User"):  # only when someone is logged in
        current.user = name


add_routes(app, lambda: partner_session, lambda: orders_db, lambda: getattr(current, "user", None))


def create_fixed_app() -> Flask:
    """The fix: the same routes, each object made per request, on g."""
    fixed = stamp_worker(Flask(__name__))
    open_orders_db().close()  # the table, made once

    @fixed.before_request
    def per_request():
        g.user = request.headers.get("X-User")

    def partner() -> requests.Session:
        if "partner" not in g:
            g.partner = requests.Session()
        return g.partner

    def db() -> sqlite3.Connection:
        if "db" not in g:
            g.db = sqlite3.connect(os.environ["ORDERS_DB"], timeout=5)
        return g.db

    @fixed.teardown_appcontext
    def close(error: BaseException | None) -> None:
        for name in ("partner", "db"):
            if (resource := g.pop(name, None)) is not None:
                resource.close()  # an uncommitted transaction is rolled back

    add_routes(fixed, partner, db, lambda: g.user)
    return fixed


def create_partner_api() -> Flask:
    """A partner's API that, like many, starts a session for a token and
    prefers the session once it has one."""
    partner = Flask(__name__)

    @partner.get("/me")
    def me():
        if user := request.cookies.get("partner_session"):
            return {"user": user}
        user = request.headers["Authorization"].removeprefix("Bearer ")
        response = partner.make_response({"user": user})
        response.set_cookie("partner_session", user)
        return response

    return partner


@dataclass
class Run:
    partner_accounts: dict[str, str]  # user -> the partner account they were shown
    declined: int  # the status the declined order was answered with
    placed_first: bool  # the other order was answered while the declined one was held
    orders: list[str]  # the table afterwards
    ann_threads: set[str]  # the threads (X-Worker) that greeted ann, logged in
    guests: list[tuple[str, str]]  # then a visitor not logged in: (thread, greeting)

    @property
    def on_ann_threads(self) -> list[str]:
        """The greetings the visitor got from a thread that had served ann."""
        return [greeting for thread, greeting in self.guests if thread in self.ann_threads]


def greetings(url: str) -> tuple[set[str], list[tuple[str, str]]]:
    """ann asks to be greeted from several requests at once, so that several
    threads of the pool serve her; then a visitor who is not logged in asks,
    until a thread that served ann answers."""

    def greet(headers: dict[str, str]) -> requests.Response:
        response = requests.get(url + "/greeting", headers=headers, timeout=5)
        response.raise_for_status()
        return response

    as_ann = at_once(*[lambda: greet({"X-User": "ann"})] * ANN_REQUESTS)
    ann_threads = {response.headers["X-Worker"] for response in as_ann}
    guests = []
    for _ in range(GUEST_TRIES):
        response = greet({})
        guests.append((response.headers["X-Worker"], response.json()["greeting"]))
        if response.headers["X-Worker"] in ann_threads:
            break
    return ann_threads, guests


def held_order(url: str, hold: Path) -> tuple[int, bool, list[str]]:
    """A declined order held after its INSERT while another order is placed;
    then released. Whether the other order was answered before the release:
    on a connection of its own it waits for the held transaction's lock
    (SQLite has one writer at a time), so the release comes after a window."""

    def declined() -> int:
        body = {"item": "declined-tv", "declined": True}
        return requests.post(url + "/orders", json=body, timeout=HOLD_SECONDS + 5).status_code

    def placed_meanwhile() -> bool:
        deadline = time.monotonic() + HOLD_SECONDS
        while not (hold / "waiting").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        with ThreadPoolExecutor(max_workers=1) as pool:
            placed = pool.submit(
                requests.post, url + "/orders", json={"item": "tea"}, timeout=HOLD_SECONDS
            )
            try:
                placed.result(timeout=LOCK_WINDOW_SECONDS).raise_for_status()
                answered_first = True
            except TimeoutError:  # waiting for the held transaction's lock
                answered_first = False
            (hold / "release").touch()
            placed.result().raise_for_status()
        return answered_first

    declined_status, answered_first = at_once(declined, placed_meanwhile)
    orders = requests.get(url + "/orders", timeout=5).json()["orders"]
    return declined_status, answered_first, orders


def run(target: str) -> Run:
    with tempfile.TemporaryDirectory() as directory, serving_partner() as partner_url:
        folder = Path(directory)
        env = {"ORDERS_DB": str(folder / "orders.db"), "HOLD_DIR": directory}
        env["PARTNER_URL"] = partner_url
        with Gunicorn(target, workers=1, threads=4, env=env) as server:
            ann_threads, guests = greetings(server.url)
            accounts = {
                user: requests.get(
                    server.url + "/partner/account", headers={"X-User": user}, timeout=5
                ).json()["partner_account"]
                for user in ("ann", "bob")
            }
            declined, answered_first, orders = held_order(server.url, folder)
        return Run(accounts, declined, answered_first, orders, ann_threads, guests)


@contextmanager
def serving_partner() -> Iterator[str]:
    with dev_server(create_partner_api()) as url:
        yield url


@dataclass
class Finding:
    made_once: Run
    per_request: Run

    @property
    def holds(self) -> bool:
        broken, fixed = self.made_once, self.per_request
        return (
            broken.partner_accounts == {"ann": "ann", "bob": "ann"}
            and broken.declined == 402
            and broken.placed_first  # committed while the declined order was held
            and sorted(broken.orders) == ["declined-tv", "tea"]
            and broken.on_ann_threads
            and set(broken.on_ann_threads) == {"Hello, ann!"}
            and fixed.partner_accounts == {"ann": "ann", "bob": "bob"}
            and fixed.declined == 402
            and fixed.orders == ["tea"]
            and fixed.on_ann_threads
            and set(fixed.on_ann_threads) == {"Hello, guest!"}
        )

    def summary(self) -> str:
        def describe(run: Run) -> str:
            kept = "kept" if "declined-tv" in run.orders else "not kept"
            meanwhile = "committed meanwhile" if run.placed_first else "waited for its lock"
            return (
                f"bob shown the partner account of {run.partner_accounts['bob']!r}, "
                f"a declined order ({run.declined}) {kept} in the table {run.orders} "
                f"(the other order {meanwhile}), "
                f"a visitor not logged in greeted {', '.join(map(repr, run.on_ann_threads))} by "
                f"a thread that had served ann"
            )

        return (
            f"1 worker x 4 threads, objects made at import: {describe(self.made_once)}; "
            f"made per request on g: {describe(self.per_request)}"
        )


def prove() -> Finding:
    this = "examples.object_made_once_carries_state"
    made_once, per_request = at_once(
        lambda: run(f"{this}:app"), lambda: run(f"{this}:create_fixed_app()")
    )
    return Finding(made_once, per_request)
