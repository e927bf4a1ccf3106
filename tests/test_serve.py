"""The launchers: the server shape the environment asks for is the one that runs."""

import collections
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from plumbing.config import REPO_ROOT
from serve import pids
from serve.pids import outgoing_ports_start, pid_alive
from serve.postgres import EmbeddedPostgres
from serve.processes import AppServer, free_port
from serve.valkey import EmbeddedValkey
from tests.conftest import launch

pytestmark = pytest.mark.gunicorn


def test_the_environment_sets_the_number_of_workers(monkeypatch):
    # The README tells users to set GUNICORN_WORKERS; the launcher must not
    # override it with the shared config's default of 2.
    monkeypatch.setenv("GUNICORN_WORKERS", "3")
    monkeypatch.setenv("GUNICORN_THREADS", "1")
    with AppServer("broken_global", free_port()) as server:
        assert len(server.worker_pids) == 3
        assert server.shape() == "gunicorn gthread 3 workers x 1 threads"


def mapped_in(pid: int, library: str) -> bool:
    """Whether a process has a shared library in its memory, as /proc shows."""
    return library in Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.parametrize(("worker_class", "imported"), [("gthread", True), ("gevent", False)])
def test_the_master_imports_flask_before_it_forks_unless_gevent_patches(
    monkeypatch, worker_class, imported
):
    # Flask imports Jinja, which loads MarkupSafe's compiled speedups: mapped
    # in the master, it was imported there, once, and every worker inherits it.
    monkeypatch.setenv("GUNICORN_WORKER_CLASS", worker_class)
    with AppServer("broken_global", free_port()) as server:
        assert mapped_in(server.process.pid, "markupsafe/_speedups") is imported
        assert all(mapped_in(pid, "markupsafe/_speedups") for pid in server.worker_pids)


def test_the_embedded_valkey_fsyncs_before_it_replies_unless_told_otherwise(tmp_path, monkeypatch):
    # "everysec" loses acknowledged writes to a badly timed kill (test_durability.py).
    command = EmbeddedValkey(tmp_path).command()
    assert command[command.index("--appendfsync") + 1] == "always"
    monkeypatch.setenv("VALKEY_APPENDFSYNC", "everysec")
    assert EmbeddedValkey(tmp_path).appendfsync == "everysec"
    monkeypatch.setenv("VALKEY_APPENDFSYNC", "sometimes")
    with pytest.raises(ValueError, match="VALKEY_APPENDFSYNC"):
        EmbeddedValkey(tmp_path)


def test_the_embedded_postgresql_flushes_before_it_acknowledges_unless_told_otherwise(
    tmp_path, monkeypatch
):
    # "off" loses acknowledged commits to a crash of the server (test_durability.py).
    command = EmbeddedPostgres(tmp_path).command()
    assert command[command.index("synchronous_commit=on") - 1] == "-c"
    monkeypatch.setenv("POSTGRES_SYNCHRONOUS_COMMIT", "off")
    assert "synchronous_commit=off" in EmbeddedPostgres(tmp_path).command()
    monkeypatch.setenv("POSTGRES_SYNCHRONOUS_COMMIT", "sometimes")
    with pytest.raises(ValueError, match="POSTGRES_SYNCHRONOUS_COMMIT"):
        EmbeddedPostgres(tmp_path)


def wait_until_gone(pids: list[int], seconds: float = 20.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while (alive := [pid for pid in pids if pid_alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive


def test_a_sigkilled_launcher_leaves_no_server_running(isolated_var_dir):
    # A SIGKILL runs no clean-up: only the servers' parent-death signal stops them.
    port = free_port()
    launcher = launch("fixed_cache", port, start_new_session=True)
    try:
        # "fixed_cache  http://...  (gunicorn pid N, valkey-server pid M at ...)"
        line = launcher.stdout.readline()
        pids = [int(pid) for pid in re.findall(r"pid (\d+)", line)]
        assert len(pids) == 2, line
    finally:
        launcher.kill()
        launcher.wait()
        launcher.stdout.close()
    assert wait_until_gone(pids) == []
    with AppServer("fixed_cache", port) as again:  # the port and the data folder are free
        assert again.backing.process.pid not in pids


def test_a_port_held_by_a_stale_server_is_named_with_its_pid():
    with socket.socket() as stale:
        stale.bind(("127.0.0.1", 0))
        stale.listen()
        port = stale.getsockname()[1]
        held = rf"port {port} is already in use by pid {os.getpid()}"
        with pytest.raises(RuntimeError, match=held):
            AppServer("broken_global", port).start()


def children_of(pid: int) -> list[int]:
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == pid:
            found.append(int(entry))
    return found


@pytest.mark.parametrize("attempt", range(4))
def test_ctrl_c_during_start_up_leaves_nothing_running(isolated_var_dir, attempt):
    # The moment the store's process exists, before the launcher has heard
    # back from it: a server started inside start() must still be stopped.
    launcher = launch("fixed_cache", free_port(), stdout=subprocess.DEVNULL, start_new_session=True)
    started: list[int] = []
    deadline = time.monotonic() + 20
    while not started and launcher.poll() is None and time.monotonic() < deadline:
        started = children_of(launcher.pid)
    assert started, "the launcher started no server"
    os.killpg(launcher.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
    launcher.wait(timeout=30)
    assert wait_until_gone(started) == []


def test_no_launcher_leaves_a_gunicorn_control_socket_in_home(tmp_path, monkeypatch):
    # gunicorn 25.1+ opens ~/.gunicorn/gunicorn.ctl by default: one path for
    # every gunicorn of the account, each replacing the last one's.
    from examples.servers import Gunicorn

    monkeypatch.setenv("HOME", str(tmp_path))
    with AppServer("broken_global", free_port()):
        pass
    with Gunicorn("broken_global.app:create_app()"):
        pass
    assert not (tmp_path / ".gunicorn").exists()


def test_free_ports_lie_below_the_range_outgoing_connections_take_theirs_from():
    # A port the kernel hands out (bind to 0) was, once in seven grades, taken
    # as the local port of a connection the check's other shape opened before
    # the server bound it: "port ... is already in use".
    start = outgoing_ports_start()
    if start is None:
        pytest.skip("no /proc/sys/net/ipv4/ip_local_port_range here")
    ports = [free_port() for _ in range(50)]
    assert all(1024 <= port < start for port in ports), ports
    assert len(set(ports)) == len(ports)  # never the same one twice in a row


PICKS_ONE_PORT = """
import sys
from serve import pids
pids.PICK.randrange = lambda low, high: int(sys.argv[1])
print(pids.free_port(), flush=True)
sys.stdin.read()  # holds it until told
"""


def unclaimed_port() -> int:
    """A free port this process has not claimed, as the kernel hands one out."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_port_another_process_just_picked_is_not_picked_again(monkeypatch):
    # Two test processes once picked the same free port; the second server
    # to start found it taken. Here another process picks it first, and has
    # not started anything on it yet.
    first, second = unclaimed_port(), unclaimed_port()
    other = subprocess.Popen(
        [sys.executable, "-c", PICKS_ONE_PORT, str(first)],
        cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert other.stdout.readline().strip() == str(first)
        picks = iter([first, second])
        monkeypatch.setattr(pids.PICK, "randrange", lambda low, high: next(picks))
        monkeypatch.setattr(pids, "HANDED_OUT", collections.deque())  # ours forgot both
        assert free_port() == second
    finally:
        other.communicate("")
