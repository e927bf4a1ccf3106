"""The user's app under each server shape, started and stopped by PID.

Every shape serves `loadtests.check.wrap:app` (the user's app behind the
X-Worker middleware) from the user's folder (--chdir), with the spec's
[app].env, its {data} a fresh folder per shape (serve.processes.run_folder),
and [app].setup run once in it before any server starts:

    gthread        gunicorn gthread, 2 workers x 4 threads (the shared config)
    sync           gunicorn sync, 2 workers x 1
    gevent         gunicorn gevent, 2 workers, a greenlet per request
    uwsgi          uWSGI, 2 processes x 4 threads, the app loaded before the fork
    flask          `flask run`, Flask's threaded development server
    restart        gthread 2 x 4, stopped and started again in the middle of the run
    two-instances  two gthread 2 x 4 instances sharing {data}, behind Caddy (round robin)
    store-paused   gthread 2 x 4, its store paused mid-write (SIGSTOP, then SIGCONT)

[app].store = "valkey" starts an embedded Valkey for each shape, in {data}/valkey,
on a free port of 127.0.0.1 ({store_url}), before the setup and the servers, and
stops it by PID after them. [app].gunicorn is added to every gunicorn command.
A shape that cannot run here is skipped with the reason (skip_reason), never dropped.
"""

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from loadtests.check.spec import STORE_URL, AppSpec
from loadtests.check.wrap import TARGET_SETTING, WORKER_PATH
from plumbing.config import REPO_ROOT, var_dir
from serve import uwsgi
from serve.balancer import Balancer, caddy_binary
from serve.pids import (
    free_port,
    parent_pid,
    port_in_use_message,
    port_is_free,
    signals_held,
    spawn,
    stop_process,
)
from serve.processes import ERROR_LINE, GUNICORN_CONF
from serve.runs import run_folder
from serve.shapes import GunicornShape
from serve.store import StoreServer

if TYPE_CHECKING:
    from serve.valkey import EmbeddedValkey

WRAPPED = "loadtests.check.wrap:app"
FOR_FLASK_RUN = "loadtests.check.wrap:for_flask_run()"
START_TIMEOUT_SECONDS = 30.0
SETUP_TIMEOUT_SECONDS = 120.0
# Longer than an app's store timeout, so that every write sent into the
# stopped store loses its answer; shorter than the retries of an app that
# keeps trying, so that a later try is answered.
STORE_PAUSE_SECONDS = 1.0


@dataclass(frozen=True)
class Shape:
    name: str
    server: str  # gunicorn, uwsgi, flask
    workers: int
    env: tuple[tuple[str, str], ...] = ()
    instances: int = 1
    restart: bool = False
    pause_store: bool = False

    def describe(self) -> str:
        return DESCRIPTIONS[self.name]

    @property
    def processes(self) -> int:
        """The worker processes serving at once: every instance's workers."""
        return self.workers * self.instances


GTHREAD = tuple(GunicornShape("gthread", 2, 4).environment().items())
SHAPES = {
    "gthread": Shape("gthread", "gunicorn", 2, GTHREAD),
    "sync": Shape("sync", "gunicorn", 2, tuple(GunicornShape("sync", 2, 1).environment().items())),
    # gevent with gunicorn's default of 1000 connections a worker: the
    # check's users keep theirs open, more than the matrix's 50.
    "gevent": Shape(
        "gevent", "gunicorn", 2, tuple(GunicornShape("gevent", 2, 1).environment().items())
    ),
    "uwsgi": Shape("uwsgi", "uwsgi", 2),
    "flask": Shape("flask", "flask", 1),
    "restart": Shape("restart", "gunicorn", 2, GTHREAD, restart=True),
    "two-instances": Shape("two-instances", "gunicorn", 2, GTHREAD, instances=2),
    "store-paused": Shape("store-paused", "gunicorn", 2, GTHREAD, pause_store=True),
}
DESCRIPTIONS = {
    "gthread": "gunicorn gthread 2 workers x 4 threads",
    "sync": "gunicorn sync 2 workers x 1 thread",
    "gevent": "gunicorn gevent 2 workers, a greenlet per request",
    "uwsgi": "uWSGI 2 processes x 4 threads, app loaded before fork",
    "flask": "flask run (threaded development server)",
    "restart": "gunicorn gthread 2 x 4, restarted in the middle of the run",
    "two-instances": "two gunicorn gthread 2 x 4 instances behind Caddy, round robin",
    "store-paused": f"gunicorn gthread 2 x 4, its store paused {STORE_PAUSE_SECONDS:g} s mid-write",
}


