"""An ORM session made once at import: one failed insert breaks a worker until
a restart, and one request's rollback takes another's order with it.

A SQLAlchemy `Session` is a unit of work for one request: it holds the
transaction and every object added since its last commit or rollback. Made
once at import and used by every request of the worker, it keeps both:

- a request on worker A inserts a product that already exists: the flush
  fails (IntegrityError) and the session's transaction is rolled back, but
  the session waits for someone to call `rollback()`. Nobody does, so every
  later request on A fails with PendingRollbackError; worker B answers;
- two requests on threads of one worker: an order added while its payment is
  being confirmed, and an order whose payment is declined, rolled back. The
  rollback drops every object added to the session, so the first order is
  gone; its commit then commits nothing, and it answers 201.

    python -m gunicorn --workers 2 --threads 4 examples.orm_session_made_once:app

A run: A answers 500 (PendingRollbackError) to 3 reads of a product that B
serves; the order answered 201 is not in the table. With Flask-SQLAlchemy's
`db.session`, a session per request removed at teardown: the failed insert
fails alone, A serves the product, the order is in the table.
"""

import os
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests
from flask import Flask, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from examples.servers import Gunicorn, at_once, stamp_worker, worker_of

LABEL = "proven"
HOLD_SECONDS = 10.0  # how long a held payment waits for the proof to release it
PRICE = 10
READS = 3


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Product(db.Model):
    name: Mapped[str] = mapped_column(primary_key=True)
    price: Mapped[int]


