"""Half-fix 8: a SECRET_KEY generated at import, one per gunicorn worker.

`app.secret_key = secrets.token_hex()` looks safe (random, never in git) and
works with one process. gunicorn imports the app in each worker, so each
worker makes a key of its own. A session cookie signed by one worker is
garbage to the others: the user is logged in when the worker that signed
their cookie answers, and logged out when another one does.

The proof logs in once, then asks "who am I?" twice, each time with the
worker that answered last paused, so the other one answers. A run:

    POST /login {"name": "ann"}  -> worker 29766
    GET  /me                     -> worker 29767: {"user": null}
    GET  /me                     -> worker 29766: {"user": "ann"}

The real fix: one key for every worker, every instance and every restart,
from the environment or a secret store (plumbing/config.py reads SECRET_KEY,
else a key generated once into var/secret_key and shared by all workers).
"""

import secrets
from dataclasses import dataclass

import requests
from flask import Flask, request, session

from examples.servers import Gunicorn, stamp_worker, worker_of

LABEL = "still broken"
USER = "ann"

app = stamp_worker(Flask(__name__))
app.secret_key = secrets.token_hex(32)  # run once per process that imports this module


@app.post("/login")
def login():
    session["user"] = request.json["name"]
    return {"user": session["user"]}


@app.get("/me")
def me():
    return {"user": session.get("user")}


@dataclass
class Answer:
    worker: int
    user: str | None


@dataclass
class Finding:
    login_worker: int
    answers: list[Answer]  # GET /me, from the other worker, then from the login worker

    @property
    def holds(self) -> bool:
        other, same = self.answers
        return (
            other.worker != self.login_worker
            and other.user is None
            and same.worker == self.login_worker
            and same.user == USER
        )

    def summary(self) -> str:
        readings = [
            f"user {answer.user!r} on "
            + ("that worker" if answer.worker == self.login_worker else "the other")
            for answer in self.answers
        ]
        return f"logged in as {USER!r} on one of 2 workers; the same cookie reads " + (
            " and ".join(readings)
        )


def prove() -> Finding:
    with Gunicorn("examples.half_fix_secret_per_worker:app", workers=2) as server:
        browser = requests.Session()
        login = browser.post(server.url + "/login", json={"name": USER}, timeout=5)
        login_worker, answers = worker_of(login), []
        last = login_worker
        for _ in range(2):
            with server.paused(last):  # so that the other worker answers
                response = browser.get(server.url + "/me", timeout=5)
            last = worker_of(response)
            answers.append(Answer(last, response.json()["user"]))
        browser.close()
    return Finding(login_worker, answers)