def skip_reason(shape: str, app: AppSpec | None = None) -> str | None:
    """Why this shape cannot run on this machine, or for this spec's [app], or None."""
    if shape == "store-paused" and app is not None and not app.store:
        return 'no store to pause: the spec\'s [app] names none (store = "valkey")'
    if shape == "gevent" and importlib.util.find_spec("gevent") is None:
        return "gevent is not installed (pip install gevent)"
    if shape == "uwsgi" and not uwsgi.available():
        return uwsgi.missing_message()
    if shape == "two-instances":
        try:
            caddy_binary()
        except RuntimeError as error:
            return str(error)
    return None


@dataclass
class Setting:
    """Where and how the user's app runs: its target, folder and spec's [app]."""

    target: str
    chdir: Path
    app: AppSpec


def environment(setting: Setting, data: Path, store_url: str = "") -> dict[str, str]:
    paths = [str(setting.chdir), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]
    env = {
        k: v.replace("{data}", str(data)).replace(STORE_URL, store_url)
        for k, v in setting.app.env.items()
    }
    return {
        **os.environ,
        **env,
        TARGET_SETTING: setting.target,
        "PYTHONPATH": os.pathsep.join(p for p in paths if p),
    }


def run_setup(setting: Setting, data: Path, store_url: str = "") -> None:
    """[app].setup, once, in the app's folder and environment; its failure stops the check."""
    if not setting.app.setup:
        return
    command = [sys.executable if w == "python" else w.replace("{data}", str(data))
               for w in setting.app.setup]  # fmt: skip
    try:
        done = subprocess.run(
            command,
            cwd=setting.chdir,
            env=environment(setting, data, store_url),
            capture_output=True,
            text=True,
            timeout=SETUP_TIMEOUT_SECONDS,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise RuntimeError(f"the app's setup {' '.join(command)} did not run: {error}") from None
    if done.returncode:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-10:])
        raise RuntimeError(
            f"the app's setup {' '.join(command)} exited with {done.returncode}:\n{tail}"
        )


class CheckServer:
    """One server of one shape on one port, in the background."""

    def __init__(
        self, setting: Setting, shape: Shape, data: Path, port: int, store_url: str = ""
    ) -> None:
        self.setting, self.shape, self.data, self.port = setting, shape, data, port
        self.store_url = store_url
        self.process: subprocess.Popen | None = None
        self.log_path = var_dir() / "logs" / f"check-{shape.name}-{port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        if self.shape.server == "uwsgi":
            here = str(self.setting.chdir)
            return [*uwsgi.command(WRAPPED, self.port, 2, 4), "--pythonpath", here, "--chdir", here]
        if self.shape.server == "flask":
            return [sys.executable, "-m", "flask", "--app", FOR_FLASK_RUN, "run",
                    "--host", "127.0.0.1", "--port", str(self.port),
                    "--with-threads", "--no-reload", "--no-debugger"]  # fmt: skip
        return [sys.executable, "-m", "gunicorn", "--config", str(GUNICORN_CONF),
                *self.setting.app.gunicorn, WRAPPED]  # fmt: skip

    def start(self) -> "CheckServer":
        if not port_is_free(self.port):
            raise RuntimeError(port_in_use_message(self.port, self.setting.target))
        env = {**environment(self.setting, self.data, self.store_url), **dict(self.shape.env)}
        env["PORT"] = str(self.port)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with (
            self.log_path.open("wb") as log,
            signals_held(),
        ):  # recorded for stopping, or not started
            self.process = spawn(
                self.command(), cwd=self.setting.chdir, env=env, stdout=log, stderr=log
            )
        try:
            self.wait_until_up()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_until_up(self) -> None:
        """Until every worker has answered; a server that exits says why."""
        seen: set[int] = set()
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.setting.target} did not start under {self.shape.describe()}."
                    f"{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self.url + WORKER_PATH, timeout=1) as answer:
                    pid = int(answer.headers["X-Worker"].partition("-")[0])
            except (OSError, ValueError, TypeError):
                time.sleep(0.05)
                continue
            if self.process.pid not in (pid, parent_pid(pid)):
                raise RuntimeError(port_in_use_message(self.port, self.setting.target))
            seen.add(pid)
            if len(seen) >= self.shape.workers:
                return
        raise RuntimeError(
            f"{self.setting.target}: {len(seen)} of {self.shape.workers} workers answered in "
            f"{START_TIMEOUT_SECONDS:.0f}s under {self.shape.describe()}.{self.log_tail()}"
        )

    def log_tail(self, lines: int = 12) -> str:
        """Why the server stopped, in the paragraph's words: a traceback's last
        line and the line of the user's code it came from, then where the log
        is. The server's own frames (gunicorn's HaltServer) say nothing to the
        user; only a log with no Python error in it is shown as its last lines."""
        try:
            written = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        errors = [line for line in written if ERROR_LINE.match(line.strip())]
        if not errors:
            tail = "\n".join(written[-lines:])
            return f" Last lines of {self.log_path}:\n{tail}" if written else ""
        where = users_line(written, self.setting.chdir)
        return f" {errors[-1].strip()}{where}. The server's log: {self.log_path}"

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+)')


