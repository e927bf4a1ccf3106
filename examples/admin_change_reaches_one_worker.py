"""An admin action that reaches one worker only: a reset, a flag, a ban, a cache, settings.

A request that changes state kept in the process (reset a counter, switch on
maintenance mode, ban a user, clear a cache, reload the settings) changes it
in the one worker process that answered it. It answers 200 and
shows the change, so it looks done; the other workers never hear of it, and
go on counting, serving and letting the banned user in, until they are
restarted. Which worker answers the next request decides what a user sees.

The proof runs the app under gunicorn with 2 sync workers, A and B, and
picks the worker that answers by pausing the other (SIGSTOP):

    python -m gunicorn --workers 2 examples.admin_change_reaches_one_worker:app

three increments on A, and a price A computes and caches; the settings
file changes; then on B a reset (200, value 0), maintenance switched on,
'mallory' banned, the cache cleared and the settings reloaded; then A is
asked what it holds. A run:

    in the process:    B answered the reset with 0; A still holds counter 3,
                       maintenance off, banned [], cached ['tea'], banner 'old'
    in a shared store: A holds counter 0, maintenance on, banned ['mallory'],
                       cached [], banner 'new'

The fix: the state in a store every worker reads (here Valkey), so a change
made through any worker is the change for all. fixed_cache keeps its counter
that way.
"""

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import redis
import requests
from flask import Flask, request

from examples.servers import Gunicorn, at_once, stamp_worker, worker_of
from serve.valkey import EmbeddedValkey

LABEL = "proven"
INCREMENTS = 3
BANNED = "mallory"
ITEM = "tea"


def read_settings() -> dict:
    path = os.environ.get("SETTINGS_FILE")
    return json.loads(Path(path).read_text()) if path else {}


# The state, in the process: one copy per worker.
counter = 0
maintenance = False
banned: set[str] = set()
prices: dict[str, int] = {}  # a cache
settings = read_settings()  # read at import, reloaded on request

app = stamp_worker(Flask(__name__))


@app.post("/counter/increment")
def increment_counter():
    global counter
    counter += 1
    return {"value": counter}


@app.post("/counter/reset")
def reset_counter():
    global counter
    counter = 0  # in this process only
    return {"value": counter}


@app.post("/admin/maintenance")
def switch_maintenance():
    global maintenance
    maintenance = request.json["on"]  # in this process only
    return {"maintenance": maintenance}


@app.post("/admin/bans")
def ban():
    banned.add(request.json["user"])  # in this process only
    return {"banned": sorted(banned)}


@app.get("/prices/<item>")
def price(item: str):
    if item not in prices:
        prices[item] = len(item)  # standing in for a slow computation or query
    return {"item": item, "price": prices[item]}


@app.post("/admin/cache/clear")
def clear_cache():
    prices.clear()  # in this process only
    return {"cached": []}


@app.post("/admin/settings/reload")
def reload_settings():
    global settings
    settings = read_settings()  # in this process only
    return settings


@app.get("/admin/state")
def state():
    return {
        "counter": counter,
        "maintenance": maintenance,
        "banned": sorted(banned),
        "cached": sorted(prices),
        "banner": settings.get("banner"),
    }


def create_shared_app() -> Flask:
    """The fix: the same routes, the state in Valkey (REDIS_URL)."""
    shared = stamp_worker(Flask(__name__))
    # A pool that connects on first use, in each worker (redis-py's pools
    # also notice a fork and start afresh).
    valkey = redis.Redis.from_url(os.environ["REDIS_URL"], decode_responses=True)

    @shared.post("/counter/increment")
    def increment_counter():
        return {"value": valkey.incr("counter")}

    @shared.post("/counter/reset")
    def reset_counter():
        valkey.set("counter", 0)
        return {"value": 0}

    @shared.post("/admin/maintenance")
    def switch_maintenance():
        on = bool(request.json["on"])
        valkey.set("maintenance", int(on))
        return {"maintenance": on}

    @shared.post("/admin/bans")
    def ban():
        valkey.sadd("banned", request.json["user"])
        return {"banned": sorted(valkey.smembers("banned"))}

    @shared.get("/prices/<item>")
    def price(item: str):
        if (cached := valkey.hget("prices", item)) is None:
            cached = len(item)
            valkey.hset("prices", item, cached)
        return {"item": item, "price": int(cached)}

    @shared.post("/admin/cache/clear")
    def clear_cache():
        valkey.delete("prices")
        return {"cached": []}

    @shared.post("/admin/settings/reload")
    def reload_settings():
        loaded = read_settings()
        valkey.set("settings", json.dumps(loaded))  # what every worker reads
        return loaded

    @shared.get("/admin/state")
    def state():
        return {
            "counter": int(valkey.get("counter") or 0),
            "maintenance": valkey.get("maintenance") == "1",
            "banned": sorted(valkey.smembers("banned")),
            "cached": sorted(valkey.hkeys("prices")),
            "banner": json.loads(valkey.get("settings") or "{}").get("banner"),
        }

    valkey.setnx("settings", json.dumps(read_settings()))  # the settings at start-up

    return shared


