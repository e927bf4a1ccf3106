"""Ports on 127.0.0.1, and the processes we start and stop, by PID."""

import os
import signal
import socket
import subprocess
import sys
from typing import Self

STOP_TIMEOUT_SECONDS = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    """True unless something listens there. SO_REUSEADDR, as gunicorn sets it:
    connections of a server that just stopped (TIME_WAIT) do not count."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def stop_process(process: subprocess.Popen, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
    """SIGTERM the process we started (by its PID), then SIGKILL if it lingers."""
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


def stop_on_sigterm() -> None:
    """For a foreground launcher: SIGTERM ends it the way Ctrl-C does, through
    its `finally`, where it stops what it started."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))


def shield_cleanup() -> None:
    """Call first in that `finally`: a second Ctrl-C, or a SIGTERM sent to the
    whole process group, must not cut the clean-up short and leave processes
    running."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time a process has used so far, from /proc (Linux);
    None where there is no /proc or the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Service:
    """Something we start and stop (by PID); usable in a `with` block."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