class Order(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    item: Mapped[str]


def database_uri() -> str:
    path = os.environ.get("SHOP_DB")  # unset where the module is only imported
    return f"sqlite:///{path}" if path else "sqlite://"


def wait_for_payment_answer() -> None:
    """The payment provider's answer, slow: in the proof, until it is released."""
    hold = Path(os.environ["HOLD_DIR"])
    (hold / "waiting").touch()  # the order is added to the session, not yet committed
    deadline = time.monotonic() + HOLD_SECONDS
    while not (hold / "release").exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def add_routes(app: Flask, session: Callable[[], Session]) -> None:
    """The routes, each reaching its session through a function: the broken app
    hands out the one made at import, the fixed one Flask-SQLAlchemy's."""

    @app.get("/products/<name>")
    def show_product(name: str):
        product = session().scalars(select(Product).where(Product.name == name)).one()
        return {"name": product.name, "price": product.price}

    @app.post("/products")
    def add_product():
        session().add(Product(name=request.json["name"], price=request.json["price"]))
        session().commit()  # a name already taken fails here
        return {"added": request.json["name"]}, 201

    @app.post("/orders")
    def place_order():
        item = request.json["item"]
        session().add(Order(item=item))
        if request.json.get("declined"):
            session().rollback()
            return {"error": "payment declined", "item": item}, 402
        wait_for_payment_answer()
        session().commit()
        return {"placed": item}, 201

    @app.errorhandler(SQLAlchemyError)
    def database_error(error: SQLAlchemyError):
        return {"error": type(error).__name__}, 500


def configured(app: Flask, uri: str | None = None) -> Flask:
    app.config["SQLALCHEMY_DATABASE_URI"] = uri or database_uri()
    db.init_app(app)
    return app


# Made once, at import: one session for every request of the worker, as
# `session = sessionmaker(bind=engine)()` at module level would be.
app = configured(stamp_worker(Flask(__name__)))
with app.app_context():
    session = Session(db.engine)  # the engine is safe to share; this is not
add_routes(app, lambda: session)


def create_fixed_app() -> Flask:
    """The fix: Flask-SQLAlchemy's db.session, a session for each request's
    application context, removed when it is torn down."""
    fixed = configured(stamp_worker(Flask(__name__)))
    add_routes(fixed, lambda: db.session)
    return fixed


def make_database(path: Path) -> None:
    """The schema and a product, made once before the workers start."""
    maker = configured(Flask(__name__), f"sqlite:///{path}")
    with maker.app_context():
        db.create_all()
        db.session.add(Product(name="tea", price=PRICE))
        db.session.commit()
        db.engine.dispose()


def orders_in_table(path: Path) -> list[str]:
    """The orders, read from the file, not through the app."""
    connection = sqlite3.connect(path)
    try:
        return [item for (item,) in connection.execute('SELECT item FROM "order"')]
    finally:
        connection.close()


@dataclass
class Run:
    workers: tuple[int, int]  # (A, B)
    duplicate: tuple[int, str]  # A's answer to a product added twice: (status, error)
    on_a: list[tuple[int, int, str]]  # A's answers to reads then: (worker, status, error or price)
    on_b: tuple[int, int, str]  # B's answer to the same read
    placed: int  # the status the held order was answered with
    declined: int  # the status the declined order was answered with
    orders: list[str]  # the table afterwards

    @property
    def answered_on_a(self) -> bool:
        a, b = self.workers
        return {worker for worker, _, _ in self.on_a} == {a} and self.on_b[0] == b


def orders_on_one_worker(url: str, hold: Path) -> tuple[int, int]:
    """An order held while its payment is confirmed, and meanwhile, on another
    thread of the same worker, an order declined and rolled back; then the
    first is released."""

    def post(body: dict) -> int:
        return requests.post(url + "/orders", json=body, timeout=HOLD_SECONDS + 5).status_code

    def declined_meanwhile() -> int:
        deadline = time.monotonic() + HOLD_SECONDS
        while not (hold / "waiting").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            return post({"item": "tv", "declined": True})
        finally:
            (hold / "release").touch()

    placed, declined = at_once(lambda: post({"item": "tea"}), declined_meanwhile)
    return placed, declined


def read(url: str) -> tuple[int, int, str]:
    """The worker that answered a read of tea, the status, and the price or the error."""
    response = requests.get(url + "/products/tea", timeout=5)
    body = response.json()
    return worker_of(response), response.status_code, str(body.get("price", body.get("error")))


def run(target: str) -> Run:
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        make_database(folder / "shop.db")
        env = {"SHOP_DB": str(folder / "shop.db"), "HOLD_DIR": directory}
        with Gunicorn(target, workers=2, threads=4, env=env) as server:
            a, b = server.worker_pids
            with server.only(b):
                placed, declined = orders_on_one_worker(server.url, folder)
            with server.only(a):
                added = requests.post(
                    server.url + "/products", json={"name": "tea", "price": PRICE}, timeout=5
                )
                on_a = [read(server.url) for _ in range(READS)]
            with server.only(b):
                on_b = read(server.url)
        duplicate = (added.status_code, added.json().get("error", ""))
        orders = orders_in_table(folder / "shop.db")
        return Run((a, b), duplicate, on_a, on_b, placed, declined, orders)


@dataclass
class Finding:
    made_once: Run
    per_request: Run

    @property
    def holds(self) -> bool:
        broken, fixed = self.made_once, self.per_request
        served = (200, str(PRICE))
        return (
            all(run.answered_on_a for run in (broken, fixed))
            and broken.duplicate == fixed.duplicate == (500, "IntegrityError")
            and {answer[1:] for answer in broken.on_a} == {(500, "PendingRollbackError")}
            and broken.on_b[1:] == served
            and {answer[1:] for answer in fixed.on_a} == {served}
            and (broken.placed, broken.declined) == (fixed.placed, fixed.declined) == (201, 402)
            and broken.orders == []
            and fixed.orders == ["tea"]
        )

    def summary(self) -> str:
        def describe(run: Run) -> str:
            answers = " and ".join(
                dict.fromkeys(f"{status} {what}" for _, status, what in run.on_a)
            )
            return (
                f"a product added twice on A failed ({run.duplicate[0]} {run.duplicate[1]}), "
                f"then A answered {READS} reads of it with {answers} "
                f"and B {run.on_b[1]} {run.on_b[2]}; "
                f"an order answered {run.placed} while another thread's was declined "
                f"({run.declined}): orders in the table {run.orders}"
            )

        return (
            f"2 workers x 4 threads, a Session made at import: {describe(self.made_once)}; "
            f"Flask-SQLAlchemy's db.session: {describe(self.per_request)}"
        )


def prove() -> Finding:
    this = "examples.orm_session_made_once"
    made_once, per_request = at_once(
        lambda: run(f"{this}:app"), lambda: run(f"{this}:create_fixed_app()")
    )
    return Finding(made_once, per_request)
