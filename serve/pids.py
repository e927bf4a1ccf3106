"""Ports on 127.0.0.1, and the processes we start and stop, by PID."""

import collections
import contextlib
import ctypes
import fcntl
import functools
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Self

STOP_TIMEOUT_SECONDS = 10.0
# How long a server may take to answer once started (PostgreSQL's own is longer:
# initdb, then crash recovery; serve/postgres.py).
START_TIMEOUT_SECONDS = 20.0


SERVER_PORTS = 8192  # how many ports below the kernel's range free_port() picks from
HANDED_OUT: collections.deque[int] = collections.deque(maxlen=1024)  # the latest, not again
# Across processes: each port picked is claimed in a file of this folder, locked
# while the process that picked it holds it (claim()).
CLAIMS = Path(tempfile.gettempdir()) / f"serve-ports-{os.getuid()}"
HELD_CLAIMS = 64  # the latest claims a process holds: far more than start at once
HELD: collections.deque[tuple[int, int]] = collections.deque()  # (port, its file's descriptor)
PICK = (
    random.SystemRandom()
)  # its own: a test that seeds `random` (Hypothesis does) changes nothing


def free_port() -> int:
    """A port on 127.0.0.1 that nothing holds, for a server about to start.
    Picked below the kernel's range for outgoing connections
    (ip_local_port_range): a port the kernel hands out (bind to 0) can be
    taken, before the server binds it, as the local port of a connection
    some client of ours opens meanwhile (another shape of the same check,
    another test), and the server's start fails with the port in use."""
    low = outgoing_ports_start()
    if low is not None and low - SERVER_PORTS >= 1024:
        for _ in range(100):
            port = PICK.randrange(low - SERVER_PORTS, low)
            if port not in HANDED_OUT and port_is_free(port) and claim(port):
                HANDED_OUT.append(port)
                return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def claim(port: int) -> bool:
    """Whether no other process picked `port` lately. Two test processes
    once picked the same free port, and the one whose server started second
    found it taken. A port picked is claimed by a lock (flock) on its file
    in CLAIMS, held until this process has picked HELD_CLAIMS more or exits
    (the kernel drops a dead process's locks). Without the folder, no claim."""
    try:
        CLAIMS.mkdir(mode=0o700, exist_ok=True)
        claimed = os.open(CLAIMS / str(port), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return True
    try:
        fcntl.flock(claimed, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(claimed)
        return False
    HELD.append((port, claimed))
    while len(HELD) > HELD_CLAIMS:
        os.close(HELD.popleft()[1])
    return True


def outgoing_ports_start() -> int | None:
    """The first port of Linux's range for outgoing connections, or None."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


PR_SET_PDEATHSIG = 1  # prctl(2), Linux
# libc as this process has it loaded: find_library() would run `ldconfig -p`,
# a child process at every launcher's import.
LIBC = ctypes.CDLL(None) if sys.platform == "linux" else None


def _die_with_parent(parent: int, death_signal: int) -> None:
    """Runs in the child, between fork and exec: arm the parent-death signal,
    then make sure the parent has not died already (before it was armed)."""
    LIBC.prctl(PR_SET_PDEATHSIG, death_signal)
    if os.getppid() != parent:
        os._exit(1)


# Set by remember_interrupts()'s handler when Ctrl-C (or SIGTERM) reaches a
# launcher. Python drops a KeyboardInterrupt raised while a finalizer
# (__del__) or a weakref callback runs, printing "Exception ignored": the
# launcher would start its next server and serve on. The flag outlives the
# exception, and the next spawn, or the wait while serving, raises it again.
INTERRUPTED = threading.Event()


def remember_interrupts() -> Callable[[], None]:
    """For a launcher's main thread: SIGINT and SIGTERM raise KeyboardInterrupt
    and set INTERRUPTED; returns what undoes it (handlers back, flag cleared)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupted(_signum: int, _frame: object) -> None:
        INTERRUPTED.set()
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, interrupted) for s in (signal.SIGINT, signal.SIGTERM)}

    def undo() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        INTERRUPTED.clear()

    return undo


