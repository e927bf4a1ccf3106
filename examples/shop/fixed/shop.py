"""A small shop, fixed: its state in SQLite, its secret from the environment.

The same routes as broken/shop.py. Every change is one SQL statement (an
UPDATE ... RETURNING, an INSERT), so no read-then-write spans a request; the
file (SHOP_DB) is shared by every thread, process, instance and restart; the
secret key comes from SHOP_SECRET_KEY, the same in every worker. The
greeting's name is a local variable. `python -m shop init-db` makes the
tables, once, before the servers start.
"""

import os
import secrets
import sqlite3
import sys
import time

from flask import Flask, g, request, session

WORK_SECONDS = 0.002
SCHEMA = """
CREATE TABLE IF NOT EXISTS hits (id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER NOT NULL);
INSERT OR IGNORE INTO hits VALUES (1, 0);
CREATE TABLE IF NOT EXISTS cart (uid TEXT NOT NULL, item TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS cart_uid ON cart (uid);
CREATE TABLE IF NOT EXISTS banner (id INTEGER PRIMARY KEY CHECK (id = 1), text TEXT NOT NULL);
INSERT OR IGNORE INTO banner VALUES (1, '');
"""


def connect() -> sqlite3.Connection:
    db = sqlite3.connect(os.environ["SHOP_DB"], timeout=10, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    return db


def init_db() -> None:
    connect().executescript(SCHEMA)


def create_app() -> Flask:
    app = Flask(__name__)
    app.secret_key = os.environ["SHOP_SECRET_KEY"]

    def db() -> sqlite3.Connection:
        if "db" not in g:
            g.db = connect()
        return g.db

    @app.teardown_appcontext
    def close_db(_error):
        if (conn := g.pop("db", None)) is not None:
            conn.close()

    @app.before_request
    def read_uid():
        g.uid = request.cookies.get("uid") or secrets.token_hex(8)

    @app.after_request
    def give_uid(response):
        if "uid" not in request.cookies:
            response.set_cookie("uid", g.uid, httponly=True)
        return response

    @app.post("/hits")
    def hit():
        time.sleep(WORK_SECONDS)
        (value,) = db().execute("UPDATE hits SET value = value + 1 RETURNING value").fetchone()
        return {"value": value}

    @app.get("/hits")
    def read_hits():
        return {"value": db().execute("SELECT value FROM hits").fetchone()[0]}

    @app.post("/hits/reset")
    def reset_hits():
        db().execute("UPDATE hits SET value = 0")
        return {"value": 0}

    @app.post("/cart")
    def add_to_cart():
        time.sleep(WORK_SECONDS)
        db().execute("INSERT INTO cart VALUES (?, ?)", (g.uid, request.get_json()["item"]))
        return {"items": items_of(g.uid)}, 201

    def items_of(uid: str) -> list[str]:
        return [row[0] for row in db().execute("SELECT item FROM cart WHERE uid = ?", (uid,))]

    @app.get("/cart")
    def cart():
        return {"items": items_of(g.uid)}

    @app.get("/hello")
    def hello():
        name = request.args["name"]
        time.sleep(WORK_SECONDS)
        return {"greeting": f"Hello, {name}!"}

    @app.post("/admin/banner")
    def set_banner():
        text = request.get_json()["text"]
        db().execute("UPDATE banner SET text = ?", (text,))
        return {"text": text}

    @app.get("/banner")
    def get_banner():
        return {"text": db().execute("SELECT text FROM banner").fetchone()[0]}

    @app.post("/login")
    def login():
        session["name"] = request.get_json()["name"]
        return {"name": session["name"]}

    @app.get("/me")
    def me():
        return {"name": session.get("name")}

    return app


if __name__ == "__main__" and sys.argv[1:] == ["init-db"]:
    init_db()
