"""What a fixed app's write answers when its store fails (plumbing/idempotency.py):
"not applied" (503, or 507 for a full store) when nothing was written, and
"unknown" (503) when it may have been, after which a retry with the same
Idempotency-Key applies it exactly once and a retry without one is never
sent again by the app itself.

Real parts only: SQLite files, a Valkey server of each test's own
(serve/valkey.py) stopped with SIGSTOP or killed by its PID, and scripts in
a Python of their own where a resource limit must not touch the test run.
"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
import redis
from flask import Flask, got_request_exception

from plumbing.config import REPO_ROOT
from serve.valkey import EmbeddedValkey
from tests.conftest import make_app
from tests.test_idempotency import ADD_VISIT, INCREMENT, RESET, recorded_keys

KEY = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"


# fixed_db: what a failed write answers.


def fixed_db(monkeypatch, **config) -> Flask:
    monkeypatch.setenv("WORK_MS", "0")
    app = make_app("fixed_db")
    app.config.update(config)
    return app


@pytest.mark.parametrize("write", [INCREMENT, RESET, ADD_VISIT], ids=lambda w: w.path)
@pytest.mark.parametrize("key", [None, "k1"])
def test_a_locked_database_answers_not_applied_and_writes_nothing(monkeypatch, write, key):
    monkeypatch.setenv("SQLITE_BUSY_TIMEOUT_MS", "50")
    app = fixed_db(monkeypatch)
    client = app.test_client()
    client.get("/")
    write.send_other(client)
    before = write.shown(client)
    with sqlite3.connect(app.extensions["fixed_db"].path, isolation_level=None) as other:
        other.execute("BEGIN IMMEDIATE")  # another writer holds the lock past the busy timeout
        response = write.send(client, key)
        other.execute("ROLLBACK")
    assert response.status_code == 503
    assert response.json["outcome"] == "not applied"
    assert "locked" in response.json["detail"] or "busy" in response.json["detail"]
    assert write.shown(client) == before
    assert recorded_keys(app, client) == 0
    retried = write.send(client, key)  # the lock is free: the retry applies it, once
    assert REPLAYED not in retried.headers
    assert write.shown(client) != before or write is RESET
    if key:
        assert write.send(client, key).headers[REPLAYED] == "true"


@pytest.mark.parametrize("key", [None, "k1"])
def test_a_full_database_answers_507_and_writes_nothing(monkeypatch, key):
    # SQLite reports a database at its size limit (max_page_count) the way it
    # reports a full disk: SQLITE_FULL, "database or disk is full".
    app = fixed_db(monkeypatch)
    client = app.test_client()
    client.post("/visits", json={"article": "a0"})  # one pooled connection, used by every request
    conn = app.extensions["fixed_db"].idle.get_nowait()
    [(pages,)] = conn.execute("PRAGMA page_count").fetchall()
    conn.execute(f"PRAGMA max_page_count = {pages}")  # no room to grow
    app.extensions["fixed_db"].idle.put(conn)
    statuses = []
    for n in range(200):
        response = client.post(
            "/visits", json={"article": f"{n:064}"}, headers={KEY: f"k{n}"} if key else {}
        )
        statuses.append(response.status_code)
        if response.status_code != 201:
            break
    saved = statuses.count(201)
    assert statuses == [201] * saved + [507]
    assert response.json["outcome"] == "not applied"
    assert response.json["error"] == "insufficient storage"
    assert len(client.get("/visits").json["visits"]) == 1 + saved  # the refused one is not there
    assert recorded_keys(app, client) == (saved if key else 0)


FAILING_COMMIT = """
import json, resource, signal, sys
from fixed_db.app import create_app

