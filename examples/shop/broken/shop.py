"""A small shop, broken: its state in module-level globals. Not built on plumbing/.

A hit counter, a cart per user (a "uid" cookie), a greeting, a banner an
admin sets and a login. Each works with one user on `flask run`; under a
real server each breaks (loadtests/check finds every one):

- the hits and the cart are read, worked on and written back: threads
  interleave and lose updates; every worker process keeps its own copy;
- the greeting's name sits in a global between the read and the answer;
- the banner is set in the one worker that answered the admin;
- the secret key is made at import, one per worker and per restart, so a
  login cookie signed by one worker is nobody to another.
"""

import os
import secrets
import time

from flask import Flask, request, session

WORK_SECONDS = 0.002  # a query's time between the read and the write

hits = 0
carts: dict[str, list[str]] = {}
name = ""
banner = ""


def create_app() -> Flask:
    app = Flask(__name__)
    app.secret_key = os.urandom(16)  # THE BUG: one key per process, lost on restart

    @app.after_request
    def give_uid(response):
        if "uid" not in request.cookies:
            response.set_cookie("uid", request.environ["shop.uid"])
        return response

    @app.before_request
    def read_uid():
        request.environ["shop.uid"] = request.cookies.get("uid") or secrets.token_hex(8)

    @app.post("/hits")
    def hit():
        global hits
        new = hits + 1
        time.sleep(WORK_SECONDS)
        hits = new
        return {"value": new}

    @app.get("/hits")
    def read_hits():
        return {"value": hits}

    @app.post("/hits/reset")
    def reset_hits():
        global hits
        hits = 0
        return {"value": 0}

    @app.post("/cart")
    def add_to_cart():
        uid = request.environ["shop.uid"]
        items = carts.get(uid, [])
        time.sleep(WORK_SECONDS)
        carts[uid] = [*items, request.get_json()["item"]]
        return {"items": carts[uid]}, 201

    @app.get("/cart")
    def cart():
        return {"items": carts.get(request.environ["shop.uid"], [])}

    @app.get("/hello")
    def hello():
        global name
        name = request.args["name"]
        time.sleep(WORK_SECONDS)
        return {"greeting": f"Hello, {name}!"}

    @app.post("/admin/banner")
    def set_banner():
        global banner
        banner = request.get_json()["text"]
        return {"text": banner}

    @app.get("/banner")
    def get_banner():
        return {"text": banner}

    @app.post("/login")
    def login():
        session["name"] = request.get_json()["name"]
        return {"name": session["name"]}

    @app.get("/me")
    def me():
        return {"name": session.get("name")}

    return app