def raise_if_interrupted() -> None:
    """A Ctrl-C that Python dropped still stops the launcher (INTERRUPTED)."""
    if INTERRUPTED.is_set():
        raise KeyboardInterrupt


def join_all(threads: Iterable[threading.Thread]) -> None:
    """Wait for the threads, as join() does; but a Ctrl-C or SIGTERM that
    Python dropped (INTERRUPTED) ends the wait within a tenth of a second, as
    KeyboardInterrupt, where join() would wait the threads out (a stall's
    30 s of load, say). Not in a `finally`: it may raise."""
    for thread in threads:
        while thread.is_alive():
            raise_if_interrupted()
            thread.join(0.1)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back while a child is started and recorded,
    then act on them. Both steps must happen, or neither: a KeyboardInterrupt
    between the fork and the line that records the child leaves a server
    nobody stops, and one that comes while Python runs its fork handlers
    (os.register_at_fork, which logging uses) is printed as "Exception
    ignored" and lost, so the launcher serves on as if no Ctrl-C came. Only
    the main thread runs signal handlers; elsewhere this only refuses to
    start anything once the launcher was interrupted."""
    raise_if_interrupted()
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {signum: signal.signal(signum, lambda n, _: caught.append(n)) for signum in held}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        for signum in caught[:1]:
            signal.raise_signal(signum)  # handled now, as it would have been


def spawn(command: list[str], death_signal: int = signal.SIGTERM, **popen: Any) -> subprocess.Popen:
    """Start a server we will stop by PID: in a session of its own (a Ctrl-C
    reaches the launcher only, which stops it in order), and, on Linux, with a
    parent-death signal, so that a launcher killed with SIGKILL, which runs no
    clean-up, still takes it down: the kernel sends it `death_signal` when the
    thread that started it ends (prctl(2), PR_SET_PDEATHSIG).

    Call it inside `with signals_held():` together with the line that records
    the process for stopping (`self.process = spawn(...)`); it holds them
    itself too, so that no Ctrl-C is lost in Python's fork handlers."""
    if LIBC is not None:
        popen["preexec_fn"] = functools.partial(_die_with_parent, os.getpid(), death_signal)
    with signals_held():
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


def pids_mentioning(text: str) -> list[int]:
    """Processes other than this one whose command line or environment holds
    `text` (a folder, say), from /proc: Linux, and only those this account
    may read; elsewhere an empty list."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc") if Path("/proc").is_dir() else []):
        if int(pid) == os.getpid():
            continue
        try:
            seen = Path(f"/proc/{pid}/cmdline").read_bytes()
            seen += Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue  # gone, or not ours
        if text.encode() in seen:
            found.append(int(pid))
    return found


def command_line(pid: int, limit: int = 160) -> str | None:
    """A process's command line as a person would type it: the program's own
    name, paths under the working folder relative to it, e.g. "python -m
    gunicorn --config serve/gunicorn_conf.py fixed_db.app:create_app()".
    None if it is gone or not ours to read (Linux /proc)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    except OSError:
        return None
    words = [a.decode(errors="replace").replace("\n", " ") for a in argv if a]
    if not words:
        return None
    here = f"{Path.cwd()}/"
    words = [Path(words[0]).name, *(w.removeprefix(here) for w in words[1:])]
    shown = " ".join(words)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def parent_pid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def is_launcher(command: str | None) -> bool:
    """Whether a command line is one of this project's launchers (`python -m
    serve`, `-m loadtests.runs.hammer`, ...): a server it started is served on
    purpose, by a launcher that still runs."""
    words = (command or "").split()
    if "-m" not in words[:-1]:
        return False
    module = words[words.index("-m") + 1]
    return module == "serve" or module.startswith(("serve.", "loadtests.", "docs.tools."))