app = create_app({"VAR_DIR": sys.argv[1]})
client = app.test_client()
client.post("/visits", json={"article": "a0"})
wal = app.extensions["fixed_db"].path.with_name("fixed_db.sqlite3-wal")
_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write with EFBIG, do not die
resource.setrlimit(resource.RLIMIT_FSIZE, (wal.stat().st_size, hard))  # the WAL cannot grow
failed = client.post("/visits", json={"article": "a1"}, headers={"Idempotency-Key": "k1"})
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
retried = client.post("/visits", json={"article": "a1"}, headers={"Idempotency-Key": "k1"})
again = client.post("/visits", json={"article": "a1"}, headers={"Idempotency-Key": "k1"})
print(json.dumps({
    "failed": [failed.status_code, failed.json],
    "retried": [retried.status_code, retried.json, retried.headers.get("Idempotent-Replayed")],
    "again": [again.status_code, again.json, again.headers.get("Idempotent-Replayed")],
    "visits": client.get("/visits").json["visits"],
}))
"""


def run_script(script: str, folder) -> dict:
    """Run a script that fails a store on purpose in a Python of its own
    (the failure is set up process-wide), given `folder`; return the JSON it
    prints."""
    run = subprocess.run(
        [sys.executable, "-c", script, str(folder)],
        capture_output=True,
        text=True,
        env={"WORK_MS": "0", "PATH": ""},
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_a_commit_that_fails_is_unknown_and_a_retry_with_the_key_applies_it_once(tmp_path):
    # SQLite reports the failed write of the WAL at COMMIT as a disk I/O error
    # (SQLITE_IOERR), after which its commit record may or may not be there.
    found = run_script(FAILING_COMMIT, tmp_path)
    status, body = found["failed"]
    assert (status, body["outcome"]) == (503, "unknown")
    assert "disk I/O error" in body["detail"]
    assert found["retried"] == [201, {"visits": ["a0", "a1"]}, None]  # it had not been applied
    assert found["again"] == [201, {"visits": ["a0", "a1"]}, "true"]
    assert found["visits"] == ["a0", "a1"]


# fixed_session on a Valkey session store: what a failed save answers.


@pytest.fixture
def valkey(tmp_path):
    """A Valkey server of the test's own, since tests stop, kill and fill it."""
    server = EmbeddedValkey(tmp_path / "valkey").start()
    try:
        yield server
    finally:
        if server.process.poll() is None:
            os.kill(server.process.pid, signal.SIGCONT)  # a stopped server ignores SIGTERM
        server.stop()


def fixed_session_on(valkey: EmbeddedValkey, monkeypatch) -> Flask:
    monkeypatch.setenv("WORK_MS", "0")
    monkeypatch.setenv("SESSION_REDIS_URL", valkey.url)
    app = make_app("fixed_session")
    # TESTING would hand errors raised while saving the session to the test, not the app.
    app.config.update(TESTING=False)
    return app


def before_saving(app: Flask, action) -> threading.Event:
    """Once the returned event is set, the next request runs `action` after
    its view and before its session is saved (after_request functions run
    first), once: Flask runs them again for an error answer. Call before the
    app's first request."""
    armed = threading.Event()

    @app.after_request
    def run_when_armed(response):
        if armed.is_set():
            armed.clear()
            action()
        return response

    return armed


def sets_done(valkey: EmbeddedValkey) -> int:
    stats = redis.Redis.from_url(valkey.url).info("commandstats")
    return stats.get("cmdstat_set", {}).get("calls", 0)


def wait_for_sets(valkey: EmbeddedValkey, count: int) -> None:
    """Until the server has run `count` SETs: what it had received while
    stopped, it runs once continued (a guard of 10 s, never a measure)."""
    deadline = time.monotonic() + 10
    while sets_done(valkey) < count:
        assert time.monotonic() < deadline, f"{sets_done(valkey)} of {count} SETs"
        time.sleep(0.01)


def test_a_save_with_no_reply_is_unknown_and_a_retry_with_the_key_applies_it_once(
    valkey, monkeypatch
):
    app = fixed_session_on(valkey, monkeypatch)
    client = app.test_client()
    stop = before_saving(app, lambda: os.kill(valkey.process.pid, signal.SIGSTOP))
    assert client.post("/visits", json={"article": "a1"}).status_code == 201
    sets = sets_done(valkey)
    stop.set()
    response = client.post("/visits", json={"article": "a2"}, headers={KEY: "k2"})
    os.kill(valkey.process.pid, signal.SIGCONT)
    assert response.status_code == 503
    assert response.json["outcome"] == "unknown"
    assert KEY in response.json["detail"]
    # The SET had reached the server's socket: continued, the server applies it.
    wait_for_sets(valkey, sets + 1)
    retried = client.post("/visits", json={"article": "a2"}, headers={KEY: "k2"})
    assert (retried.status_code, retried.json) == (201, {"visits": ["a1", "a2"]})
    assert retried.headers[REPLAYED] == "true"
    assert client.get("/visits").json == {"visits": ["a1", "a2"]}  # once


