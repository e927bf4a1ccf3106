"""A schema race at start-up: the second worker fails to boot, and gunicorn stops.

An app that sets up its own database when it starts often checks whether its
table exists, goes on with the rest of its start-up (loading a model,
warming a cache, connecting elsewhere), then creates the table if it was
missing. One process does that fine. gunicorn starts every worker at the same
moment, and each runs the same start-up: both check before either creates,
both find no table, and the second CREATE TABLE fails ("table counter already
exists"). A worker that fails while booting makes gunicorn shut down, so
with -w 2 on a fresh database the server does not start at all, while -w 1
boots every time. And the next start works, since the table now exists,
which hides it until the next fresh database (a new host, a test run, CI).

Here the rest of the start-up is a wait until every worker has checked
(STARTUP_PEERS of them, counted in a folder): what slow start-up work makes
likely, made certain.

    python -m gunicorn --workers 2 'examples.schema_race_at_startup:create_app()'

A run, each on a fresh SQLite database but the second:

    check, then CREATE TABLE, -w 2:  gunicorn exited with code 3: sqlite3.OperationalError:
                                     table counter already exists / Worker failed to boot.
    the same again, same database:   booted
    check, then CREATE TABLE, -w 1:  booted
    CREATE TABLE IF NOT EXISTS, -w 2:             booted
    created once by `flask init-db`, then -w 2:   booted
    created once in gunicorn's on_starting, -w 2: booted

The fix: statements safe to run twice (CREATE TABLE IF NOT EXISTS), or the
schema made once, before any worker starts: a command the deploy runs first
(here `flask --app "examples.schema_race_at_startup:create_app('migrated')"
init-db`), or gunicorn's on_starting hook, which runs in the master before
it forks (schema_race_at_startup_hooks.py).
"""

import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import requests
from flask import Flask

from examples.servers import Gunicorn, at_once, stamp_worker
from plumbing.config import REPO_ROOT

LABEL = "proven"
PEERS_TIMEOUT_SECONDS = 5.0

CREATE = "CREATE TABLE counter (id INTEGER PRIMARY KEY, value INTEGER NOT NULL)"
FIRST_ROW = "INSERT OR IGNORE INTO counter (id, value) VALUES (1, 0)"
CREATE_IF_MISSING = (
    "CREATE TABLE IF NOT EXISTS counter (id INTEGER PRIMARY KEY, value INTEGER NOT NULL)"
)


def table_exists(db: sqlite3.Connection) -> bool:
    query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'counter'"
    return db.execute(query).fetchone() is not None


def rest_of_start_up() -> None:
    """Standing in for slow start-up work: wait until every worker has got here."""
    folder, peers = Path(os.environ["STARTUP_FOLDER"]), int(os.environ["STARTUP_PEERS"])
    (folder / f"checked.{os.getpid()}").touch()
    deadline = time.monotonic() + PEERS_TIMEOUT_SECONDS
    while len(list(folder.glob("checked.*"))) < peers and time.monotonic() < deadline:
        time.sleep(0.01)


def create_schema(database: str) -> None:
    """The migration, run once: by `flask init-db`, or by gunicorn's on_starting."""
    with sqlite3.connect(database) as db:
        db.execute(CREATE_IF_MISSING)
        db.execute(FIRST_ROW)


def create_app(schema: str = "check then create") -> Flask:
    """The app, setting up its table as it starts, in each worker."""
    app = stamp_worker(Flask(__name__))

    @app.cli.command("init-db")
    def init_db() -> None:
        create_schema(os.environ["DATABASE"])

    @app.get("/")
    def home():
        with sqlite3.connect(os.environ["DATABASE"]) as db:  # the table must be there
            [(value,)] = db.execute("SELECT value FROM counter WHERE id = 1").fetchall()
        return {"counter": value}

    if schema == "migrated":  # made once, before the workers start
        return app
    db = sqlite3.connect(os.environ["DATABASE"], timeout=5)
    if schema == "check then create":
        missing = not table_exists(db)
        rest_of_start_up()
        if missing:
            db.execute(CREATE)  # fails if another worker created it meanwhile
    elif schema == "if not exists":
        rest_of_start_up()
        db.execute(CREATE_IF_MISSING)  # safe to run twice, or by two workers at once
    else:
        raise ValueError(f"unknown schema set-up {schema!r}")
    db.execute(FIRST_ROW)
    db.commit()
    db.close()
    return app


