"""The embedded PostgreSQL server (serve/postgres.py), run for real: our child
on a private socket, stopped by PID; ready before the first connection; two
first starts making one cluster; a second server on a cluster refused; no
shared memory left behind; a Ctrl-C held inside start() and a SIGKILLed
launcher leaving nothing running. Fixtures: tests/postgres_fixtures.py.
"""

import os
import pwd
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest

from plumbing.config import REPO_ROOT
from serve.pids import start_time
from serve.postgres_host import (
    ROOT_HOME,
    SERVER_ACCOUNT,
    has_exited,
    running_as_root,
)
from tests.conftest import processes_mentioning
from tests.postgres_fixtures import (
    mode,
    started,
    wait_for,
)

# The embedded server.


def test_the_server_is_our_child_on_a_private_socket_and_stops_by_pid(own_server):
    server = started(own_server())
    pid = server.process.pid
    status = Path(f"/proc/{pid}/status").read_text()
    assert f"PPid:\t{os.getpid()}\n" in status  # our child, not a detached daemon
    with psycopg.connect(server.url) as conn:
        listen, sync = (
            conn.execute(f"SHOW {name}").fetchone()[0]
            for name in ("listen_addresses", "synchronous_commit")
        )
    assert sync == "on"
    if server.port is None:
        assert listen == ""  # no TCP at all
        assert mode(server.socket_dir) == 0o700
    else:  # the socket's path was too long here: 127.0.0.1, with a password
        assert listen == "127.0.0.1"
        assert mode(server.password_file()) == 0o600
    environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    assert not [v for v in environment if v.startswith((b"SECRET_KEY=", b"DATABASE_URL="))]
    assert mode(server.directory) == 0o700
    if running_as_root():
        account = pwd.getpwnam(SERVER_ACCOUNT)
        assert f"Uid:\t{account.pw_uid}\t" in status  # PostgreSQL refuses to run as root
        assert server.data_dir.stat().st_uid == account.pw_uid
        assert mode(server.data_dir) == 0o700
        for folder in (ROOT_HOME, server.home):  # passable, not listable, root's
            assert (mode(folder), folder.stat().st_uid) == (0o711, 0)
        assert (server.directory / "data").resolve() == server.data_dir
    server.stop()
    assert server.process.returncode == 0  # a clean fast shutdown
    assert not processes_mentioning(str(server.directory))


def test_a_start_waits_for_ready_without_a_refused_try_in_the_log(own_server):
    """After a crash the server replays its WAL before it is ready; a start
    that tried to connect meanwhile left one "FATAL: the database system is
    starting up" line per try (25 after one crash, measured)."""
    server = started(own_server())
    server.kill()
    server.start()
    try:
        assert "starting up" not in server.log_path().read_text()
    finally:
        server.stop()


HELD_START = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from serve.postgres import EmbeddedPostgres

    class Held(EmbeddedPostgres):
        # Holds start() at one point, so that the Ctrl-C lands there.
        def _spawn(self, command, log=True):
            process = super()._spawn(command, log)
            if sys.argv[2] == "initdb" and "--pgdata" in command:
                print("held", process.pid, flush=True)
                time.sleep(60)
            return process

        def _create_database(self, name):
            if sys.argv[2] == "server":
                print("held", self.process.pid, flush=True)
                time.sleep(60)
            super()._create_database(name)

    Held(Path(sys.argv[1])).start()
    """
)


FIRST_START = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from serve.postgres import EmbeddedPostgres

    server = EmbeddedPostgres(Path(sys.argv[1]))
    try:
        server.start()
    except RuntimeError as error:
        print("refused:", str(error).replace("\\n", " "), flush=True)
        sys.exit(3)
    print("started", server.process.pid, flush=True)
    sys.stdin.read()  # until the test closes it
    server.stop()
    """
)


