"""A cache kept in the worker: "memoize has no effect" in production.

Flask-Caching's SimpleCache (cachelib's SimpleCache: a dict in the process)
and functools.lru_cache keep what they cache in the worker process that
computed it. On a laptop, one process, the second call is a hit. Under
gunicorn with several workers each worker computes and keeps its own copy:
a value cached through worker A is a miss on B, a clear through B leaves A's
copy in place (stale until it expires), and a restart forgets them all.
Flask-Caching with no CACHE_TYPE is worse: its default, NullCache, caches
nothing anywhere (it warns once in the log).

    python -m gunicorn --workers 2 examples.memoize_per_worker:app

The proof asks for one report through each cache, choosing the worker by
pausing the other (SIGSTOP): twice on A, once on B, a clear on B, then A
again, then once more after a restart on the same port. A run:

    lru_cache, SimpleCache: A miss, A hit, B miss, clear on B, A hit (A's old
                            copy), after a restart miss
    no CACHE_TYPE:          A miss, A miss, ...
    RedisCache on Valkey:   A miss, A hit, B hit (A's value), clear on B,
                            A miss, after a restart hit

The fix: Flask-Caching with CACHE_TYPE "RedisCache" (CACHE_REDIS_URL): one
cache for every worker, instance and restart, and a clear that clears it.
"""

import contextlib
import functools
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests
from flask import Flask, request
from flask_caching import Cache

from examples.servers import Gunicorn, at_once, stamp_worker, worker_of
from serve.valkey import EmbeddedValkey

LABEL = "proven"
REPORT = "weekly"
built_here = 0  # reports this process has built (sync workers: one request at a time)


def build_report(name: str) -> dict:
    """The slow function worth caching (a query, a call to another service)."""
    global built_here
    built_here += 1
    return {"name": name, "built": f"{os.getpid()}-{built_here}", "title": read_title(name)}


def read_title(name: str) -> str | None:
    """The report's title, kept in REPORTS_DIR (the database, for create_app)."""
    folder = os.environ.get("REPORTS_DIR")
    path = Path(folder, name) if folder else None
    return path.read_text() if path and path.exists() else None


def write_title(name: str, title: str) -> None:
    written = Path(os.environ["REPORTS_DIR"], f".{name}.new")
    written.write_text(title)
    written.replace(written.with_name(name))  # whole: a reader sees the old title or the new


def add_routes(app: Flask, prefix: str, lookup: Callable[[str], dict], forget: Callable) -> None:
    """GET a report through `lookup` (a cached build_report); POST to forget it."""

    @app.get(f"{prefix}/reports/<name>", endpoint=f"{prefix}-report")
    def report(name: str):
        before = built_here
        value = lookup(name)
        return {"report": value, "built_now": built_here > before}

    @app.post(f"{prefix}/reports/<name>/forget", endpoint=f"{prefix}-forget")
    def forget_report(name: str):
        forget(name)  # in this process only, for the caches kept in it
        return {"forgotten": name}


app = stamp_worker(Flask(__name__))
# In the process: one dict per worker, gone with it.
cache = Cache(app, config={"CACHE_TYPE": "SimpleCache"})
report_simple = cache.memoize(timeout=300)(build_report)
add_routes(app, "/simple", report_simple, lambda name: cache.delete_memoized(report_simple, name))
report_lru = functools.lru_cache(maxsize=128)(build_report)
add_routes(app, "/lru", report_lru, lambda name: report_lru.cache_clear())


def create_app_without_cache_type() -> Flask:
    """Flask-Caching with no CACHE_TYPE at all: it falls back to NullCache."""
    unconfigured = stamp_worker(Flask(__name__))
    null_cache = Cache(unconfigured)
    report = null_cache.memoize(timeout=300)(build_report)
    add_routes(unconfigured, "/null", report, lambda name: None)
    return unconfigured


def create_shared_app() -> Flask:
    """The fix: the same report routes, cached by Flask-Caching in Valkey (REDIS_URL)."""
    shared = stamp_worker(Flask(__name__))
    redis_cache = Cache(
        shared,
        config={"CACHE_TYPE": "RedisCache", "CACHE_REDIS_URL": os.environ["REDIS_URL"]},
    )
    report = redis_cache.memoize(timeout=300)(build_report)
    add_routes(shared, "/redis", report, lambda name: redis_cache.delete_memoized(report, name))
    return shared


def create_app(cache_type: str = "SimpleCache") -> Flask:
    """The report at /reports/<name> for python -m loadtests.check (its spec:
    loadtests/check/specs/memoize.toml): Flask-Caching's cache_type (in
    the worker; RedisCache: at REDIS_URL), its title in REPORTS_DIR.
    POST /reports/<name> changes the title and rebuilds the cached report
    at once (forced_update), as an admin's edit would."""
    checked = stamp_worker(Flask(__name__))
    config = {"CACHE_TYPE": cache_type}
    if cache_type == "RedisCache":
        config["CACHE_REDIS_URL"] = os.environ["REDIS_URL"]
    reports = Cache(checked, config=config)
    report = reports.memoize(timeout=300, forced_update=lambda: request.method == "POST")(
        build_report
    )
    add_routes(checked, "", report, lambda name: reports.delete_memoized(report, name))

    @checked.post("/reports/<name>")
    def edit_report(name: str):
        write_title(name, request.json["title"])
        return {"report": report(name)}  # built again, and cached in place of the old one

    return checked


