"""Start an app on a port (under gunicorn; for the matrix, also Flask's
development server or uWSGI), wait until every worker answers, stop it by PID.

    with AppServer("fixed_db", free_port()) as server:
        requests.get(server.url + "/healthz")

A server that fails to start raises with the tail of its log, so a port in use
or a broken import is a clear message, not a hang.
"""

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Self

from plumbing.config import REPO_ROOT, var_dir
from serve import uwsgi
from serve.gunicorn_conf import DEFAULTS as GUNICORN_DEFAULTS
from serve.pids import Service, free_port, port_in_use_message, port_is_free, spawn, stop_process
from serve.postgres import EmbeddedPostgres
from serve.registry import APPS
from serve.uwsgi import UwsgiShape, uwsgi_command
from serve.valkey import EmbeddedValkey

__all__ = ["APPS", "AppServer", "available_apps", "fixed_apps", "free_port", "missing_server"]

GUNICORN_CONF = Path(__file__).with_name("gunicorn_conf.py")


def gunicorn_shape(worker_class: str, workers: int, threads: int) -> dict[str, str]:
    """The environment that gives the shared gunicorn config this shape."""
    return {
        "GUNICORN_WORKER_CLASS": worker_class,
        "GUNICORN_WORKERS": str(workers),
        "GUNICORN_THREADS": str(threads),
    }


# Ways to serve an app, for the correctness matrix. "gthread-2x4" is the
# shared production-like config; the others show which shape breaks what.
# (gunicorn turns "sync" with more than one thread into gthread, hence 1.)
# "config" is the shared config as the environment sets it (GUNICORN_*).
# A shape is the environment for the gunicorn config, a UwsgiShape, or None
# for `flask run`.
SHAPES: dict[str, dict[str, str] | UwsgiShape | None] = {
    "flask-dev": None,  # Flask's development server, threaded (its default)
    "sync-1": gunicorn_shape("sync", 1, 1),
    "sync-4": gunicorn_shape("sync", 4, 1),
    "gthread-1x8": gunicorn_shape("gthread", 1, 8),
    "gthread-2x4": gunicorn_shape("gthread", 2, 4),
    # gevent: one thread, up to 50 greenlets, each request one of them
    # (examples/gevent_greenlets_share_globals.py shows what that does to globals).
    "gevent-1x50": {**gunicorn_shape("gevent", 1, 1), "GUNICORN_WORKER_CONNECTIONS": "50"},
    # uWSGI in the shared config's shape, 2 processes x 4 threads: the same
    # concurrency under a server that loads the app in its master before it
    # forks the workers, and closes each connection after one response
    # (serve/uwsgi.py).
    # A fixed app that made its connections in create_app() would share them
    # across workers here. 4 threads: fixed_db's PostgreSQL pool is sized
    # from GUNICORN_THREADS, 4 when unset, as it is under uWSGI.
    "uwsgi-2x4": UwsgiShape(processes=2, threads=4),
    "config": {},
}
MATRIX_SHAPES = [shape for shape in SHAPES if shape != "config"]
DEFAULT_SHAPE = "config"
START_TIMEOUT_SECONDS = 20.0


def missing_server(shape: str) -> str | None:
    """Why this shape's server cannot run here (uWSGI not built), or None."""
    if isinstance(SHAPES[shape], UwsgiShape) and not uwsgi.available():
        return uwsgi.missing_message()
    return None


def available_apps() -> list[str]:
    """The app folders that exist in this checkout, in the order of APPS."""
    return [app for app in APPS if (REPO_ROOT / app / "app.py").exists()]


def fixed_apps() -> list[str]:
    return [app for app in available_apps() if APPS[app].is_fixed]


