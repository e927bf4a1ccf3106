"""The embedded Valkey's supervisor (serve/valkey.py): a server killed with
SIGKILL is reaped and started again on the same folder, fixed_cache answers
200 again without a restart of gunicorn, and no acknowledged increment is
lost; restarts back off; stop() stops the watcher before the server; a failed
start leaves nothing running or locked; and one folder never has two servers.

Every server is real (valkey-server, gunicorn), started by the test and
stopped by PID. Waits have deadlines so that a broken supervisor fails the
test instead of hanging it; nothing asserts how fast anything is.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from loadtests.clients.client import Client
from loadtests.clients.transport import KeepAliveSession
from serve.pids import descendants, pid_alive
from serve.processes import AppServer, free_port
from serve.store import Paused, state
from serve.valkey import EmbeddedValkey
from tests.conftest import launch

pytestmark = pytest.mark.gunicorn

DEADLINE_SECONDS = 15.0  # only so a broken supervisor fails instead of hanging


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def client_of(valkey: EmbeddedValkey) -> redis.Redis:
    """A client that never retries by itself: one call, one attempt."""
    return redis.Redis.from_url(valkey.url, socket_timeout=2, retry=Retry(NoBackoff(), 0))


def answers(valkey: EmbeddedValkey) -> bool:
    client = client_of(valkey)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def exited(pid: int) -> bool:
    """Gone, or a zombie nobody has reaped yet, with every thread gone too: a
    process's threads share its open files, which close with the last one
    (the leader shows "Z" while the others may still be exiting)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return True  # gone, reaped
    for task in tasks:
        try:
            stat = Path(f"/proc/{pid}/task/{task}/stat").read_text()
        except OSError:
            continue  # this thread is gone; the others may not be
        if stat.rpartition(")")[2].split()[0] not in ("Z", "X"):
            return False
    return True


def kill_and_wait_for_restart(valkey: EmbeddedValkey) -> tuple[int, int]:
    """SIGKILL the server by its PID, as a crash would, and wait until the
    supervisor reports a new one answering. The PIDs before and after."""
    old, restarts = valkey.process.pid, valkey.restarts
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: valkey.restarts > restarts, f"a new valkey-server after pid {old}")
    assert valkey.process.pid != old and answers(valkey)
    return old, valkey.process.pid


