"""Whose code a request's CPU time runs in: web stack, store client, this project.

A separate, short pass of the bench (bench.py --profile-seconds): the app
starts under the same gunicorn config, through create_app() here, which
wraps gunicorn's gthread handler (one request, from reading it to writing
the answer) in cProfile with a per-thread CPU clock, one profiler per
thread. Each worker writes its profile when it exits; split() sorts every
function's own time by where its code lives. Standard-library and built-in
functions (socket calls, pickle, locks) count for the code that called
them. cProfile slows every Python call alike, so a share is approximate,
and the rate of this pass is not a measurement; the bench's own rates come
from a pass without it. A sampling profiler would cost less but is not in
the lock. gthread only: other worker classes run unprofiled.
"""

import atexit
import cProfile
import importlib
import os
import pstats
import sys
import threading
import time
from pathlib import Path
from typing import Any

from serve.processes import AppServer

APP_SETTING = "BENCH_PROFILED_APP"
DIR_SETTING = "BENCH_PROFILE_DIR"
REPO_ROOT = Path(__file__).resolve().parents[2]
WEB_STACK = ("gunicorn", "flask", "werkzeug", "jinja2", "itsdangerous", "markupsafe", "blinker")
STORE_CLIENTS = ("redis", "psycopg", "psycopg_pool", "cachelib", "flask_session", "sqlite3")
PARTS = ("web", "store_client", "project")


def create_app() -> Any:  # the app's own factory decides its type
    """The app named by BENCH_PROFILED_APP, in a worker that profiles each request."""
    app = importlib.import_module(f"{os.environ[APP_SETTING]}.app").create_app()
    from gunicorn.workers.gthread import ThreadWorker

    profilers: list[cProfile.Profile] = []
    mine = threading.local()
    handle = ThreadWorker.handle

    def profiled(self: ThreadWorker, *args: object) -> object:
        profiler = getattr(mine, "profiler", None)
        if profiler is None:
            mine.profiler = profiler = cProfile.Profile(time.thread_time)
            profilers.append(profiler)
        profiler.enable()
        try:
            return handle(self, *args)
        finally:
            profiler.disable()

    def save() -> None:
        if profilers:
            stats = pstats.Stats(profilers[0])
            for other in profilers[1:]:
                stats.add(other)
            stats.dump_stats(Path(os.environ[DIR_SETTING]) / f"worker-{os.getpid()}.prof")

    ThreadWorker.handle = profiled
    atexit.register(save)
    return app


class ProfiledServer(AppServer):
    """An AppServer whose workers profile every request (create_app() above)."""

    def __init__(self, app: str, port: int, profile_dir: Path, **kwargs: object) -> None:
        env = {**kwargs.pop("env", {}), APP_SETTING: app, DIR_SETTING: str(profile_dir)}
        super().__init__(app, port, env=env, **kwargs)

    def command(self) -> list[str]:
        command = super().command()
        command[-1] = f"{__name__}:create_app()"
        return command


def part_of(filename: str) -> str | None:
    """ "web", "store_client", "project", or None: the caller's."""
    path = filename.replace("\\", "/")
    for marker in ("/site-packages/", "/lib/python"):
        if marker in path:
            top = path.split(marker, 1)[1].split("/")
            package = top[0] if marker == "/site-packages/" else top[1] if len(top) > 1 else ""
            if package in WEB_STACK:
                return "web"
            if package in STORE_CLIENTS:
                return "store_client"
            return None
    if path.startswith(str(REPO_ROOT)) and "/.venv/" not in path:
        return "project"
    return None


def builtin_part(name: str) -> str | None:
    """A C function of a store client's own, such as sqlite3.Connection.execute."""
    return "store_client" if "sqlite3." in name or "psycopg" in name else None


def split(profile_dir: Path) -> dict[str, float] | None:
    """Each part's share of the profiled CPU time, every worker together."""
    files = sorted(profile_dir.glob("worker-*.prof"))
    if not files:
        return None
    stats = pstats.Stats(*map(str, files)).stats  # func -> (cc, nc, tottime, cumtime, callers)
    resolved: dict[tuple, dict[str, float]] = {}

    def shares(func: tuple, seen: frozenset) -> dict[str, float]:
        if func in resolved:
            return resolved[func]
        filename, _, name = func
        part = part_of(filename) if filename != "~" else builtin_part(name)
        if part:
            found = {part: 1.0}
        else:  # the callers', weighted by the time spent under each
            callers = stats.get(func, (0, 0, 0, 0, {}))[4]
            weights = {c: edge[2] or 1e-12 for c, edge in callers.items() if c not in seen}
            total = sum(weights.values())
            found = {}
            for caller, weight in weights.items():
                for p, share in shares(caller, seen | {func}).items():
                    found[p] = found.get(p, 0.0) + share * weight / total
            found = found or {"web": 1.0}  # the top of the stack is gunicorn's handler
        resolved[func] = found
        return found

    spent = dict.fromkeys(PARTS, 0.0)
    for func, (_, _, tottime, _, _) in stats.items():
        for p, share in shares(func, frozenset()).items():
            spent[p] += tottime * share
    total = sum(spent.values())
    return {p: spent[p] / total for p in PARTS} if total else None


if __name__ == "__main__":
    print(split(Path(sys.argv[1])))
