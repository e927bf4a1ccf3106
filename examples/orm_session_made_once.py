"""An ORM session made once at import: old values on one worker, every request
failing after one error, one request's rollback taking another's order.

A SQLAlchemy `Session` is a unit of work for one request: it holds a
transaction and every object added since its last commit or rollback. Made
once at import and used by every request of the worker, it keeps both:

- under REPEATABLE READ (MySQL's default isolation; here PostgreSQL set to
  it), the transaction begun by worker A's first read is never ended by a
  request that only reads, and goes on reading its snapshot: worker B changes
  a price and commits, and A answers the old price, request after request;
- a request on A inserts a product that already exists: the flush fails
  (IntegrityError) and the session waits for a `rollback()` nobody calls, so
  every later request on A fails with PendingRollbackError; B answers;
- two requests on threads of one worker: an order added while its payment is
  being confirmed, and an order whose payment is declined, rolled back. The
  rollback drops every object added to the session, so the first order is
  gone; its commit then commits nothing, and it answers 201.

    python -m gunicorn --workers 2 --threads 4 examples.orm_session_made_once:app

A run: A answers tea at 10 three times after B set 12 (12 in the table);
A answers 500 (PendingRollbackError) to reads B serves; the order answered
201 is not in the table (SQLite). With Flask-SQLAlchemy's `db.session`, a
session per request removed at teardown: 12 on A, the failed insert fails
alone, the order is in the table.
"""

import os
import sqlite3
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
import requests
from flask import Flask, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from examples.servers import Gunicorn, at_once, stamp_worker, worker_of
from serve.postgres import EmbeddedPostgres

LABEL = "proven"
HOLD_SECONDS = 10.0  # how long a held payment waits for the proof to release it
PRICE, NEW_PRICE = 10, 12
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
    return os.environ.get("SHOP_DATABASE_URL", "sqlite://")  # unset where only imported


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

    @app.post("/products/<name>")
    def set_price(name: str):
        product = session().scalars(select(Product).where(Product.name == name)).one()
        product.price = request.json["price"]
        session().commit()
        return {"name": name, "price": request.json["price"]}

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
    if isolation := os.environ.get("SHOP_ISOLATION"):
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"isolation_level": isolation}
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


def make_database(uri: str) -> None:
    """The schema and a product, made once before the workers start."""
    maker = configured(Flask(__name__), uri)
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
        uri = f"sqlite:///{folder / 'shop.db'}"
        make_database(uri)
        env = {"SHOP_DATABASE_URL": uri, "HOLD_DIR": directory}
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
class StaleRun:
    workers: tuple[int, int]  # (A, B)
    first_on_a: int  # the price A answered before the change
    set_on_b: tuple[int, int]  # (the worker that answered the change, the price it answered)
    on_a: list[tuple[int, int]]  # A's answers after it: (worker, price)
    in_table: int  # the price in the table then, read by a connection of its own

    @property
    def answered_on_a(self) -> bool:
        a, b = self.workers
        return self.set_on_b[0] == b and {worker for worker, _ in self.on_a} == {a}

    @property
    def prices_on_a(self) -> list[int]:
        return [price for _, price in self.on_a]


def stale_reads(target: str, uri: str) -> StaleRun:
    """A reads the price of tea; B changes it and commits; A reads it again."""
    make_database(uri)
    env = {"SHOP_DATABASE_URL": uri, "SHOP_ISOLATION": "REPEATABLE READ"}
    with Gunicorn(target, workers=2, threads=4, env=env) as server:
        a, b = server.worker_pids

        def price() -> tuple[int, int]:
            response = requests.get(server.url + "/products/tea", timeout=5)
            response.raise_for_status()
            return worker_of(response), response.json()["price"]

        with server.only(a):
            _, first = price()
        with server.only(b):
            changed = requests.post(
                server.url + "/products/tea", json={"price": NEW_PRICE}, timeout=5
            )
            changed.raise_for_status()
        with server.only(a):
            on_a = [price() for _ in range(READS)]
            with psycopg.connect(uri.replace("postgresql+psycopg://", "postgresql://", 1)) as own:
                (in_table,) = own.execute("SELECT price FROM product WHERE name = 'tea'").fetchone()
    return StaleRun((a, b), first, (worker_of(changed), changed.json()["price"]), on_a, in_table)


@dataclass
class Finding:
    made_once: Run
    per_request: Run
    stale_made_once: StaleRun
    stale_per_request: StaleRun

    @property
    def holds(self) -> bool:
        broken, fixed = self.made_once, self.per_request
        served = (200, str(PRICE))
        stale, fresh = self.stale_made_once, self.stale_per_request
        return (
            all(run.answered_on_a for run in (broken, fixed, stale, fresh))
            and all(run.first_on_a == PRICE for run in (stale, fresh))
            and all(run.set_on_b[1] == run.in_table == NEW_PRICE for run in (stale, fresh))
            and stale.prices_on_a == [PRICE] * READS
            and fresh.prices_on_a == [NEW_PRICE] * READS
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

        def stale(run: StaleRun) -> str:
            return (
                f"A answered tea at {run.prices_on_a} after B set {run.set_on_b[1]} "
                f"({run.in_table} in the table)"
            )

        return (
            f"2 workers x 4 threads, a Session made at import: "
            f"(PostgreSQL, REPEATABLE READ) {stale(self.stale_made_once)}; "
            f"(SQLite) {describe(self.made_once)}; "
            f"Flask-SQLAlchemy's db.session: {stale(self.stale_per_request)}; "
            f"{describe(self.per_request)}"
        )


def on_postgres(made_once: str, per_request: str) -> tuple[StaleRun, StaleRun]:
    """The stale reads of both apps, each on a database of its own on one
    embedded PostgreSQL server."""
    with tempfile.TemporaryDirectory() as directory:
        server = EmbeddedPostgres(Path(directory) / "postgres")
        try:
            server.start()

            def uri(name: str) -> str:
                url = server.create_database(name)
                return url.replace("postgresql://", "postgresql+psycopg://", 1)

            broken, fixed = uri("made_once"), uri("per_request")
            return tuple(
                at_once(
                    lambda: stale_reads(made_once, broken), lambda: stale_reads(per_request, fixed)
                )
            )
        finally:
            server.remove()  # stopped by PID, its cluster deleted


def prove() -> Finding:
    this = "examples.orm_session_made_once"
    made_once, per_request = f"{this}:app", f"{this}:create_fixed_app()"
    (broken, fixed), (stale, fresh) = at_once(
        lambda: at_once(lambda: run(made_once), lambda: run(per_request)),
        lambda: on_postgres(made_once, per_request),
    )
    return Finding(broken, fixed, stale, fresh)
