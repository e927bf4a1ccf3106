"""bare_postgres: an autocommit UPDATE ... RETURNING from psycopg.

The reference for fixed_db on PostgreSQL (see __init__.py): a connection per
thread, made on the thread's first request and kept, as the floor's client
keeps its own (loadtests/runs/floor.py).
"""

import os
import threading

import psycopg
from flask import Flask

from loadtests.runs.bare import bare_app

INCREMENT_SQL = "UPDATE counter SET value = value + 1 WHERE id = 1 RETURNING value"


def create_app() -> Flask:
    app = bare_app("bare_postgres")
    url = os.environ["DATABASE_URL"]
    mine = threading.local()

    def connection() -> psycopg.Connection:
        conn = getattr(mine, "conn", None)
        if conn is None:
            conn = mine.conn = psycopg.connect(url, autocommit=True)
        return conn

    @app.post("/counter/increment")
    def increment() -> dict:
        [(value,)] = connection().execute(INCREMENT_SQL).fetchall()
        return {"value": value}

    return app
