"""CPU per request with no server and no other thread: each fixed app's main
write against its own /healthz, and the same for its bare reference
(loadtests/runs/bare/).

    python -m loadtests.runs.in_process                  # every fixed app
    FIXED_DB_BACKEND=postgres python -m loadtests.runs.in_process fixed_db

The bench (bench.py) measures a write under gunicorn, where a request that
waits on its store gives its thread's core and the GIL away and takes them
back. Here each app is called straight through WSGI, in this one thread, on
the same store server or file the launchers give it, and the thread's own
CPU time (time.thread_time()) is read around a batch of requests: no
gunicorn, no socket to the client, no other thread to hand the GIL to. What
a write costs beyond /healthz here is the store call and the app's own code
around it; the bench's figure beyond this one is what the hand-offs cost.
The app against its bare reference is what this project's code costs. The
store server's CPU is not counted (it is another process): the bench's
floor counts it. Batches of each route take turns, and the table shows the
median batch, with the lowest and highest.
"""

import argparse
import io
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from importlib import import_module
from pathlib import Path
from typing import Any

from loadtests.clients.client import ROUTES
from loadtests.runs import report
from loadtests.runs.bare.server import BARE_APPS
from registry import APPS, SettingError
from serve.processes import fixed_apps, run_folder, store_server

DEFAULT_REQUESTS = 1000  # per batch
DEFAULT_ROUNDS = 7
WARM_UP = 200
APPENDS_PER_USER = 50  # POST /visits: a new user this often, as the bench's client does
# The store each app's write goes to, as the bench names it (floor.Store.kind),
# whose bare modules (loadtests/runs/bare/server.py BARE_APPS) stand beside it;
# fixed_db's is its backend.
STORE_KIND = {"fixed_session": "session-files", "fixed_cache": "valkey"}
COLUMNS = (
    ("app", "app"),
    ("healthz_us", "/healthz us"),
    ("write_us", "write us"),
    ("extra_us", "extra us"),
    ("extra_range", "extra low-high"),
)

WsgiApp = Callable[[dict, Callable], Any]


@contextmanager
def environment(settings: Mapping[str, str]) -> Iterator[None]:
    """os.environ with `settings`, for an app factory that reads it."""
    before = dict(os.environ)
    os.environ.update(settings)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(before)


class Caller:
    """Requests to a WSGI app, the way the bench's client sends them: a
    POST /visits keeps its user's cookie for APPENDS_PER_USER appends."""

    def __init__(self, app: WsgiApp, op: str) -> None:
        self.app = app
        method, path, _ = ROUTES[op]
        self.body = b'{"article": "bench"}' if op == "add_visit" else b""
        self.environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": "127.0.0.1",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(self.body)),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        self.keeps_user = op == "add_visit"
        self.cookie = ""
        self.done = 0

    def call(self) -> None:
        environ = {**self.environ, "wsgi.input": io.BytesIO(self.body)}
        if self.cookie:
            environ["HTTP_COOKIE"] = self.cookie
        headers: list[tuple[str, str]] = []

        def start_response(status: str, response_headers: list, exc_info: Any = None) -> None:
            if not status.startswith("2"):
                raise RuntimeError(f"{self.environ['PATH_INFO']} answered {status}")
            headers.extend(response_headers)

        body = self.app(environ, start_response)
        try:
            b"".join(body)
        finally:
            getattr(body, "close", lambda: None)()
        if self.keeps_user:
            self.done += 1
            if self.done % APPENDS_PER_USER == 0:
                self.cookie = ""
            elif cookies := [v for k, v in headers if k.lower() == "set-cookie"]:
                self.cookie = cookies[0].split(";", 1)[0]

    def cpu_per_request(self, requests: int) -> float:
        """Microseconds of this thread's CPU per request, over `requests` of them."""
        began = time.thread_time()
        for _ in range(requests):
            self.call()
        return (time.thread_time() - began) / requests * 1e6


def measure(name: str, app: WsgiApp, op: str, args: argparse.Namespace) -> dict:
    """/healthz and the write in turns: the median batch of each, and of their difference."""
    healthz, write = Caller(app, "healthz"), Caller(app, op)
    for caller in (healthz, write):
        for _ in range(WARM_UP):
            caller.call()
    turns = [
        (healthz.cpu_per_request(args.requests), write.cpu_per_request(args.requests))
        for _ in range(args.rounds)
    ]
    extra = [w - h for h, w in turns]
    return {
        "app": name,
        "healthz_us": round(statistics.median(h for h, _ in turns)),
        "write_us": round(statistics.median(w for _, w in turns)),
        "extra_us": round(statistics.median(extra)),
        "extra_range": f"{min(extra):.0f}-{max(extra):.0f}",
    }


def bare_modules(app: str, backend: str | None) -> tuple[str, ...]:
    return BARE_APPS[backend if app == "fixed_db" and backend else STORE_KIND[app]]


def measure_app(app: str, args: argparse.Namespace) -> list[dict]:
    """The app's write and its bare reference's, on one store it starts."""
    with ExitStack() as stack:
        folder = stack.enter_context(run_folder("in-process"))
        settings = {"VAR_DIR": str(folder), "WORK_MS": "0"}
        server = store_server(app, {**os.environ, **settings}, folder)
        if server is not None:
            stack.enter_context(server)  # started, and stopped by PID at the end
            settings[APPS[app].url_setting] = server.url
        backend = APPS[app].backend({**os.environ, **settings})
        op = APPS[app].main_write
        with environment(settings):
            project = import_module(f"{app}.app").create_app()
        title = APPS[app].label({**os.environ, **settings})
        rows = [measure(title, project, op, args)]
        for bare in bare_modules(app, backend):
            if bare == "sqlite":
                settings["DATABASE_URL"] = f"sqlite:///{folder / APPS[app].sqlite_file}"
            elif bare in ("session", "flask_session"):
                settings["BARE_SESSION_DIR"] = str(Path(folder) / f"bare-{bare}")
            elif bare == "valkey":
                settings["REDIS_URL"] = settings[APPS[app].url_setting]
            with environment(settings):
                reference = import_module(f"loadtests.runs.bare.{bare}").create_app()
            rows.append(measure(f"bare_{bare}", reference, op, args))
        close = getattr(project.extensions.get(app), "close", None)
        if close:  # fixed_db's PostgreSQL pool, before its server stops
            close()
        return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.runs.in_process", description=__doc__.split("\n")[0]
    )
    parser.add_argument("apps", nargs="*", metavar="APP", help=" | ".join(fixed_apps()))
    parser.add_argument("--requests", type=int, default=DEFAULT_REQUESTS, help="per batch")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    args = parser.parse_args(argv)
    apps = args.apps or fixed_apps()
    if unknown := [a for a in apps if a not in fixed_apps()]:
        parser.error(f"not a fixed app in this checkout: {unknown[0]}")
    try:
        for app in apps:
            rows = measure_app(app, args)
            write = " ".join(ROUTES[APPS[app].main_write][:2])
            print(f"\n{rows[0]['app']}: {write} against GET /healthz, one thread, no server")
            print(report.format_table(rows, COLUMNS), flush=True)
            for bare in rows[1:]:
                print(
                    f"the app's write costs {rows[0]['extra_us'] - bare['extra_us']} us "
                    f"more than {bare['app']}'s, beyond each one's /healthz"
                )
    except SettingError as error:
        parser.error(str(error))
    return 0


if __name__ == "__main__":
    sys.exit(main())
