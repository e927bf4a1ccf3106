"""bare_sqlite: UPDATE ... RETURNING on the SQLite file, in WAL with synchronous=NORMAL.

The reference for fixed_db on SQLite (see __init__.py). A connection per
thread, made on the thread's first request and kept, as the floor's client
keeps its own (loadtests/runs/floor.py): a connection per request would add
the cost of opening one, which fixed_db's pool does not pay either. The file
is the app's, already in WAL; each statement commits itself.
"""

import os
import sqlite3
import threading

from flask import Flask

from loadtests.runs.bare import bare_app

INCREMENT_SQL = "UPDATE counter SET value = value + 1 WHERE id = 1 RETURNING value"


def create_app() -> Flask:
    app = bare_app("bare_sqlite")
    path = os.environ["DATABASE_URL"].removeprefix("sqlite:///")
    mine = threading.local()

    def connection() -> sqlite3.Connection:
        conn = getattr(mine, "conn", None)
        if conn is None:
            conn = mine.conn = sqlite3.connect(path, timeout=5.0, isolation_level=None)
            conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    @app.post("/counter/increment")
    def increment() -> dict:
        [(value,)] = connection().execute(INCREMENT_SQL).fetchall()
        return {"value": value}

    return app
