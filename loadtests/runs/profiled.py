"""Whose code a request's CPU time runs in: web stack, store client, this project.

A separate, short pass of the bench (bench.py --profile-seconds): the app
starts under the same gunicorn config, through create_app() here, which
wraps gunicorn's gthread handler (one request, from reading it to writing
the answer) in cProfile with a per-thread CPU clock, one profiler per thread
and listening port. The server listens on one port per route, so one server
profiles every route apart. Each worker writes a profile per port when it
exits; split() sorts every function's own time by where its code lives.
Standard-library and built-in functions (socket calls, pickle, locks) count
for the code that called them. cProfile slows every Python call alike, so a
share is approximate, and the rate of this pass is not a measurement; the
bench's own rates come from a pass without it. A sampling profiler would
cost less but is not in the lock. gthread only: other worker classes run
unprofiled.
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

    profilers: dict[int, list[cProfile.Profile]] = {}  # by the port a request came to
    mine = threading.local()
    handle = ThreadWorker.handle

    def profiled(self: ThreadWorker, conn: Any) -> object:
        port = conn.server[1]  # the listening socket's address
        if not hasattr(mine, "profilers"):
            mine.profilers = {}
        profiler = mine.profilers.get(port)
        if profiler is None:
            mine.profilers[port] = profiler = cProfile.Profile(time.thread_time)
            profilers.setdefault(port, []).append(profiler)
        profiler.enable()
        try:
            return handle(self, conn)
        finally:
            profiler.disable()

    def save() -> None:
        for port, made in list(profilers.items()):
            stats = pstats.Stats(made[0])
            for other in made[1:]:
                stats.add(other)
            stats.dump_stats(profile_file(Path(os.environ[DIR_SETTING]), port, os.getpid()))

    ThreadWorker.handle = profiled
    atexit.register(save)
    return app


def profile_file(profile_dir: Path, port: int, pid: int | str) -> Path:
    return profile_dir / f"worker-{pid}-port-{port}.prof"


class ProfiledServer(AppServer):
    """An AppServer whose workers profile every request (create_app() above),
    listening on `port` and on each of `more_ports` too: a profile per port."""

    def __init__(
        self,
        app: str,
        port: int,
        profile_dir: Path,
        more_ports: tuple[int, ...] = (),
        **kwargs: object,
    ) -> None:
        env = {**kwargs.pop("env", {}), APP_SETTING: app, DIR_SETTING: str(profile_dir)}
        super().__init__(app, port, env=env, **kwargs)
        self.more_ports = more_ports

    def command(self) -> list[str]:
        command = super().command()
        command[-1] = f"{__name__}:create_app()"
        if self.more_ports:  # the command line's binds replace the config's
            binds = [f"--bind=127.0.0.1:{p}" for p in (self.port, *self.more_ports)]
            command[-1:-1] = binds
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


def split(profile_dir: Path, port: int | str = "*") -> dict[str, float] | None:
    """Each part's share of the profiled CPU time of the requests to `port`
    (default: every port), every worker together."""
    files = sorted(profile_dir.glob(profile_file(Path(), port, "*").name))
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
