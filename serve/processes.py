"""Start an app on a port (under gunicorn; for the matrix, also Flask's
development server or uWSGI), wait until every worker answers, stop it by PID.

    with AppServer("fixed_db", free_port()) as server:
        requests.get(server.url + "/healthz")

A server that fails to start raises with the tail of its log, so a port in use
or a broken import is a clear message, not a hang. A harness run gives its
servers a data folder of its own (run_folder()); a launcher's known failures
(LAUNCH_ERRORS) reach the user as one paragraph and exit code 2
(launch_failed()).
"""

import functools
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any, Self

from plumbing.config import REPO_ROOT, var_dir
from serve import uwsgi
from serve.gunicorn_conf import DEFAULTS as GUNICORN_DEFAULTS
from serve.pids import (
    STOP_TIMEOUT_SECONDS,
    Service,
    free_port,
    parent_pid,
    pid_alive,
    pids_mentioning,
    port_in_use_message,
    port_is_free,
    signals_held,
    spawn,
    stop_process,
)
from serve.postgres import EmbeddedPostgres
from serve.registry import APPS, SettingError
from serve.uwsgi import UwsgiShape, uwsgi_command
from serve.valkey import EmbeddedValkey

__all__ = [
    "APPS",
    "LAUNCH_ERRORS",
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
# The last line of a Python traceback: "ValueError: ...", "psycopg.errors.X: ...".
ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Warning)\b.*:")


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


# A launcher's known failures: a port taken, a store's folder in use, a server
# that did not start (RuntimeError); a setting of a wrong value (SettingError).
LAUNCH_ERRORS = (RuntimeError, SettingError)


def launch_failed(error: BaseException) -> int:
    """A known failure as the user sees it: "error: ..." on stderr in one
    paragraph (a server's last log lines, if any, indented below it), and
    exit code 2, as for a wrong argument."""
    print("error: " + str(error).replace("\n", "\n    "), file=sys.stderr, flush=True)
    return 2


def check_settings(apps: Iterable[str] = APPS, env: Mapping[str, str] | None = None) -> None:
    """Raise SettingError if a setting that chooses an app's store has a
    value none of its backends has (FIXED_DB_BACKEND=mysql)."""
    for app in apps:
        APPS[app].embedded_server(os.environ if env is None else env)


def launcher(main: Callable[..., int]) -> Callable[..., int]:
    """For the main() of every launcher that starts servers: the settings
    that choose stores are checked before anything starts, whichever apps it
    starts (as `make` refuses DB=mysql), and its known failures
    (LAUNCH_ERRORS) reach the user as one paragraph and exit code 2."""

    @functools.wraps(main)
    def guarded(*args: Any, **kwargs: Any) -> int:
        # SIGTERM (a plain `kill`) stops it as Ctrl-C does, so that what it
        # started is stopped and its run folder deleted: Python's default for
        # SIGTERM is to exit at once, cleaning up nothing.
        in_main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, interrupt) if in_main else None
        try:
            check_settings()
            return main(*args, **kwargs)
        except LAUNCH_ERRORS as error:
            return launch_failed(error)
        except KeyboardInterrupt:
            print("stopped", file=sys.stderr, flush=True)
            return 130
        finally:
            if in_main:
                signal.signal(signal.SIGTERM, previous)

    return guarded


def interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


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
            return EmbeddedValkey(folder / "valkey")
        if embedded == "postgres":
            return EmbeddedPostgres(folder / "postgres")
    except ValueError as error:  # VALKEY_APPENDFSYNC, POSTGRES_SYNCHRONOUS_COMMIT
        raise SettingError(str(error)) from None
    return None


RUNS = "runs"  # under var/: the harness runs' data folders


@contextmanager
def run_folder(tool: str) -> Iterator[Path]:
    """A data folder of one harness run's own, the VAR_DIR of every server it
    starts: var/runs/<tool>-<pid>-<random>/, empty at the start and deleted
    at the end, however the run ends.

    A load test that measures state must start from a known state, and must
    never touch what a user's `make run` serves from var/ itself (the SQLite
    file, Valkey's append-only file and lock, PostgreSQL's cluster, session
    files): the demo once reset a served counter, then stopped at the lock of
    the served Valkey. Nor may two runs at once share a store: each would take
    the other's writes for anomalies. Nothing in the folder is worth keeping:
    results go to var/results/, servers' logs to var/logs/. A folder left by a
    run that was killed (a SIGKILL runs no clean-up) is deleted by the next
    run, once its PID is gone and no process names the folder."""
    runs = var_dir() / RUNS
    runs.mkdir(mode=0o700, exist_ok=True)
    for old in runs.iterdir():
        if abandoned(old):
            remove_run_folder(old)
    folder = runs / f"{tool}-{os.getpid()}-{secrets.token_hex(3)}"
    folder.mkdir(mode=0o700)
    try:
        yield folder
    finally:
        remove_run_folder(folder)


def abandoned(folder: Path) -> bool:
    """A run folder whose run was killed (its PID gone), its servers ended.

    A server of that run may still name the folder: one still shutting down,
    or one the run had paused (SIGSTOP, loadtests/inject*.py, stall.py) when
    it was killed, which stays stopped for good: the stop signal the kernel
    sent it when its parent died (serve/pids.py) waits until it runs again.
    They are the dead run's own, found by its folder's unique name: each gets
    SIGKILL, which ends a stopped process too."""
    found = re.fullmatch(r".+-(\d+)-[0-9a-f]+", folder.name)
    if not found or pid_alive(int(found[1])):
        return False
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    while (left := pids_mentioning(str(folder))) and time.monotonic() < deadline:
        for pid in left:
            with suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    return not left


def remove_run_folder(folder: Path) -> None:
    """Delete a run folder, with the PostgreSQL cluster in it, which as root
    lives outside it (serve/postgres.py: EmbeddedPostgres.remove)."""
    if (folder / "postgres").exists():
        EmbeddedPostgres(folder / "postgres", synchronous_commit="on").remove()
    shutil.rmtree(folder, ignore_errors=True)


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
        self.spec = SHAPES[shape]
        self.env = {**(self.spec if isinstance(self.spec, dict) else {}), **(env or {})}
        self.var_dir = Path(self.setting("VAR_DIR") or var_dir())
        self.own_folder = own_folder
        self.folder = ExitStack()  # the folder of its own, while it runs
        # The launcher's var/logs/, not the server's data folder: a run folder
        # is deleted when the run ends, its servers' logs are kept.
        self.log_path = log_path or var_dir() / "logs" / f"{app}-{port}.log"
        self.process: subprocess.Popen | None = None
        # The app's own store server, if we start one: Valkey for fixed_cache,
        # PostgreSQL for fixed_db with FIXED_DB_BACKEND=postgres (serve/registry.py).
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
