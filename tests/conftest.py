import importlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from flask import Flask

from loadtests.clients import browser
from plumbing.config import REPO_ROOT, SETTINGS
from registry import APPS as REGISTRY
from serve.pids import pids_mentioning
from serve.processes import AppServer, available_apps, free_port
from serve.valkey import EmbeddedValkey

pytest_plugins = ["tests.postgres_fixtures"]  # the PostgreSQL servers and their helpers

# A suite started where SIGINT is ignored (a background job of a shell
# script, nohup) would pass that on to every launcher it starts, and no
# Ctrl-C test could reach them: give them what a terminal gives.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

APPS = available_apps()
# What differs between apps, by design (registry.py): fixed_session cannot
# serve the shared counter (501), and its user cookie is the session cookie itself.
SERVES_COUNTER = {app: REGISTRY[app].serves_counter for app in APPS}
USER_COOKIE = {app: REGISTRY[app].user_cookie for app in APPS}


@pytest.fixture(autouse=True)
def isolated_var_dir(tmp_path, monkeypatch):
    """Every test gets its own var/ (database, sessions, secret key, logs)."""
    # Settings a user may have exported, e.g. by `make test DB=postgres`: each
    # test chooses its store itself.
    for setting in SETTINGS:
        monkeypatch.delenv(setting.name, raising=False)
    monkeypatch.setenv("VAR_DIR", str(tmp_path / "var"))
    return tmp_path / "var"


@pytest.fixture(scope="session")
def shared_valkey(tmp_path_factory):
    """One real Valkey server for the tests that need one and do not restart it."""
    with EmbeddedValkey(tmp_path_factory.mktemp("valkey")) as server:
        yield server


@pytest.fixture
def redis_url(shared_valkey, monkeypatch) -> str:
    """The shared server, emptied, and REDIS_URL pointing at it."""
    redis.Redis.from_url(shared_valkey.url).flushall()
    monkeypatch.setenv("REDIS_URL", shared_valkey.url)
    return shared_valkey.url


def make_app(name: str) -> Flask:
    # A fresh module each time, so broken_global's globals start empty.
    module = importlib.reload(importlib.import_module(f"{name}.app"))
    return module.create_app({"TESTING": True})


@pytest.fixture(params=APPS)
def app_name(request) -> str:
    return request.param


@pytest.fixture
def app(app_name, request) -> Flask:
    if REGISTRY[app_name].embedded == "valkey":
        request.getfixturevalue("redis_url")
    return make_app(app_name)


@pytest.fixture
def client(app):
    return app.test_client()


def launch(app: str, port: int | str, env: dict[str, str] | None = None, **popen):
    """`python -m serve APP --port PORT`, the launcher a user runs, from the
    repository with this test's environment and `env` over it; its output a
    text pipe unless `popen` says otherwise. The caller stops it by its PID."""
    return subprocess.Popen(
        [sys.executable, "-m", "serve", app, "--port", str(port)],
        cwd=REPO_ROOT,
        env={**os.environ, **(env or {})},
        **{"stdout": subprocess.PIPE, "text": True, **popen},
    )


def serve(app: str, var_dir, **env: str) -> AppServer:
    """An AppServer for `app` on a free port, its data in var_dir, `env` over ours."""
    env = {"VAR_DIR": str(var_dir), **env}
    return AppServer(app, free_port(), env=env, log_path=var_dir / f"{app}.log")


def processes_mentioning(text: str) -> list[str]:
    """The processes serve.pids.pids_mentioning() finds, each as "pid: program"
    for a failure message."""
    return [f"{pid}: {program(pid)}" for pid in pids_mentioning(text)]


def program(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return "?"  # gone since


@pytest.fixture(scope="session", autouse=True)
def nothing_left_running(tmp_path_factory):
    """After the last test, no server started by a test may still run: every
    server of the suite lives under pytest's temporary folder."""
    # With the separator: pytest-22 must not match another session's pytest-220.
    base = os.path.join(tmp_path_factory.getbasetemp(), "")
    yield
    if Path("/proc").is_dir():
        left = processes_mentioning(base)
        assert not left, f"still running after the tests: {left}"


def need_a_browser() -> None:
    """Skip where Chromium and its driver are absent, but never in CI, which
    installs them (.ci/run): there a missing browser fails the test."""
    if why := browser.missing():
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the browser test: {why}")
        pytest.skip(why)