def create_redis_app() -> Flask:
    """The fix, for python -m loadtests.check: create_app's routes cached by
    RedisCache in Valkey at REDIS_URL (the spec's store)."""
    return create_app("RedisCache")


@dataclass(frozen=True)
class Lookup:
    built_now: bool  # a miss: the function ran
    built: str  # which process built the value, and its number there
    answered_by: int

    def describe(self, workers: dict[int, str]) -> str:
        if self.built_now:
            return "miss"
        builder = workers.get(int(self.built.partition("-")[0]), "an earlier worker")
        return f"hit (built by {builder})"


@dataclass
class Steps:
    cache: str
    workers: tuple[int, int]  # (A, B) of the first server
    first_on_a: Lookup
    again_on_a: Lookup
    on_b: Lookup
    on_a_after_clear_on_b: Lookup
    after_restart: Lookup

    @property
    def per_worker(self) -> bool:
        """Every step as a cache kept in each worker process behaves."""
        return (
            self.first_on_a.built_now
            and not self.again_on_a.built_now  # it does cache, in one process
            and self.on_b.built_now  # B never saw A's value
            and not self.on_a_after_clear_on_b.built_now  # the clear did not reach A
            and self.on_a_after_clear_on_b.built == self.first_on_a.built
            and self.after_restart.built_now  # a restart forgot it
        )

    @property
    def shared(self) -> bool:
        return (
            self.first_on_a.built_now
            and not self.again_on_a.built_now
            and not self.on_b.built_now
            and self.on_b.built == self.first_on_a.built  # B served A's value
            and self.on_a_after_clear_on_b.built_now  # the clear reached A
            and not self.after_restart.built_now
            and self.after_restart.built == self.on_a_after_clear_on_b.built
        )

    def summary(self) -> str:
        names = dict(zip(self.workers, "AB", strict=True))
        after_clear = self.on_a_after_clear_on_b
        return (
            f"{self.cache}: A {self.first_on_a.describe(names)}, "
            f"A {self.again_on_a.describe(names)}, B {self.on_b.describe(names)}, clear on B, "
            f"A {after_clear.describe(names)}, "
            f"after a restart {self.after_restart.describe(names)}"
        )


def lookups(target: str, prefix: str, cache_name: str, env: dict[str, str]) -> Steps:
    def get(url: str) -> Lookup:
        response = requests.get(f"{url}{prefix}/reports/{REPORT}", timeout=5)
        response.raise_for_status()
        body = response.json()
        return Lookup(body["built_now"], body["report"]["built"], worker_of(response))

    with Gunicorn(target, workers=2, env=env) as server:
        a, b = server.worker_pids
        with server.only(a):
            first, again = get(server.url), get(server.url)
        with server.only(b):
            on_b = get(server.url)
            requests.post(f"{server.url}{prefix}/reports/{REPORT}/forget", timeout=5)
        with server.only(a):
            after_clear = get(server.url)
        port = server.port
    with Gunicorn(target, workers=2, env=env, port=port) as restarted:
        after_restart = get(restarted.url)
    return Steps(cache_name, (a, b), first, again, on_b, after_clear, after_restart)


@dataclass
class Finding:
    lru: Steps
    simple: Steps
    null: Steps
    redis: Steps

    @property
    def holds(self) -> bool:
        return (
            self.lru.per_worker
            and self.simple.per_worker
            and self.null.first_on_a.built_now
            and self.null.again_on_a.built_now  # NullCache: never a hit
            and self.redis.shared
        )

    def summary(self) -> str:
        null = self.null
        return (
            f"{self.lru.summary()}; {self.simple.summary()}; no CACHE_TYPE (NullCache): "
            f"A {'miss' if null.first_on_a.built_now else 'hit'}, "
            f"A {'miss' if null.again_on_a.built_now else 'hit'}; {self.redis.summary()}"
        )


def prove() -> Finding:
    this = "examples.memoize_per_worker"

    def in_process(target: str, prefix: str, name: str) -> Steps:
        return lookups(f"{this}:{target}", prefix, name, {})

    def in_valkey() -> Steps:
        with tempfile.TemporaryDirectory() as directory, contextlib.ExitStack() as stack:
            valkey = stack.enter_context(EmbeddedValkey(Path(directory) / "valkey"))
            env = {"REDIS_URL": valkey.url}
            return lookups(f"{this}:create_shared_app()", "/redis", "RedisCache on Valkey", env)

    lru, simple, null, redis = at_once(
        lambda: in_process("app", "/lru", "functools.lru_cache"),
        lambda: in_process("app", "/simple", "Flask-Caching SimpleCache"),
        lambda: in_process("create_app_without_cache_type()", "/null", "no CACHE_TYPE"),
        in_valkey,
    )
    return Finding(lru, simple, null, redis)
