"""Real servers for the proofs: gunicorn or uWSGI in a subprocess, Werkzeug's in a thread.

    with Gunicorn("examples.half_fix_lock:app", workers=2) as server:
        requests.post(server.url + "/increment")
        with server.only(server.worker_pids[0]):  # the others paused: this one answers
            requests.get(server.url + "/counter")

    with dev_server(app) as url:  # what `flask run` serves with
        requests.get(url + "/")

All bind to 127.0.0.1 on a free port and are stopped when the block ends
(gunicorn and uWSGI by their PID). Every example app stamps `X-Worker:
<pid>-<thread>` on its responses with stamp_worker(), so a proof can tell
which process answered.
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Self, TypeVar

import requests
from flask import Flask
from werkzeug.serving import WSGIRequestHandler, make_server

from plumbing.config import REPO_ROOT
from plumbing.http import worker_id
from serve import uwsgi
from serve.pids import START_TIMEOUT_SECONDS, Service, free_port, signals_held, spawn, stop_process

T = TypeVar("T")


def stamp_worker(app: Flask) -> Flask:
    """Add the X-Worker header (which process and thread answered) to every response."""

    @app.after_request
    def add_worker_header(response):
        response.headers["X-Worker"] = worker_id()
        return response

    return app


def worker_of(response: requests.Response) -> int:
    """The PID of the worker process that answered."""
    return int(response.headers["X-Worker"].partition("-")[0])


def at_once(*calls: Callable[[], T]) -> list[T]:
    """Run each call in a thread of its own, all at the same time; return their
    results in order (the first exception, if any, is raised). Proofs run
    independent servers this way: a server spends most of its start and stop
    waiting, not computing."""
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
        return [future.result() for future in futures]


def increments_at_once(url: str, clients: int, each: int) -> tuple[list[int], set[int]]:
    """`clients` users start together, each POSTing /increment `each` times, on a
    new connection every time (so that any worker may take it). Returns every
    value answered, sorted, and the PIDs of the workers that answered."""
    start, lock = threading.Barrier(clients), threading.Lock()
    values: list[int] = []
    workers: set[int] = set()

    def client() -> None:
        start.wait(timeout=10)
        for _ in range(each):
            response = requests.post(url + "/increment", timeout=10)
            response.raise_for_status()
            with lock:
                values.append(response.json()["value"])
                workers.add(worker_of(response))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return sorted(values), workers


class Gunicorn(Service):
    """One app under real gunicorn, in the background, stopped by PID.

    `options` are gunicorn command-line flags, e.g. ["--preload"]. threads > 1
    runs gthread workers, as the project's shared config does; threads == 1
    runs sync workers, which serve one request at a time in their main thread;
    worker_class names another (e.g. "gevent"). `env` is added to this
    environment. `port` is the one to bind, e.g. the port of a server just
    stopped, to restart it where its users' cookies point.
    """

    name = "gunicorn"

    def __init__(
        self,
        target: str,
        *,
        workers: int = 2,
        threads: int = 1,
        worker_class: str | None = None,
        options: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.target = target
        self.workers = workers
        self.threads = threads
        self.worker_class = worker_class or ("gthread" if threads > 1 else "sync")
        self.options = list(options)
        self.env = dict(env or {})
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None
        self.worker_pids: list[int] = []  # those that answered at start-up
        self.log_dir = Path(tempfile.mkdtemp(prefix=f"{self.name.lower()}-"))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "gunicorn",
            "--bind", f"127.0.0.1:{self.port}",
            "--workers", str(self.workers),
            "--worker-class", self.worker_class,
            "--threads", str(self.threads),
            "--graceful-timeout", "2",
            *no_control_socket(),
            *self.options,
            self.target,
        ]  # fmt: skip

    def start(self) -> Self:
        with (self.log_dir / "gunicorn.log").open("ab") as log, signals_held():
            # Its own process group (workers are known by it), and stopped by the
            # kernel if this process is killed outright (serve.pids.spawn).
            self.process = spawn(
                self.command(),
                cwd=REPO_ROOT,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            self.wait_until_every_worker_answers()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_until_every_worker_answers(self) -> None:
        """Ask until each worker has answered once. Those that have answered
        are paused, so the next request can only go to one that has not."""
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while len(self.worker_pids) < self.workers:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start-up:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} workers did not all answer:\n{self.log_tail()}")
            with self.paused(*self.worker_pids):
                try:
                    response = requests.get(self.url + "/", timeout=1)
                except requests.RequestException:
                    time.sleep(0.05)
                    continue
            self.worker_pids.append(worker_of(response))

    @contextmanager
    def paused(self, *pids: int | None) -> Iterator[None]:
        """Pause these workers (SIGSTOP) for the length of the block.

        A paused worker accepts no connection, so a request sent meanwhile goes
        to another worker, as it would if this one were busy with a slow request.
        """
        stopped = []
        try:
            for pid in filter(None, pids):
                if self.is_my_worker(pid):
                    with suppress(ProcessLookupError):  # it exited meanwhile
                        os.kill(pid, signal.SIGSTOP)
                        stopped.append(pid)
            yield
        finally:
            for pid in stopped:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    @contextmanager
    def only(self, pid: int) -> Iterator[None]:
        """Pause every other worker for the length of the block, so that this one answers."""
        with self.paused(*(other for other in self.worker_pids if other != pid)):
            yield

    def is_my_worker(self, pid: int) -> bool:
        """True for a live worker of this server: a process of its group, not
        the master. A worker that has exited (recycled) is no longer one."""
        try:
            return pid != self.process.pid and os.getpgid(pid) == self.process.pid
        except ProcessLookupError:
            return False

    def log_tail(self, lines: int = 15) -> str:
        text = (self.log_dir / "gunicorn.log").read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
        shutil.rmtree(self.log_dir, ignore_errors=True)


def no_control_socket() -> list[str]:
    """gunicorn 25.1 and later open ~/.gunicorn/gunicorn.ctl unless told not
    to, one path for every gunicorn of the account (serve/gunicorn_conf.py)."""
    from gunicorn.config import KNOWN_SETTINGS

    known = any(setting.name == "control_socket_disable" for setting in KNOWN_SETTINGS)
    return ["--no-control-socket"] if known else []


class Uwsgi(Gunicorn):
    """One app under real uWSGI, in the background, stopped by PID: its master
    and `workers` worker processes, one thread each, HTTP on 127.0.0.1.

    uWSGI loads the app once, in its master, then forks the workers (what
    gunicorn does only with --preload); `options` such as ["--lazy-apps"]
    make each worker load its own. Needs the `uwsgi` package (built from
    source: `.venv/bin/pip install uwsgi`, a C compiler and Python's headers).
    """

    name = "uWSGI"

    def command(self) -> list[str]:
        return [*uwsgi.command(self.target, self.port, self.workers), *self.options]

    def start(self) -> Self:
        if not uwsgi.available():
            raise RuntimeError(uwsgi.missing_message())
        return super().start()


@contextmanager
def flask_run(app_import: str) -> Iterator[str]:
    """`flask --app <app_import> run`, the dev server as people start it, in a
    process of its own (threaded, as by default); yield its URL."""
    port = free_port()
    command = [
        sys.executable, "-m", "flask", "--app", app_import,
        "run", "--host", "127.0.0.1", "--port", str(port), "--with-threads", "--no-reload",
    ]  # fmt: skip
    env = {**os.environ, "FLASK_DEBUG": "0"}
    with tempfile.TemporaryFile() as log, ExitStack() as stops:
        with signals_held():  # started and due to be stopped, or not started
            process = spawn(
                command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
            stops.callback(stop_process, process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            try:
                requests.get(url + "/", timeout=1)
                break
            except requests.RequestException:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    output = log.read().decode(errors="replace")
                    raise RuntimeError(f"flask run did not start:\n{output}") from None
                time.sleep(0.05)
        yield url


class QuietRequestHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # the proofs print their own one line


@contextmanager
def dev_server(app: Flask, *, threaded: bool = True) -> Iterator[str]:
    """Serve `app` with Werkzeug's development server, the one behind `flask
    run` and app.run(), in a background thread; yield its URL.

    threaded=True is what `flask run` does: a new thread for every request.
    threaded=False serves every request in the one server thread."""
    # Port 0: the OS picks a free port, with no window for anyone to take it.
    server = make_server(
        "127.0.0.1", 0, app, threaded=threaded, request_handler=QuietRequestHandler
    )
    thread = threading.Thread(target=server.serve_forever, name="dev-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