def test_a_save_with_no_reply_is_never_sent_again(valkey, monkeypatch):
    # Flask answers an error raised while saving the session, then saves the
    # session again (Flask.finalize_request on the error response). If the
    # server is back by then, that second SET goes through: here it is
    # continued exactly then, when Flask reports the error.
    app = fixed_session_on(valkey, monkeypatch)
    client = app.test_client()
    stop = before_saving(app, lambda: os.kill(valkey.process.pid, signal.SIGSTOP))
    assert client.post("/visits", json={"article": "a1"}).status_code == 201

    def continue_the_server(sender, exception, **extra):
        os.kill(valkey.process.pid, signal.SIGCONT)

    got_request_exception.connect(continue_the_server, app)
    sets = sets_done(valkey)
    stop.set()
    response = client.post("/visits", json={"article": "a2"})
    assert response.status_code == 503
    assert response.json["outcome"] == "unknown"
    wait_for_sets(valkey, sets + 1)
    redis.Redis.from_url(valkey.url).ping()  # after what the server had already received
    assert sets_done(valkey) == sets + 1  # the one SET sent, never a second
    assert client.get("/visits").json == {"visits": ["a1", "a2"]}


def test_a_save_that_cannot_connect_is_not_applied(valkey, monkeypatch, tmp_path):
    app = fixed_session_on(valkey, monkeypatch)
    client = app.test_client()
    kill = before_saving(app, valkey.kill)
    assert client.post("/visits", json={"article": "a1"}).status_code == 201
    kill.set()
    response = client.post("/visits", json={"article": "a2"}, headers={KEY: "k2"})
    assert response.status_code == 503
    assert response.json["outcome"] == "not applied"
    valkey.start()  # the same append-only file
    assert client.get("/visits").json == {"visits": ["a1"]}
    retried = client.post("/visits", json={"article": "a2"}, headers={KEY: "k2"})
    assert (retried.status_code, retried.json) == (201, {"visits": ["a1", "a2"]})
    assert REPLAYED not in retried.headers


def test_a_full_session_server_answers_507_and_applies_nothing(valkey, monkeypatch):
    app = fixed_session_on(valkey, monkeypatch)
    client = app.test_client()
    assert client.post("/visits", json={"article": "a1"}).status_code == 201
    admin = redis.Redis.from_url(valkey.url)
    admin.config_set("maxmemory", 1)  # full: every write refused (noeviction), reads served
    response = client.post("/visits", json={"article": "a2"}, headers={KEY: "k2"})
    assert response.status_code == 507
    assert response.json["outcome"] == "not applied"
    admin.config_set("maxmemory", valkey.maxmemory)
    assert client.get("/visits").json == {"visits": ["a1"]}
    retried = client.post("/visits", json={"article": "a2"}, headers={KEY: "k2"})
    assert (retried.status_code, retried.json) == (201, {"visits": ["a1", "a2"]})
    assert REPLAYED not in retried.headers


FULL_DISK = """
import json, resource, signal, sys
from fixed_session.app import create_app

app = create_app({"VAR_DIR": sys.argv[1]})
client = app.test_client()
client.post("/visits", json={"article": "a0"})
_, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write with EFBIG, do not die
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))  # as if the disk had filled up
big = {"article": "x" * 64}
answers = []
while not answers or answers[-1][0] == 201:
    response = client.post("/visits", json=big, headers={"Idempotency-Key": f"k{len(answers)}"})
    answers.append([response.status_code, response.json])
kept = client.get("/visits").json["visits"]
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))  # space again
key = f"k{len(answers) - 1}"
retried = client.post("/visits", json=big, headers={"Idempotency-Key": key})
again = client.post("/visits", json=big, headers={"Idempotency-Key": key})
print(json.dumps({
    "answers": answers,
    "kept": len(kept),
    "retried": [retried.status_code, len(retried.json["visits"])],
    "again": [again.status_code, again.headers.get("Idempotent-Replayed")],
    "visits": len(client.get("/visits").json["visits"]),
}))
"""


def test_a_full_disk_under_the_session_files_is_not_applied(tmp_path):
    # NotApplied (503), not StoreFull: the file store reserves the space before
    # it touches the old version, and the store itself is bounded, so a full
    # disk is the machine's condition; see fixed_session/store.py.
    found = run_script(FULL_DISK, tmp_path)
    *saved, (status, body) = found["answers"]
    assert saved and all(status == 201 for status, _ in saved)
    assert (status, body["outcome"]) == (503, "not applied")
    assert found["kept"] == 1 + len(saved)  # the refused append is not there
    assert found["retried"] == [201, 2 + len(saved)]  # with space again, applied...
    assert found["again"] == [201, "true"]  # ...once
    assert found["visits"] == 2 + len(saved)
