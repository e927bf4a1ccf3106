"""--preload hides a secret key made at import, until the next restart.

half_fix_secret_per_worker shows a SECRET_KEY generated at import logging
users out on the other worker. Add --preload and that symptom is gone:
gunicorn imports the app once, in its master, which makes the one key before
forking the workers, so every worker signs and reads cookies with it. Tests
pass, users stay logged in, and the random key looks fixed.

It is not: the key lives as long as the master. Restart the server (a
deploy, a crash, a reboot) on the same port and every cookie signed before
is garbage: every user is logged out at once. A second instance (another
host behind the same load balancer; another port here) makes a key of its
own, so users are logged in or out depending on the instance that answers.
--preload moved the bug from "between workers" to "between restarts and
hosts".

    python -m gunicorn --workers 2 --preload examples.half_fix_secret_per_worker:app

A run: logged in as 'ann' on worker A, the cookie reads 'ann' on worker B;
after a restart on the same port it reads None, and None on a second
instance; with SECRET_KEY from the environment it reads 'ann' on B, after
the restart and on the second instance.

The fix: one key for every worker, instance and restart, from the
environment or a secret store (plumbing/config.py reads SECRET_KEY, or one
key generated once into a file that every worker reads).
"""

import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import requests
from flask import Flask, request, session

from examples.servers import Gunicorn, at_once, stamp_worker, worker_of

LABEL = "still broken"
USER = "ann"
BROKEN = "examples.half_fix_secret_per_worker:app"  # the key made at import
FIXED = "examples.preload_secret_until_restart:create_app()"
T = TypeVar("T")


def create_app() -> Flask:
    """The same two routes, the key from the environment."""
    app = stamp_worker(Flask(__name__))
    app.secret_key = os.environ["SECRET_KEY"]

    @app.post("/login")
    def login():
        session["user"] = request.json["name"]
        return {"user": session["user"]}

    @app.get("/me")
    def me():
        return {"user": session.get("user")}

    return app


@dataclass
class Readings:
    other_worker: str | None  # who the cookie says, read on the worker that did not sign it
    after_restart: str | None  # read after a restart on the same port
    second_instance: str | None  # read on another instance started the same way
    workers: tuple[int, int]  # (the one that logged in, the one that read)


def preloaded(target: str, env: Mapping[str, str], port: int | None = None) -> Gunicorn:
    return Gunicorn(target, workers=2, options=["--preload"], env=env, port=port)


def serve_and_ask(server: Gunicorn, ask: Callable[[Gunicorn], T]) -> T:
    with server:
        return ask(server)


def log_in_then_restart(target: str, env: Mapping[str, str]) -> Readings:
    browser = requests.Session()

    def me(server: Gunicorn) -> str | None:
        return browser.get(server.url + "/me", timeout=5).json()["user"]

    with preloaded(target, env) as server:
        a, b = server.worker_pids
        with server.only(a):
            browser.post(server.url + "/login", json={"name": USER}, timeout=5)
        with server.only(b):
            response = browser.get(server.url + "/me", timeout=5)
        other_worker, port = response.json()["user"], server.port
        workers = (a, worker_of(response))
    after_restart, second_instance = at_once(
        lambda: serve_and_ask(preloaded(target, env, port), me),
        lambda: serve_and_ask(preloaded(target, env), me),
    )
    browser.close()
    return Readings(other_worker, after_restart, second_instance, workers)


@dataclass
class Finding:
    key_at_import: Readings
    key_from_environment: Readings

    @property
    def holds(self) -> bool:
        broken, fixed = self.key_at_import, self.key_from_environment
        return (
            broken.workers[0] != broken.workers[1]
            and broken.other_worker == USER  # --preload: one key for both workers...
            and broken.after_restart is None  # ...until the master goes
            and broken.second_instance is None
            and fixed.workers[0] != fixed.workers[1]
            and fixed.other_worker == fixed.after_restart == fixed.second_instance == USER
        )

    def summary(self) -> str:
        broken, fixed = self.key_at_import, self.key_from_environment
        return (
            f"key made at import, 2 workers with --preload: logged in as {USER!r} on one, "
            f"the cookie reads {broken.other_worker!r} on the other, then "
            f"{broken.after_restart!r} after a restart on the same port and "
            f"{broken.second_instance!r} on a second instance; SECRET_KEY from the "
            f"environment: {fixed.other_worker!r}, {fixed.after_restart!r}, "
            f"{fixed.second_instance!r}"
        )


def prove() -> Finding:
    key_at_import, key_from_environment = at_once(
        lambda: log_in_then_restart(BROKEN, {}),
        lambda: log_in_then_restart(FIXED, {"SECRET_KEY": secrets.token_hex(32)}),
    )
    return Finding(key_at_import, key_from_environment)
