"""The user's app, wrapped so that every answer says which worker gave it.

Every server shape loads `loadtests.check.wrap:app`; this module imports the
app the check was given (CHECK_TARGET, "module:create_app" or "module:app",
imported from the working folder) and wraps it in a WSGI middleware that:

- sets `X-Worker: <pid>-<thread id>` on every answer, replacing any the app
  sets itself, so a witness names the process and thread for an app that
  never heard of the header;
- answers GET /__check__/worker itself, without calling the app: the check
  waits on it until every worker is up, and spreads its users' kept-alive
  connections over the workers with it, whatever routes the app has.
"""

import importlib
import json
import os
import sys
import threading
import types
from collections.abc import Callable, Iterable
from typing import Any

TARGET_SETTING = "CHECK_TARGET"
WORKER_PATH = "/__check__/worker"


def worker_id() -> str:
    return f"{os.getpid()}-{threading.get_native_id()}"


def load(target: str) -> Callable:
    """The WSGI app a target names: call a factory (a plain function, or any
    name written with "()"), take anything else as the app itself."""
    module_name, _, name = target.partition(":")
    called = name.endswith("()")
    if os.getcwd() not in sys.path:  # as `flask run` and gunicorn import from it
        sys.path.insert(0, os.getcwd())
    found: Any = importlib.import_module(module_name)
    for part in name.removesuffix("()").split("."):
        found = getattr(found, part)
    if called or isinstance(found, types.FunctionType):
        found = found()
    return found


class WorkerHeader:
    def __init__(self, app: Callable) -> None:
        self.app = app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        worker = worker_id()
        if environ.get("PATH_INFO") == WORKER_PATH:
            body = json.dumps({"worker": worker}).encode()
            start_response(
                "200 OK",
                [("Content-Type", "application/json"), ("X-Worker", worker)],
            )
            return [body]

        def stamped(status: str, headers: list, exc_info: Any = None) -> Callable:
            headers = [(k, v) for k, v in headers if k.lower() != "x-worker"]
            return start_response(status, [*headers, ("X-Worker", worker)], exc_info)

        return self.app(environ, stamped)


def create_app() -> WorkerHeader:
    target = os.environ.get(TARGET_SETTING)
    if not target:
        raise RuntimeError(f"{TARGET_SETTING} is not set: the app to check, module:create_app")
    return WorkerHeader(load(target))


def for_flask_run() -> Any:
    """For `flask run`, which serves only a Flask app: the user's own, its
    wsgi_app wrapped in the same middleware."""
    found = load(os.environ[TARGET_SETTING])
    found.wsgi_app = WorkerHeader(found.wsgi_app)
    return found


app = create_app() if os.environ.get(TARGET_SETTING) else None