def test_two_first_starts_on_a_new_cluster_make_one_server_and_refuse_the_other(
    own_server, tmp_path
):
    """Two launchers at once on a folder with no cluster yet: both used to run
    initdb into the same scratch folder, and one failed on the other's files."""
    directory = tmp_path / "new" / "postgres"
    own_server(directory)  # removed at the end, whatever is left of it
    launchers = [
        subprocess.Popen(
            [sys.executable, "-c", FIRST_START, str(directory)],
            cwd=REPO_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        refused, started = sorted(launcher.stdout.readline() for launcher in launchers)
        assert refused.startswith("refused: ") and "in use by another" in refused, refused
        assert started.startswith("started "), started
    finally:
        for launcher in launchers:
            launcher.stdin.close()
            launcher.wait(timeout=20)
    assert sorted(launcher.returncode for launcher in launchers) == [0, 3]
    assert not processes_mentioning(str(directory.absolute()))


def sysv_segments() -> set[str]:
    """The ids of the System V shared memory segments that exist now."""
    return {line.split()[1] for line in Path("/proc/sysvipc/shm").read_text().splitlines()[1:]}


def test_a_second_server_on_the_same_cluster_is_refused_and_never_mistaken_for_ours(own_server):
    # The first server's socket answers: the second launcher must not take
    # that answer for its own server, which exits at once (lock file taken).
    first = own_server().start()
    second = own_server(first.directory)
    with pytest.raises(
        RuntimeError, match=f"in use by another PostgreSQL server.*{first.process.pid}"
    ):
        second.start()
    assert second.process is None or has_exited(second.process)
    assert first.running_postmaster() == first.process.pid


def test_a_killed_server_leaves_no_shared_memory_once_removed(own_server):
    server = own_server().start()
    maps = Path(f"/proc/{server.process.pid}/maps").read_text()
    assert "/dev/shm/PostgreSQL" not in maps, "dynamic shared memory under /dev/shm"
    server.kill()  # a crash: nothing frees the segment
    segment = (server.data_dir / "postmaster.pid").read_text().split("\n")[6].split()[1]
    assert segment in sysv_segments()
    server.remove()
    assert segment not in sysv_segments()


@pytest.mark.parametrize("during", ["initdb", "server"])
def test_ctrl_c_during_start_up_leaves_nothing_running(own_server, tmp_path, during):
    directory = tmp_path / "var" / "postgres"
    server = own_server(directory)  # removed at the end, whatever is left of it
    if during == "server":  # a cluster already there: the Ctrl-C comes as the server starts
        started(server).stop()
    launcher = subprocess.Popen(
        [sys.executable, "-c", HELD_START, str(directory), during],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = launcher.stdout.readline()
        assert line.startswith("held "), launcher.stderr.read()
        child = int(line.split()[1])
        assert processes_mentioning(str(directory.absolute()))  # initdb or postgres is running
        launcher.send_signal(signal.SIGINT)
        launcher.wait(timeout=20)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert "KeyboardInterrupt" in launcher.stderr.read()
    assert start_time(child) is None
    assert not processes_mentioning(str(directory.absolute()))
    if during == "initdb":
        assert not (server.data_dir / "PG_VERSION").exists()  # never taken for a cluster


def test_a_launcher_killed_with_sigkill_takes_its_server_down(own_server, tmp_path):
    """SIGKILL runs no clean-up; the kernel's parent-death signal (SIGINT,
    PostgreSQL's fast shutdown) stops the server anyway (Linux)."""
    directory = tmp_path / "var" / "postgres"
    started(own_server(directory)).stop()  # a cluster there, copied
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path\n"
            "from serve.postgres import EmbeddedPostgres\n"
            "server = EmbeddedPostgres(Path(sys.argv[1])).start()\n"
            "print(server.process.pid, flush=True); time.sleep(60)",
            str(directory),
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        postmaster = int(launcher.stdout.readline())
    finally:
        launcher.kill()
        launcher.wait()
    wait_for(lambda: not processes_mentioning(str(directory.absolute())), "the server to stop")
    assert start_time(postmaster) is None  # exited (a zombie at most, for PID 1 to reap)
    assert "received fast shutdown request" in (directory / "postgres.log").read_text()