def port_in_use_message(port: int, what: str, elsewhere: str = "") -> str:
    """Why `what` cannot start on `port`, in one paragraph: which process
    holds it (the top one: gunicorn's master, not the workers that share its
    socket), whether a launcher still runs it, and what to do: stop that one
    first, or `elsewhere` (how this launcher serves on another port; by
    default "serve `what` on another port")."""
    elsewhere = elsewhere or f"serve {what} on another port"
    pids = listening_pids(port)
    if not pids:
        return (
            f"port {port} is already in use, by a process this account cannot see: "
            f"stop whatever serves it, or {elsewhere}."
        )
    holder = next((pid for pid in pids if parent_pid(pid) not in pids), pids[0])
    held = f"port {port} is already in use by pid {holder} ({command_line(holder) or '?'})"
    parent = parent_pid(holder)
    launcher = command_line(parent) if parent else None
    if is_launcher(launcher):
        return (
            f"{held}, which pid {parent} ({launcher}) started and still runs, perhaps "
            f"in another terminal. Stop that one first (Ctrl-C where it runs, or "
            f"`kill {parent}`), or {elsewhere}."
        )
    ours = any(mark in (command_line(holder) or "") for mark in (":create_app", "valkey"))
    if ours:  # one of our servers, its launcher gone: its parent is init, or a subreaper
        return (
            f"{held}, and no launcher runs it any more (its parent is pid {parent}): "
            f"a server left running, perhaps by a launcher that was killed. Stop it with "
            f"`kill {holder}`, or {elsewhere}."
        )
    return (
        f"{held}, started by pid {parent} ({launcher or '?'}). If it is yours and you "
        f"are done with it, stop it with `kill {holder}`; or {elsewhere}."
    )


def port_is_free(port: int) -> bool:
    """True unless something listens there. SO_REUSEADDR, as gunicorn sets it:
    connections of a server that just stopped (TIME_WAIT) do not count."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OverflowError:  # not a port at all: 0 to 65535
            raise RuntimeError(f"port {port} is out of range (1 to 65535)") from None
        except OSError:
            return False
        return True


def stop_process(
    process: subprocess.Popen, timeout: float = STOP_TIMEOUT_SECONDS, sig: int = signal.SIGTERM
) -> None:
    """SIGTERM (or `sig`) the process we started, by its PID, then SIGKILL if
    it lingers past `timeout`.

    Reaped with os.waitpid, not Popen.wait(): a Ctrl-C whose KeyboardInterrupt
    lands just after Popen.poll() took the lock it reaps under, before its
    `try`, leaves that lock taken, and Popen.wait() then waits forever (a
    launcher Ctrl-C'd during start-up hung so, with its clean-up deaf to
    signals)."""
    if process.returncode is not None or reaped(process, 0):
        return
    os.kill(process.pid, sig)
    if not reaped(process, timeout):
        os.kill(process.pid, signal.SIGKILL)
        reaped(process, None)


def reaped(process: subprocess.Popen, timeout: float | None) -> bool:
    """Wait up to `timeout` seconds (None: for as long as it takes) for our
    child to exit, and record its exit code on `process`. True once it has."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        try:
            pid, status = os.waitpid(process.pid, os.WNOHANG)
        except ChildProcessError:  # reaped already, by a Popen call elsewhere
            process.returncode = 0 if process.returncode is None else process.returncode
            return True
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(0.005)


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


@contextlib.contextmanager
def cleanup_shielded(held: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """shield_cleanup() for a block, then the handlers back: for a clean-up in
    code that goes on afterwards (a library call, a loop). Main thread only;
    elsewhere it does nothing, as signal handlers are the main thread's."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in held}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another account's
        return True
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


def proc_stat(pid: int | str) -> list[str] | None:
    """/proc/<pid>/stat after the command's name: state, parent, group, ...
    (Linux); None if there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def start_time(pid: int) -> str | None:
    """When the process started (clock ticks since boot), or None once it has
    exited: gone, or a zombie waiting to be reaped by PID 1 (which, in some
    containers, never comes)."""
    fields = proc_stat(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    return fields[19]


def descendants(pid: int) -> list[tuple[int, str]]:
    """Every process below pid, with its start time; none without /proc."""
    if not Path("/proc").is_dir():
        return []
    children: dict[int, list[tuple[int, str]]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := proc_stat(entry.name)):
            children.setdefault(int(fields[1]), []).append((int(entry.name), fields[19]))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child[0])
    return found


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