def test_fixed_cache_answers_again_after_its_valkey_is_killed(isolated_var_dir):
    """SIGKILL the valkey-server under load: a new one appears on the same
    files, the same gunicorn answers 200 again, and every acknowledged
    increment is still counted. Without a supervisor the app answers 503
    until someone restarts the store, and this test fails waiting for it."""
    env = {"VAR_DIR": str(isolated_var_dir)}
    log = isolated_var_dir / "fixed_cache.log"
    history, stop = [], threading.Event()
    with AppServer("fixed_cache", free_port(), env=env, log_path=log) as server:
        master, workers = server.process.pid, set(server.worker_pids)
        valkey = server.backing
        first = valkey.process.pid

        def load(n: int) -> None:
            client = Client(server.url, user=f"u{n}", http=KeepAliveSession())
            while not stop.is_set():
                history.append(client.increment())
            client.close()

        def acknowledged_after(moment: float) -> int:
            return sum(e.status == 200 and e.start > moment for e in list(history))

        threads = [threading.Thread(target=load, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        try:
            wait_for(lambda: acknowledged_after(0) >= 200, "200 increments before the kill")
            os.kill(first, signal.SIGKILL)
            wait_for(
                lambda: valkey.process.pid != first and answers(valkey),
                f"a new valkey-server after pid {first}",
            )
            second = valkey.process.pid
            back = time.monotonic()
            wait_for(lambda: acknowledged_after(back) >= 200, "200 increments after the restart")
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        reader = Client(server.url, user="reader", http=KeepAliveSession())
        final = reader.read_counter()
        reader.close()
        assert server.process.pid == master and server.process.poll() is None
        answered_by = {int(e.worker.partition("-")[0]) for e in history if e.worker}
        assert answered_by <= workers  # the same worker processes throughout

    assert not pid_alive(first)  # reaped, not a zombie
    assert second != first and valkey.restarts == 1
    assert "killed by SIGKILL" in valkey.supervisor_log_path().read_text()
    statuses = {e.status for e in history}
    assert statuses <= {200, 503}, statuses  # never a 500, never a dropped request
    acknowledged = sum(e.status == 200 for e in history)
    assert final.status == 200
    # A 503 may or may not have been applied; a 200 must have been.
    assert acknowledged <= final.value <= len(history)


def test_restarts_are_logged_and_back_off_until_a_server_stays_up(tmp_path):
    valkey = EmbeddedValkey(tmp_path / "valkey", appendfsync="always").start()
    try:
        client_of(valkey).set("kept", "yes")  # "always": in the file before the reply
        pids = [valkey.process.pid]
        for _ in range(3):  # each killed as soon as it answers: never stable
            pids.append(kill_and_wait_for_restart(valkey)[1])
        valkey.stable_seconds = 0.0  # from now on, any server counts as having stayed up
        pids.append(kill_and_wait_for_restart(valkey)[1])
        assert client_of(valkey).get("kept") == b"yes"  # the same folder, the same data
    finally:
        valkey.stop()
    assert valkey.restarts == 4
    assert all(not pid_alive(pid) for pid in pids)  # every dead one reaped
    log = valkey.supervisor_log_path().read_text()
    delays = [line.split("restarting it in ")[1].split()[0] for line in log.splitlines()
              if "restarting it in" in line]  # fmt: skip
    assert delays == ["0.1", "0.2", "0.4", "0.1"]
    assert log.count("restarted: valkey-server pid") == 4


def test_stop_stops_the_watcher_first_and_nothing_restarts(tmp_path):
    valkey = EmbeddedValkey(tmp_path / "valkey").start()
    pid = valkey.process.pid
    valkey.stop()
    assert not pid_alive(pid)
    assert valkey.process.pid == pid and valkey.restarts == 0
    watcher = f"valkey-watcher {tmp_path / 'valkey'}"
    assert watcher not in [thread.name for thread in threading.enumerate()]
    EmbeddedValkey(tmp_path / "valkey").start().stop()  # and the folder is free


def test_kill_is_a_crash_of_server_and_supervisor_the_folder_is_free_again(tmp_path):
    valkey = EmbeddedValkey(tmp_path / "valkey").start()
    pid = valkey.process.pid
    valkey.kill()
    assert not pid_alive(pid) and valkey.restarts == 0
    valkey.start()  # the same object, the same files
    try:
        assert answers(valkey)
    finally:
        valkey.stop()


def test_a_server_that_fails_at_start_up_leaves_nothing_locked(tmp_path):
    with pytest.raises(RuntimeError, match="exited at start-up"):
        EmbeddedValkey(tmp_path / "valkey", maxmemory="not-a-size").start()
    EmbeddedValkey(tmp_path / "valkey").start().stop()


def test_any_exception_during_start_leaves_nothing_running(tmp_path, monkeypatch):
    spawned = []
    spawn = EmbeddedValkey._spawn

    def spawn_then_interrupt(self: EmbeddedValkey) -> None:
        spawn(self)
        spawned.append(self.process.pid)
        raise KeyboardInterrupt  # Ctrl-C while it starts

    monkeypatch.setattr(EmbeddedValkey, "_spawn", spawn_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        EmbeddedValkey(tmp_path / "valkey").start()
    monkeypatch.undo()
    assert spawned and not pid_alive(spawned[0])
    EmbeddedValkey(tmp_path / "valkey").start().stop()  # not locked either


def test_one_folder_one_server_even_across_restarts(tmp_path):
    folder = tmp_path / "valkey"
    first = EmbeddedValkey(folder).start()
    try:
        with pytest.raises(RuntimeError) as refused:
            EmbeddedValkey(folder).start()
        assert str(folder) in str(refused.value)
        assert f"supervisor pid {os.getpid()}" in str(refused.value)
        assert f"valkey-server pid {first.process.pid}" in str(refused.value)
        assert answers(first)  # the first one is untouched

        kill_and_wait_for_restart(first)
        with pytest.raises(RuntimeError, match="in use by another Valkey server"):
            EmbeddedValkey(folder).start()  # the supervisor kept the lock
    finally:
        first.stop()
    EmbeddedValkey(folder).start().stop()


def test_a_second_launcher_for_fixed_cache_is_refused(isolated_var_dir):
    """The bug: a second `python -m serve fixed_cache --port ...` in the same
    checkout started a second Valkey on the same socket and append-only file."""
    env = {"VAR_DIR": str(isolated_var_dir)}
    with AppServer("fixed_cache", free_port(), env=env) as server:
        lock_before = server.backing.lock_path.read_text()
        second = subprocess.run(
            [sys.executable, "-m", "serve", "fixed_cache", "--port", str(free_port())],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2  # a known failure: one paragraph, no traceback
        assert str(isolated_var_dir / "valkey") in second.stderr
        assert f"valkey-server pid {server.backing.process.pid}" in second.stderr
        assert server.backing.lock_path.read_text() == lock_before
        client = Client(server.url, user="u1", http=KeepAliveSession())
        assert client.increment().status == 200
        client.close()


def test_the_folder_stays_locked_while_an_orphaned_server_runs(tmp_path):
    """The server inherits the lock: if its supervisor is killed, the server
    it leaves behind still holds the folder, and a new supervisor is refused
    instead of starting a second server on the same files."""
    folder = tmp_path / "valkey"
    script = (
        "import sys, time; from pathlib import Path; from serve.valkey import EmbeddedValkey\n"
        "v = EmbeddedValkey(Path(sys.argv[1])).start()\n"
        "print(v.process.pid, flush=True); time.sleep(60)\n"
    )
    supervisor = subprocess.Popen(
        [sys.executable, "-c", script, str(folder)], stdout=subprocess.PIPE, text=True
    )
    orphan = None
    try:
        orphan = int(supervisor.stdout.readline())
        supervisor.kill()  # SIGKILL: its watcher and its stop() never run
        supervisor.wait()
        with pytest.raises(RuntimeError, match=f"valkey-server pid {orphan}"):
            EmbeddedValkey(folder).start()
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
            supervisor.wait()
        if orphan and pid_alive(orphan):
            os.kill(orphan, signal.SIGKILL)  # the server our child started, by its PID
    wait_for(lambda: exited(orphan), f"valkey-server pid {orphan} to exit")
    EmbeddedValkey(folder).start().stop()  # its lock went with it


def test_the_launcher_says_when_the_store_was_restarted(isolated_var_dir):
    port = free_port()
    launcher = launch(
        "fixed_cache", port, env={"VAR_DIR": str(isolated_var_dir)}, stderr=subprocess.DEVNULL
    )
    # If the line never comes, Ctrl-C it (it stops what it started) and fail.
    give_up = threading.Timer(DEADLINE_SECONDS, launcher.send_signal, (signal.SIGINT,))
    give_up.start()
    try:
        line = launcher.stdout.readline()
        store = int(line.split("valkey-server pid ")[1].split()[0])
        os.kill(store, signal.SIGKILL)
        for line in launcher.stdout:
            if "store restarted" in line:
                break
        assert "store restarted: valkey-server pid" in line
        new = int(line.split("valkey-server pid ")[1].split()[0])
        assert new != store and pid_alive(new)
        launcher.send_signal(signal.SIGINT)
        assert launcher.wait(timeout=15) == 0
    finally:
        give_up.cancel()
        if launcher.poll() is None:
            launcher.send_signal(signal.SIGINT)
            launcher.wait(timeout=15)
    wait_for(lambda: exited(new), f"valkey-server pid {new} to stop with the launcher")


ZOMBIE_PARENT = """
import subprocess, time
subprocess.Popen(["sleep", "60"])
print("started", flush=True)
time.sleep(60)
"""


def test_a_pause_counts_a_child_that_exits_as_it_comes_as_halted(monkeypatch):
    # A PostgreSQL backend exiting as the pause came (its connection closed by
    # the app's pool) stays a zombie under its stopped parent, and a zombie
    # never shows "stopped": the pause waited for it and gave up, failing a
    # fault test. Here the child is killed right after its SIGSTOP is sent.
    parent = subprocess.Popen(
        [sys.executable, "-c", ZOMBIE_PARENT], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout.readline() == "started\n"
        [(child, _)] = descendants(parent.pid)
        send = os.kill

        def exit_as_the_pause_comes(pid: int, signum: int) -> None:
            send(pid, signum)
            if pid == child and signum == signal.SIGSTOP:
                send(pid, signal.SIGKILL)

        monkeypatch.setattr(os, "kill", exit_as_the_pause_comes)
        with Paused("server", parent.pid) as paused:
            assert state(parent.pid) == "T"
            assert state(child) == "Z"
            assert str(paused) == f"server {parent.pid} and its 1 processes"
        assert state(parent.pid) != "T"
    finally:
        parent.kill()
        parent.wait()
