"""PostgreSQL for the tests: one embedded server for the session (a fresh
schema per test), or a server of a test's own that it may kill, restart,
freeze or interrupt, and the helpers the PostgreSQL tests share. Loaded as a
pytest plugin by tests/conftest.py, so that every test file sees the fixtures.

If the embedded server cannot start, the tests that need it are skipped with
the reason, except in CI (CI set), where they fail: CI must run them. With
DATABASE_URL=postgresql://... set, the tests that need no server of their own
run against that server instead.
"""

import itertools
import os
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
import pytest

from serve.postgres import EmbeddedPostgres

IN_CI = bool(os.environ.get("CI"))
GIVEN_URL = os.environ.get("DATABASE_URL", "")  # read before the tests clear it
GIVEN_URL = GIVEN_URL if GIVEN_URL.startswith(("postgresql://", "postgres://")) else ""


def unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"the embedded PostgreSQL server must start in CI: {reason}")
    pytest.skip(
        f"the embedded PostgreSQL server could not start here ({reason}); "
        "set DATABASE_URL=postgresql://... to run the tests that need no server of their own"
    )


def started(server: EmbeddedPostgres) -> EmbeddedPostgres:
    try:
        return server.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as error:
        unavailable(f"{type(error).__name__}: {error}")


def in_schema(url: str, schema: str) -> str:
    """The URL, with the schema first in the search path (libpq's `options`)."""
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query), ("options", f"-c search_path={schema}")]
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


class Cluster:
    """A server to make fresh schemas on: the session's embedded one, or the
    one DATABASE_URL names. An empty schema stands for an empty database
    here (tables are created in it, in the same catalog), without the cost of
    CREATE DATABASE, which copies and flushes a template each time."""

    names = itertools.count()

    def __init__(self, url: str) -> None:
        self.url = url

    def new_schema(self) -> str:
        name = f"test_{os.getpid()}_{next(self.names)}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("CREATE SCHEMA {}").format(psycopg.sql.Identifier(name)))
        return in_schema(self.url, name)


@pytest.fixture(scope="session")
def template(tmp_path_factory):
    """A stopped cluster, made by initdb once, that the tests' servers copy."""
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "template")
    try:
        server.start().stop()
    except (RuntimeError, OSError, subprocess.SubprocessError) as error:
        server.remove()
        yield error  # the tests that need a server of their own skip, or fail in CI
        return
    yield server
    server.remove()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory, template):
    if isinstance(template, Exception):
        if not GIVEN_URL:
            unavailable(f"{type(template).__name__}: {template}")
        yield Cluster(GIVEN_URL)
        return
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "server", template=template)
    try:
        yield Cluster(started(server).url)
    finally:
        server.remove()


@pytest.fixture
def database_url(cluster) -> str:
    """A new, empty schema for this test, and a URL that uses it."""
    return cluster.new_schema()


@pytest.fixture
def own_server(tmp_path, template):
    """A server of this test's own, which it may kill or restart, copied from
    the template; removed at the end."""
    if isinstance(template, Exception):
        unavailable(f"{type(template).__name__}: {template}")
    servers: list[EmbeddedPostgres] = []

    def make(directory: Path | None = None) -> EmbeddedPostgres:
        directory = directory or tmp_path / "var" / "postgres"
        servers.append(EmbeddedPostgres(directory, template=template))
        return servers[-1]

    yield make
    for server in servers:
        server.remove()


def table_names(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        return {name for (name,) in rows}


def wait_for(condition, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.01)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class Hung(BaseException):
    """Raised by at_most(): a BaseException, so that neither the app nor
    psycopg turns it into an answer."""


@contextmanager
def at_most(seconds: float, what: str) -> Iterator[None]:
    """Fail, rather than hang, if the block takes longer (SIGALRM; the main
    thread only). psycopg's waits wake up every WAIT_INTERVAL to let it in."""

    def expired(_signum, _frame):
        raise Hung(f"{what} took over {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def sessions(url: str) -> set[int]:
    """The backend PIDs of the server's client sessions, but the asker's."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity"
            " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
        return {pid for (pid,) in rows}


def settled(url: str, before: set[int]) -> None:
    """Wait until the sessions open before the freeze have ended, their
    clients having closed them: a resumed backend runs what it was sent
    before it sees that its connection was closed, then exits. (Connection
    attempts made meanwhile are other sessions, which ran nothing.)"""
    wait_for(lambda: not before & sessions(url), "the sessions of closed connections to end")