def users_line(written: list[str], folder: Path) -> str:
    """The last traceback frame in the log that is a file under the user's
    folder, with its source line: ', at shop.py, line 31: `1 / 0`'; or ''."""
    folder = folder.resolve()
    for n in range(len(written) - 1, -1, -1):
        frame = FRAME.match(written[n])
        if not frame:
            continue
        path = Path(frame["file"])
        if not path.is_absolute() or not path.resolve().is_relative_to(folder):
            continue
        following = written[n + 1].strip() if n + 1 < len(written) else ""
        text = "" if FRAME.match(following) or ERROR_LINE.match(following) else following
        name = path.resolve().relative_to(folder)
        return f", at {name}, line {frame['line']}" + (f": `{text}`" if text else "")
    return ""


@dataclass
class Deployment:
    urls: list[str]  # where the users send requests
    workers: int  # worker processes behind each url, to spread connections over
    restart: Callable[[], None]  # called once in the middle of the run
    store: StoreServer | None = None  # the spec's [app].store, running


def start_store(kind: str, data: Path) -> "EmbeddedValkey":
    """The spec's store, on its own folder under {data} and a free port."""
    if kind != "valkey":  # spec.py lets no other through
        raise ValueError(f"no store named {kind!r}")
    # SIGKILL if the check dies without stopping it (kill -9): store-paused may
    # have it stopped, and a stopped server acts on no gentler signal; its data
    # is thrown away with {data} anyway. Imported here, as serve.processes
    # does: redis is for the specs that name a store.
    from serve.valkey import EmbeddedValkey

    return EmbeddedValkey(data / "valkey", port=free_port(), death_signal=signal.SIGKILL).start()


@contextmanager
def deployed(setting: Setting, shape_name: str) -> Iterator[Deployment]:
    """The app under this shape, its data (and store) fresh; stopped, and
    the data deleted, on exit."""
    shape = SHAPES[shape_name]
    with run_folder("check") as data, ExitStack() as running:
        store, store_url = None, ""
        if setting.app.store:
            store = start_store(setting.app.store, data)
            running.callback(store.stop)
            store_url = store.url
        run_setup(setting, data, store_url)
        servers = []
        for _ in range(shape.instances):
            server = CheckServer(setting, shape, data, free_port(), store_url)
            servers.append(server.start())
            running.callback(server.stop)
        if shape.instances > 1:
            balancer = Balancer([s.url for s in servers], data / "caddy")
            running.enter_context(balancer)
            yield Deployment([balancer.url], 0, lambda: None, store)
            return

        def restart() -> None:
            if shape.restart:
                servers[0].stop()
                servers[0].start()

        yield Deployment([servers[0].url], shape.workers, restart, store)
