"""Ports on 127.0.0.1, and the processes we start and stop, by PID."""

import ctypes
import ctypes.util
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Self

STOP_TIMEOUT_SECONDS = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


PR_SET_PDEATHSIG = 1  # prctl(2), Linux
_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if sys.platform == "linux" else None


def _die_with_parent() -> None:  # runs in the child, between fork and exec
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(command: list[str], **popen: Any) -> subprocess.Popen:
    """Start a server we will stop by PID: in a session of its own (a Ctrl-C
    reaches the launcher only, which stops it in order), and, on Linux, with a
    parent-death signal, so that a launcher killed with SIGKILL, which runs no
    clean-up, still takes it down: the kernel sends it SIGTERM when the thread
    that started it ends (prctl(2), PR_SET_PDEATHSIG). The libc function is
    loaded before the fork; the child runs nothing else before exec."""
    if _LIBC is not None:
        popen["preexec_fn"] = _die_with_parent
    return subprocess.Popen(command, start_new_session=True, **popen)


def listening_pids(port: int) -> list[int]:
    """The processes with a socket listening on 127.0.0.1:port, from /proc
    (Linux; elsewhere, or where they are another user's, an empty list)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rpartition(":")[2], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc") if inodes else []):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in inodes for fd in fds):
                pids.append(int(pid))
        except OSError:
            continue
    return sorted(pids)


def port_in_use_message(port: int, what: str) -> str:
    """Why `what` cannot start on `port`, naming what holds it and how to stop it."""
    pids = listening_pids(port)
    if not pids:
        return f"port {port} is already in use: stop whatever serves it, or pick another port"
    commands = []
    for pid in pids:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            shown = " ".join(a.decode(errors="replace") for a in argv[:4]).replace("\n", " ")
            commands.append(f"{pid} ({shown[:120]})")
        except OSError:
            commands.append(str(pid))
    return (
        f"port {port} is already in use by pid {', '.join(commands)}: a server left "
        f"running, perhaps by a launcher that was killed. If it is yours, stop it with "
        f"`kill {pids[0]}`; or pick another port for {what}"
    )


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
