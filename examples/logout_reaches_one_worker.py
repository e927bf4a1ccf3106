"""A logout that reaches one worker: a revoked token kept in a set in the process.

Flask-JWT-Extended asks the app, for every request with a token, whether the
token is revoked (`token_in_blocklist_loader`). The shortest answer keeps
the revoked token ids in a module-level set: a logout adds the token's id
to the set of the worker that answered it, answers 200, and that worker
refuses the token from then on. The other workers never hear of it and go
on accepting the token until it expires; a restart empties the set, so after
a deploy every revoked token works again.

The proof logs in, logs out through worker B, then asks who it is on each
worker, and once more after a restart, with 2 sync workers, choosing the
worker by pausing the other (SIGSTOP):

    python -m gunicorn --workers 2 examples.logout_reaches_one_worker:app

A run:

    in the process: logged out on B (200); the token answers 401 on B, 200 on
                    A, 200 after a restart
    in Valkey:      401 on B, 401 on A, 401 after a restart; the revoked id
                    is kept as long as the token (896 s left of 900)

The fix: the revoked ids in Valkey, each kept as long as its token is valid
(`SET ... EXAT` the token's `exp`), so every worker, and every worker after a
restart, reads the same list, and it empties itself.
"""

import contextlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import redis
import requests
from flask import Flask, request
from flask_jwt_extended import JWTManager, create_access_token, get_jwt, jwt_required

from examples.servers import Gunicorn, at_once, stamp_worker, worker_of
from serve.valkey import EmbeddedValkey

LABEL = "proven"
TOKEN_LIFETIME = timedelta(minutes=15)
USER = "ann"


def create_app(revoke: Callable[[str, int], None], is_revoked: Callable[[str], bool]) -> Flask:
    """The app, with the blocklist reached through two functions: revoke(jti,
    exp) at logout, is_revoked(jti) for every request with a token."""
    app = stamp_worker(Flask(__name__))
    app.config["JWT_SECRET_KEY"] = os.environ.get("JWT_SECRET_KEY", "only-imported")
    app.config["JWT_ACCESS_TOKEN_EXPIRES"] = TOKEN_LIFETIME
    jwt = JWTManager(app)

    @jwt.token_in_blocklist_loader
    def check_if_token_revoked(jwt_header: dict, jwt_payload: dict) -> bool:
        return is_revoked(jwt_payload["jti"])

    @app.post("/login")
    def login():
        return {"access_token": create_access_token(identity=request.json["user"])}

    @app.get("/me")
    @jwt_required()
    def me():
        return {"user": get_jwt()["sub"]}

    @app.post("/logout")
    @jwt_required()
    def logout():
        token = get_jwt()
        revoke(token["jti"], token["exp"])
        return {"msg": "logged out"}

    return app


# The revoked tokens, in the process: one set per worker, empty after a restart.
revoked: set[str] = set()
app = create_app(lambda jti, exp: revoked.add(jti), lambda jti: jti in revoked)


def create_shared_app() -> Flask:
    """The fix: the same app, the revoked ids in Valkey (REDIS_URL), each
    expiring when its token does."""
    valkey = redis.Redis.from_url(os.environ["REDIS_URL"], decode_responses=True)

    def revoke(jti: str, exp: int) -> None:
        valkey.set(f"revoked:{jti}", 1, exat=exp)

    def is_revoked(jti: str) -> bool:
        return valkey.exists(f"revoked:{jti}") == 1

    return create_app(revoke, is_revoked)


@dataclass
class Answer:
    worker: int
    status: int
    body: dict


@dataclass
class Run:
    workers: tuple[int, int]  # (A, B)
    logout: Answer  # B's answer to the logout
    on_b: Answer  # then, the token on B
    on_a: Answer  # and on A
    after_restart: Answer  # and on a new server
    kept_seconds: int | None  # how long the store keeps the revoked id (None: not in a store)

    @property
    def logged_out_on_b(self) -> bool:
        a, b = self.workers
        return (
            self.logout.worker == b
            and self.logout.status == 200
            and self.on_b.worker == b
            and self.on_a.worker == a
        )


def revoked_answer(answer: Answer) -> bool:
    return answer.status == 401 and answer.body == {"msg": "Token has been revoked"}


def accepted_answer(answer: Answer) -> bool:
    return answer.status == 200 and answer.body == {"user": USER}


def ask(url: str, method: str, path: str, token: str) -> Answer:
    response = requests.request(
        method, url + path, headers={"Authorization": f"Bearer {token}"}, timeout=5
    )
    return Answer(worker_of(response), response.status_code, response.json())


def run(target: str, shared_store: bool) -> Run:
    with tempfile.TemporaryDirectory() as directory, contextlib.ExitStack() as stack:
        env = {"JWT_SECRET_KEY": os.urandom(32).hex()}  # one key, for every worker
        valkey = None
        if shared_store:
            server = stack.enter_context(EmbeddedValkey(Path(directory) / "valkey"))
            env["REDIS_URL"] = server.url
            valkey = redis.Redis.from_url(server.url, decode_responses=True)
        with Gunicorn(target, workers=2, env=env) as server:
            a, b = server.worker_pids
            login = requests.post(server.url + "/login", json={"user": USER}, timeout=5)
            login.raise_for_status()
            token = login.json()["access_token"]
            with server.only(b):
                logout = ask(server.url, "POST", "/logout", token)
                on_b = ask(server.url, "GET", "/me", token)
            with server.only(a):
                on_a = ask(server.url, "GET", "/me", token)
        with Gunicorn(target, workers=1, env=env) as restarted:
            after_restart = ask(restarted.url, "GET", "/me", token)
        kept = None
        if valkey is not None:
            (key,) = valkey.keys("revoked:*")
            kept = valkey.ttl(key)
            valkey.close()
        return Run((a, b), logout, on_b, on_a, after_restart, kept)


@dataclass
class Finding:
    in_process: Run
    in_valkey: Run

    @property
    def holds(self) -> bool:
        broken, fixed = self.in_process, self.in_valkey
        lifetime = TOKEN_LIFETIME.total_seconds()
        return (
            broken.logged_out_on_b
            and revoked_answer(broken.on_b)
            and accepted_answer(broken.on_a)
            and accepted_answer(broken.after_restart)
            and fixed.logged_out_on_b
            and revoked_answer(fixed.on_b)
            and revoked_answer(fixed.on_a)
            and revoked_answer(fixed.after_restart)
            and fixed.kept_seconds is not None
            and lifetime - 60 < fixed.kept_seconds <= lifetime
        )

    def summary(self) -> str:
        def describe(run: Run) -> str:
            return (
                f"logged out on worker B ({run.logout.status}); the token then answers "
                f"{run.on_b.status} on B, {run.on_a.status} on A, "
                f"{run.after_restart.status} after a restart"
            )

        return (
            f"Flask-JWT-Extended, 2 workers, the revoked ids in a set in the process: "
            f"{describe(self.in_process)}; in Valkey: {describe(self.in_valkey)}, "
            f"the revoked id kept {self.in_valkey.kept_seconds} s, as long as the token"
        )


def prove() -> Finding:
    this = "examples.logout_reaches_one_worker"
    in_process, in_valkey = at_once(
        lambda: run(f"{this}:app", shared_store=False),
        lambda: run(f"{this}:create_shared_app()", shared_store=True),
    )
    return Finding(in_process, in_valkey)
