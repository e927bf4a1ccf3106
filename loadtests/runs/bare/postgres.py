"""bare_postgres: an autocommit UPDATE ... RETURNING from psycopg.

The reference for fixed_db on PostgreSQL (see __init__.py): a connection per
thread, made on the thread's first request and kept, as the floor's client
keeps its own (loadtests/runs/floor.py).
"""

import os

import psycopg
from flask import Flask

from loadtests.runs.bare import counter_app, per_thread


def create_app() -> Flask:
    url = os.environ["DATABASE_URL"]
    return counter_app("bare_postgres", per_thread(lambda: psycopg.connect(url, autocommit=True)))
