"""The base app every app folder builds on: create_base_app() and
do_some_work(), imported by the apps as `from plumbing import ...`."""

import time
from collections.abc import Mapping
from typing import Any

from flask import Flask, current_app

from plumbing.config import (
    MAX_BODY_BYTES,
    env_flag,
    load_secret_key,
    secret_key_fallbacks,
    var_dir,
    work_seconds,
)
from plumbing.http import install_http
from plumbing.users import install_users


def create_base_app(
    import_name: str,
    test_config: Mapping[str, Any] | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> Flask:
    """A Flask app with the plumbing installed. Configuration is layered:
    the shared settings, then the app's `defaults`, then `test_config`."""
    app_name = import_name.partition(".")[0]  # the folder
    app = Flask(import_name)
    directory = var_dir()
    app.config.from_mapping(
        APP_NAME=app_name,
        VAR_DIR=str(directory),
        SECRET_KEY=load_secret_key(directory),
        SECRET_KEY_FALLBACKS=secret_key_fallbacks(),
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
        WORK_SECONDS=work_seconds(),
        SESSION_COOKIE_SECURE=env_flag("COOKIE_SECURE"),
        SESSION_COOKIE_SAMESITE="Lax",
    )
    app.config.update(defaults or {})
    app.config.update(test_config or {})
    install_http(app)
    install_users(app)

    @app.get("/healthz")
    def healthz():
        return {"status": "ok", "strategy": app_name}  # the contract's name for it

    return app


def do_some_work() -> None:
    """What a real handler does between reading and writing state: a query, an
    API call, a template. Sleeping releases the GIL, as that I/O would, so other
    threads run in the gap. Its length is WORK_MS."""
    if seconds := current_app.config["WORK_SECONDS"]:
        time.sleep(seconds)  # even sleep(0) costs a system call