@dataclass
class Start:
    booted: bool
    exit_code: int | None  # gunicorn's, when it did not boot
    log: str  # the last lines of its log, when it did not boot
    answered: int | None = None  # the status of GET /, which reads the table

    @property
    def served(self) -> bool:
        return self.booted and self.answered == 200

    def describe(self) -> str:
        if self.booted:
            return "booted" if self.answered == 200 else f"booted, then GET / {self.answered}"
        error = next(
            (line.strip() for line in self.log.splitlines() if "OperationalError" in line), ""
        )
        return f"gunicorn exited with code {self.exit_code} ({error})"


def start(
    target: str,
    workers: int,
    folder: Path,
    options: list[str] | None = None,
    *,
    init_db_first: bool = False,
) -> Start:
    """Start gunicorn on the database in `folder` (after `flask init-db`, if
    asked); did every worker boot, and does the app find its table?"""
    env = {
        "DATABASE": str(folder / "app.sqlite3"),
        "STARTUP_FOLDER": tempfile.mkdtemp(dir=folder),  # a new count for each start
        "STARTUP_PEERS": str(workers),
    }
    if init_db_first:  # what a deploy runs once, before the server
        command = [sys.executable, "-m", "flask", "--app", target, "init-db"]
        subprocess.run(command, cwd=REPO_ROOT, env={**os.environ, **env}, check=True, timeout=30)
    server = Gunicorn(target, workers=workers, options=options or [], env=env)
    try:
        with server:
            answered = requests.get(server.url + "/", timeout=5).status_code
    except RuntimeError as error:  # gunicorn exited at start-up: its log says why
        return Start(False, server.process.returncode, str(error))
    return Start(True, None, "", answered)


@dataclass
class Finding:
    racing: Start  # check then create, 2 workers
    racing_again: Start  # the same, on the database the first left behind
    one_worker: Start  # check then create, 1 worker
    if_not_exists: Start  # 2 workers
    init_db: Start  # made once by `flask init-db`, then 2 workers
    on_starting: Start  # made once in the master, 2 workers

    @property
    def holds(self) -> bool:
        return (
            not self.racing.booted
            and "table counter already exists" in self.racing.log
            and "Worker failed to boot" in self.racing.log
            and self.racing_again.served
            and self.one_worker.served
            and self.if_not_exists.served
            and self.init_db.served
            and self.on_starting.served
        )

    def summary(self) -> str:
        return (
            f"fresh database, check then CREATE TABLE: -w 2 {self.racing.describe()}, "
            f"then on the same database {self.racing_again.describe()}; "
            f"-w 1 {self.one_worker.describe()}; CREATE TABLE IF NOT EXISTS, -w 2 "
            f"{self.if_not_exists.describe()}; made once by flask init-db, then -w 2 "
            f"{self.init_db.describe()}; made once in on_starting, -w 2 "
            f"{self.on_starting.describe()}"
        )


def prove() -> Finding:
    this = "examples.schema_race_at_startup"

    def race_then_start_again() -> tuple[Start, Start]:
        with tempfile.TemporaryDirectory() as directory:
            first = start(f"{this}:create_app()", 2, Path(directory))
            return first, start(f"{this}:create_app()", 2, Path(directory))

    def on_a_fresh_database(target: str, workers: int, *args, **kwargs) -> Start:
        with tempfile.TemporaryDirectory() as directory:
            return start(target, workers, Path(directory), *args, **kwargs)

    migrated = f"{this}:create_app('migrated')"
    hooks = ["--config", "python:examples.schema_race_at_startup_hooks"]
    (racing, racing_again), one_worker, if_not_exists, init_db, on_starting = at_once(
        race_then_start_again,
        lambda: on_a_fresh_database(f"{this}:create_app()", 1),
        lambda: on_a_fresh_database(f"{this}:create_app('if not exists')", 2),
        lambda: on_a_fresh_database(migrated, 2, init_db_first=True),
        lambda: on_a_fresh_database(migrated, 2, hooks),
    )
    return Finding(racing, racing_again, one_worker, if_not_exists, init_db, on_starting)
