"""bare_sqlite: UPDATE ... RETURNING on the SQLite file, in WAL with synchronous=NORMAL.

The reference for fixed_db on SQLite (see __init__.py). A connection per
thread, made on the thread's first request and kept, as the floor's client
keeps its own (loadtests/runs/floor.py): a connection per request would add
the cost of opening one, which fixed_db's pool does not pay either. The file
is the app's, already in WAL; each statement commits itself.
"""

import os
import sqlite3

from flask import Flask

from loadtests.runs.bare import counter_app, per_thread


def create_app() -> Flask:
    path = os.environ["DATABASE_URL"].removeprefix("sqlite:///")

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path, timeout=5.0, isolation_level=None)
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    return counter_app("bare_sqlite", per_thread(connect))