class AppServer(Service):
    """One app under the shared gunicorn config (or another shape), in the background."""

    def __init__(
        self,
        app: str,
        port: int,
        *,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        shape: str = DEFAULT_SHAPE,
    ) -> None:
        if app not in APPS:
            raise ValueError(f"unknown app {app!r}; choose one of {', '.join(APPS)}")
        if shape not in SHAPES:
            raise ValueError(f"unknown server shape {shape!r}; choose one of {', '.join(SHAPES)}")
        self.app = app
        self.port = port
        self.shape_name = shape
        self.spec = SHAPES[shape]
        self.env = {**(self.spec if isinstance(self.spec, dict) else {}), **(env or {})}
        self.var_dir = Path(self.setting("VAR_DIR") or var_dir())
        self.log_path = log_path or self.var_dir / "logs" / f"{app}-{port}.log"
        self.process: subprocess.Popen | None = None
        # The app's own store server, if we start one: Valkey for fixed_cache,
        # PostgreSQL for fixed_db with FIXED_DB_BACKEND=postgres (serve/registry.py).
        self.backing: EmbeddedValkey | EmbeddedPostgres | None = None
        self.worker_pids: list[int] = []  # those that answered at start-up

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        if isinstance(self.spec, UwsgiShape):
            return uwsgi_command(self.app, self.port, self.spec)
        if self.spec is None:
            return [
                sys.executable,
                "-m",
                "flask",
                "--app",
                f"{self.app}.app",
                "run",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--with-threads",
                "--no-reload",
                "--no-debugger",
            ]
        return [
            sys.executable,
            "-m",
            "gunicorn",
            "--config",
            str(GUNICORN_CONF),
            f"{self.app}.app:create_app()",
        ]

    def start(self, foreground: bool = False) -> Self:
        if missing := missing_server(self.shape_name):
            raise RuntimeError(missing)
        if not port_is_free(self.port):
            raise RuntimeError(port_in_use_message(self.port, self.app))
        env = {**os.environ, **self.env, "PORT": str(self.port)}
        output = None
        try:
            embedded = APPS[self.app].embedded_server(env)
            if embedded == "valkey":
                # One server for all workers: started here, once, before gunicorn forks
                # them, and restarted by its supervisor if it dies (serve/valkey.py).
                self.backing = EmbeddedValkey(self.var_dir / "valkey")
                self.backing.start()
                env["REDIS_URL"] = self.backing.url
            elif embedded == "postgres":
                # The same: one server, started before gunicorn (serve/postgres.py).
                self.backing = EmbeddedPostgres(self.var_dir / "postgres")
                self.backing.start()
                env["DATABASE_URL"] = self.backing.url
            if not foreground:
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                output = self.log_path.open("ab")
            self.process = spawn(  # signals reach it from us only, by PID
                self.command(),
                cwd=REPO_ROOT,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT if output else None,
            )
            self.wait_until_healthy()
        except BaseException:
            self.stop()  # the server and the backing one: nothing left behind
            raise
        finally:
            if output:
                output.close()
        return self

    def setting(self, name: str, default: str = "") -> str:
        """What the server will see: this server's env, else ours, else the
        shared config's default (for the GUNICORN_* settings)."""
        return self.env.get(name) or os.environ.get(name) or GUNICORN_DEFAULTS.get(name, default)

    def workers(self) -> int:
        """Worker processes that will answer."""
        if isinstance(self.spec, UwsgiShape):
            return self.spec.processes
        return 1 if self.spec is None else int(self.setting("GUNICORN_WORKERS"))

    def shape(self) -> str:
        """How the server runs, e.g. "gunicorn gthread 2 workers x 4 threads"."""
        if isinstance(self.spec, UwsgiShape):
            return self.spec.describe()
        if self.spec is None:
            return "Flask development server (threaded)"
        if self.setting("GUNICORN_WORKER_CLASS") == "gevent":
            return (
                f"gunicorn gevent {self.setting('GUNICORN_WORKERS')} workers x "
                f"{self.setting('GUNICORN_WORKER_CONNECTIONS')} greenlets"
            )
        return (
            f"gunicorn {self.setting('GUNICORN_WORKER_CLASS')} "
            f"{self.setting('GUNICORN_WORKERS')} workers x "
            f"{self.setting('GUNICORN_THREADS')} threads"
        )

    def wait_until_healthy(self) -> None:
        """Return once every worker process has answered /healthz.

        Workers boot in parallel; a load run that starts when only the first
        is ready would send every kept-alive connection to that one process,
        and prove nothing about several."""
        workers = self.workers()
        seen: set[str] = set()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.app} exited at start-up.{self._log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as response:
                    seen.add(response.headers["X-Worker"].partition("-")[0])
            except OSError:
                time.sleep(0.05)
            if len(seen) >= workers:
                self.worker_pids = sorted(int(pid) for pid in seen)
                return
        raise RuntimeError(
            f"{self.app}: {len(seen)} of {workers} workers answered /healthz "
            f"in {START_TIMEOUT_SECONDS:.0f}s.{self._log_tail()}"
        )

    def _log_tail(self, lines: int = 15) -> str:
        if not self.log_path.exists():
            return ""
        tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f" Last lines of {self.log_path}:\n" + "\n".join(tail)

    def stop(self) -> None:
        """Stop the server by PID (its master takes its workers down), then the
        backing server it used (its watcher first, then the server by PID).
        Safe on a server that failed to start."""
        if self.process is not None:
            stop_process(self.process)
        if self.backing is not None:
            self.backing.stop()