@dataclass
class Run:
    reset: dict  # B's answer to the reset
    reset_by: int  # the worker that answered it
    on_b: dict  # the state B holds after the admin requests
    on_a: dict  # the state A holds after them
    read_by: int  # the worker that answered with on_a
    workers: tuple[int, int]  # (A, B)

    @property
    def b_answered(self) -> bool:
        a, b = self.workers
        return self.reset_by == b and self.reset == {"value": 0} and self.read_by == a

    @property
    def changed(self) -> dict:
        return CHANGED

    @property
    def reached_a(self) -> bool:
        return self.on_a == self.changed


BEFORE = {"counter": INCREMENTS, "maintenance": False, "banned": [], "cached": [ITEM]}
CHANGED = {"counter": 0, "maintenance": True, "banned": [BANNED], "cached": [], "banner": "new"}


def admin_on_the_other_worker(server: Gunicorn, settings_file: Path) -> Run:
    a, b = server.worker_pids
    url = server.url

    def post(path: str, body: dict | None = None) -> requests.Response:
        response = requests.post(url + path, json=body, timeout=5)
        response.raise_for_status()
        return response

    with server.only(a):
        for _ in range(INCREMENTS):
            post("/counter/increment")
        requests.get(f"{url}/prices/{ITEM}", timeout=5).raise_for_status()
    settings_file.write_text(json.dumps({"banner": "new"}))
    with server.only(b):
        reset = post("/counter/reset")
        post("/admin/maintenance", {"on": True})
        post("/admin/bans", {"user": BANNED})
        post("/admin/cache/clear")
        post("/admin/settings/reload")
        on_b = requests.get(url + "/admin/state", timeout=5).json()
    with server.only(a):
        on_a = requests.get(url + "/admin/state", timeout=5)
    return Run(reset.json(), worker_of(reset), on_b, on_a.json(), worker_of(on_a), (a, b))


@dataclass
class Finding:
    in_process: Run
    shared: Run

    @property
    def holds(self) -> bool:
        broken, fixed = self.in_process, self.shared
        return (
            broken.b_answered
            and broken.on_b == broken.changed
            and broken.on_a == {**BEFORE, "banner": "old"}
            and fixed.b_answered
            and fixed.reached_a
        )

    def summary(self) -> str:
        broken, fixed = self.in_process, self.shared
        return (
            f"{INCREMENTS} increments and a cached price on worker A; worker B answered a "
            f"reset with {broken.reset['value']}, switched maintenance on, banned "
            f"{BANNED!r}, cleared the cache and reloaded the settings; A still holds "
            f"{describe(broken.on_a)}; with the state in Valkey, A holds {describe(fixed.on_a)}"
        )


def describe(state: dict) -> str:
    return (
        f"counter {state['counter']}, maintenance {'on' if state['maintenance'] else 'off'}, "
        f"banned {state['banned']}, cached {state['cached']}, banner {state['banner']!r}"
    )


def prove() -> Finding:
    this = "examples.admin_change_reaches_one_worker"

    def run(target: str, shared_store: bool) -> Run:
        with tempfile.TemporaryDirectory() as directory:
            settings_file = Path(directory) / "settings.json"
            settings_file.write_text(json.dumps({"banner": "old"}))
            env = {"SETTINGS_FILE": str(settings_file)}
            with contextlib.ExitStack() as stack:
                if shared_store:
                    valkey = stack.enter_context(EmbeddedValkey(Path(directory) / "valkey"))
                    env["REDIS_URL"] = valkey.url
                server = stack.enter_context(Gunicorn(target, workers=2, env=env))
                return admin_on_the_other_worker(server, settings_file)

    in_process, shared = at_once(
        lambda: run(f"{this}:app", shared_store=False),
        lambda: run(f"{this}:create_shared_app()", shared_store=True),
    )
    return Finding(in_process, shared)
