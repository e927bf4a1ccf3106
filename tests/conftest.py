import importlib

import pytest
from flask import Flask

from serve.processes import available_apps

APPS = available_apps()
# What differs between apps, by design: fixed_session cannot serve the shared
# counter (501), and its user cookie is the session cookie itself.
SERVES_COUNTER = {app: app != "fixed_session" for app in APPS}
USER_COOKIE = {app: "session" if app == "fixed_session" else "uid" for app in APPS}


@pytest.fixture(autouse=True)
def isolated_var_dir(tmp_path, monkeypatch):
    """Every test gets its own var/ (database, secret key, logs)."""
    monkeypatch.setenv("VAR_DIR", str(tmp_path / "var"))
    monkeypatch.delenv("SECRET_KEY", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    return tmp_path / "var"


def make_app(name: str) -> Flask:
    # A fresh module each time, so broken_global's globals start empty.
    module = importlib.reload(importlib.import_module(f"{name}.app"))
    return module.create_app({"TESTING": True})


@pytest.fixture(params=APPS)
def app_name(request) -> str:
    return request.param


@pytest.fixture
def app(app_name) -> Flask:
    return make_app(app_name)


@pytest.fixture
def client(app):
    return app.test_client()
