"""Start an app on a port (under gunicorn; for the matrix, also Flask's
development server or uWSGI), wait until every worker answers, stop it by PID.

    with AppServer("fixed_db", free_port()) as server:
        requests.get(server.url + "/healthz")

A server that fails to start raises with the tail of its log, so a port in use
or a broken import is a clear message, not a hang. A harness run gives its
servers a data folder of its own (run_folder()); a launcher's known failures
(LAUNCH_ERRORS) reach the user as one paragraph and exit code 2
(launch_failed()). The store servers' modules are imported only when a
store is started: with psycopg and redis they are half of what a launcher
or a harness tool would otherwise import before it does anything.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Self

from plumbing.config import REPO_ROOT, var_dir
from registry import APPS, SettingError
from serve.gunicorn_conf import DEFAULTS as GUNICORN_DEFAULTS
from serve.launching import LAUNCH_ERRORS, check_settings, launch_failed, launcher
from serve.pids import (
    START_TIMEOUT_SECONDS,
    Service,
    free_port,
    parent_pid,
    pid_alive,
    port_in_use_message,
    port_is_free,
    signals_held,
    spawn,
    stop_process,
)
from serve.runs import run_folder
from serve.shapes import (
    DEFAULT_SHAPE,
    MATRIX_SHAPES,
    SHAPES,
    GunicornShape,
    missing_server,
    resolve,
)
from serve.uwsgi import UwsgiShape, uwsgi_command

if TYPE_CHECKING:
    from serve.postgres import EmbeddedPostgres
    from serve.valkey import EmbeddedValkey

__all__ = [
    "APPS",
    "LAUNCH_ERRORS",
    "MATRIX_SHAPES",
    "SHAPES",
    "AppServer",
    "available_apps",
    "check_settings",
    "fixed_apps",
    "free_port",
    "launch_failed",
    "launcher",
    "missing_server",
    "run_folder",
    "store_server",
]

GUNICORN_CONF = Path(__file__).with_name("gunicorn_conf.py")


# The last line of a Python traceback: "ValueError: ...", "psycopg.errors.X: ...".
ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Warning)\b.*:")


def available_apps() -> list[str]:
    """The app folders that exist in this checkout, in the order of APPS."""
    return [app for app in APPS if (REPO_ROOT / app / "app.py").exists()]


def fixed_apps() -> list[str]:
    return [app for app in available_apps() if APPS[app].is_fixed]


def store_server(
    app: str, env: Mapping[str, str], folder: Path
) -> EmbeddedValkey | EmbeddedPostgres | None:
    """The store server a launcher starts for `app` in `env`, not started yet,
    its data under `folder`: Valkey for fixed_cache, PostgreSQL for fixed_db
    with FIXED_DB_BACKEND=postgres; None when none is needed or its URL is
    set. A store setting of a wrong value is a SettingError."""
    embedded = APPS[app].embedded_server(env)
    try:
        if embedded == "valkey":
            from serve.valkey import EmbeddedValkey

            return EmbeddedValkey(folder / "valkey")
        if embedded == "postgres":
            from serve.postgres import EmbeddedPostgres

            return EmbeddedPostgres(folder / "postgres")
    except ValueError as error:  # VALKEY_APPENDFSYNC, POSTGRES_SYNCHRONOUS_COMMIT
        raise SettingError(str(error)) from None
    return None


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
        own_folder: str | None = None,
    ) -> None:
        """own_folder: a harness tool's name; the server then keeps its data
        in a fresh folder of its own, made when it starts and deleted when it
        stops (run_folder()), never in the var/ a user's `make run` serves.
        Otherwise VAR_DIR (from env, else ours) or var/."""
        if app not in APPS:
            raise ValueError(f"unknown app {app!r}; choose one of {', '.join(APPS)}")
        if shape not in SHAPES:
            raise ValueError(f"unknown server shape {shape!r}; choose one of {', '.join(SHAPES)}")
        self.app = app
        self.port = port
        self.shape_name = shape
        given = env or {}
        self.spec = resolve(shape, {**os.environ, **given}, given)
        gunicorn = self.spec.environment() if isinstance(self.spec, GunicornShape) else {}
        self.env = {**gunicorn, **given}
        self.var_dir = Path(self.setting("VAR_DIR") or var_dir())
        self.own_folder = own_folder
        self.folder = ExitStack()  # the folder of its own, while it runs
        # The launcher's var/logs/, not the server's data folder: a run folder
        # is deleted when the run ends, its servers' logs are kept.
        self.log_path = log_path or var_dir() / "logs" / f"{app}-{port}.log"
        self.process: subprocess.Popen | None = None
        # The app's own store server, if we start one: Valkey for fixed_cache,
        # PostgreSQL for fixed_db with FIXED_DB_BACKEND=postgres (registry.py).
        self.backing: EmbeddedValkey | EmbeddedPostgres | None = None
        self.worker_pids: list[int] = []  # those that answered at start-up
        self.log_start: int | None = None  # where this start's output begins in log_path

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
        output = None
        try:
            if self.own_folder:
                self.var_dir = self.folder.enter_context(run_folder(self.own_folder))
                self.env["VAR_DIR"] = str(self.var_dir)
            env = self.environment()
            # One server for all workers: started here, once, before gunicorn
            # forks them. Valkey is restarted by its supervisor if it dies
            # (serve/valkey.py); PostgreSQL, see serve/postgres.py.
            self.backing = store_server(self.app, env, self.var_dir)
            if self.backing is not None:
                self.backing.start()
                env[APPS[self.app].url_setting] = self.backing.url
            if not foreground:
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                output = self.log_path.open("ab")
                self.log_start = output.tell()  # what an earlier run wrote is not this one's
            with signals_held():  # recorded for stopping, or not started
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

    def environment(self) -> dict[str, str]:
        """The server's environment, but for its store's URL, set once that is started."""
        return {**os.environ, **self.env, "PORT": str(self.port)}

    @property
    def backend(self) -> str | None:
        """fixed_db's backend, "sqlite" or "postgres"; None for an app whose store is fixed."""
        return APPS[self.app].backend(self.environment())

    @property
    def label(self) -> str:
        """The app and its backend, as the harness prints it: "fixed_db (PostgreSQL)"."""
        return APPS[self.app].label(self.environment())

    def sqlite_file(self) -> Path | None:
        """fixed_db's SQLite file, when it runs on SQLite: DATABASE_URL's
        (sqlite:////abs/path.db), else its default under the server's VAR_DIR."""
        if self.backend != "sqlite":
            return None
        url = self.environment().get(APPS[self.app].url_setting or "", "")
        if url:
            return Path(url.partition("://")[2][1:])
        return self.var_dir / APPS[self.app].sqlite_file

    def setting(self, name: str, default: str = "") -> str:
        """What the server will see: this server's env, else ours, else the
        shared config's default (for the GUNICORN_* settings)."""
        return self.env.get(name) or os.environ.get(name) or GUNICORN_DEFAULTS.get(name, default)

    def workers(self) -> int:
        """Worker processes that will answer."""
        if isinstance(self.spec, UwsgiShape):
            return self.spec.processes
        return 1 if self.spec is None else self.spec.workers

    def shape(self) -> str:
        """How the server runs, e.g. "gunicorn gthread 2 workers x 4 threads"."""
        if self.spec is None:
            return "Flask development server (threaded)"
        return self.spec.describe()

    def wait_until_healthy(self) -> None:
        """Return once every worker process has answered /healthz.

        Workers boot in parallel; a load run that starts when only the first
        is ready would send every kept-alive connection to that one process,
        and prove nothing about several.

        A worker that answers must be ours: a child of our master, or the
        server itself where it has no workers (`flask run`). When two
        launchers start on one port at once, both find it free, and the one
        whose server cannot bind would otherwise take the other's workers
        for its own. Raises RuntimeError, naming the holder, then."""
        workers = self.workers()
        seen: set[int] = set()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.app} exited at start-up.{self._log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as response:
                    worker = int(response.headers["X-Worker"].partition("-")[0])
            except OSError:
                time.sleep(0.05)
                continue
            ours = self.process.pid in (worker, parent_pid(worker))
            if not ours and pid_alive(worker):  # one that has exited proves nothing
                raise RuntimeError(port_in_use_message(self.port, self.app))
            if ours:
                seen.add(worker)
            if len(seen) >= workers:
                self.worker_pids = sorted(seen)
                return
        raise RuntimeError(
            f"{self.app}: {len(seen)} of {workers} workers answered /healthz "
            f"in {START_TIMEOUT_SECONDS:.0f}s.{self._log_tail()}"
        )

    def _log_tail(self, lines: int = 15) -> str:
        """What this start wrote to its log: the error that stopped it first
        (a traceback's last line, the cause, where gunicorn's own HaltServer
        frames would fill a plain tail), then the last lines. Nothing in the
        foreground, where the output went to the terminal, above."""
        if self.log_start is None:
            return " Its output is above."
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log:
            log.seek(self.log_start)
            written = log.read().decode(errors="replace").splitlines()
        errors = [line for line in written if ERROR_LINE.match(line) and "HaltServer" not in line]
        cause = f" {errors[-1].strip()}." if errors else ""
        tail = "\n".join(written[-lines:])
        return f"{cause} Last lines of {self.log_path}:\n{tail}" if written else cause

    def stop(self) -> None:
        """Stop the server by PID (its master takes its workers down), then the
        backing server it used (its watcher first, then the server by PID),
        then delete its folder, if it had one of its own. Safe on a server
        that failed to start."""
        if self.process is not None:
            stop_process(self.process)
        if self.backing is not None:
            self.backing.stop()
        self.folder.close()
