"""The Idempotency-Key contract of the fixed apps' write routes, and what a
write that fails answers (plumbing/idempotency.py).

Every write route takes an optional Idempotency-Key header. The store keeps
the key, scoped to the route and the user, with the answer, in the same
atomic step as the write: the same key again gets the first answer back,
with `Idempotent-Replayed: true`, and changes nothing. A failed write says
what became of it: "not applied" (503, or 507 for a full store) or "unknown"
(503), and a retry with the same key then applies it exactly once.

Real parts only: SQLite files, a Valkey server of each test's own
(serve/valkey.py) stopped with SIGSTOP or killed by its PID, and real
gunicorn where requests must truly overlap. The Flask test client is used
where one request at a time is enough.
"""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import requests
from flask import Flask, got_request_exception

from fixed_cache import store as cache_store
from fixed_session import store as session_store
from loadtests.clients.placement import Placement
from plumbing.idempotency import TTL_SECONDS
from serve.processes import AppServer, free_port
from serve.valkey import EmbeddedValkey
from tests.conftest import SERVES_COUNTER, make_app

# The apps whose write routes record keys: every fixed app.
KEYED_APPS = ["fixed_db", "fixed_session", "fixed_cache"]
KEY = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Write:
    path: str
    body: dict | None
    shown_by: str  # the GET route whose answer shows the write's effect
    other: tuple[str, dict | None]  # another write, which changes what shown_by shows

    def send(self, client, key: str | None = None):
        return client.post(self.path, json=self.body, headers={KEY: key} if key else {})

    def shown(self, client):
        return client.get(self.shown_by).json

    def send_other(self, client):
        path, body = self.other
        return client.post(path, json=body)


ADD_VISIT = Write("/visits", {"article": "a1"}, "/visits", ("/visits", {"article": "b"}))
INCREMENT = Write("/counter/increment", None, "/counter", ("/counter/increment", None))
RESET = Write("/counter/reset", None, "/counter", ("/counter/increment", None))


def writes_of(app: str) -> list[Write]:
    return [ADD_VISIT, INCREMENT, RESET] if SERVES_COUNTER[app] else [ADD_VISIT]


WRITES = [
    pytest.param(app, write, id=f"{app}:{write.path}")
    for app in KEYED_APPS
    for write in writes_of(app)
]


@pytest.fixture
def client(app):
    """A user who made a first request (GET /): a keyed write needs its cookie."""
    client = app.test_client()
    client.get("/")
    return client


# Where each app keeps its keys, for the tests that look or age them.


def cache_records() -> tuple[redis.Redis, list[bytes]]:
    """fixed_cache's server (the test's REDIS_URL) and the keys it records."""
    server = redis.Redis.from_url(os.environ["REDIS_URL"])
    return server, server.keys(cache_store.RECORD_PREFIX + "*")


def recorded_keys(app: Flask, client) -> int:
    if app.config["APP_NAME"] == "fixed_cache":
        return len(cache_records()[1])
    if app.config["APP_NAME"] == "fixed_db":
        with sqlite3.connect(app.extensions["fixed_db"].path) as db:
            return db.execute("SELECT count(*) FROM idempotency").fetchone()[0]
    with client.session_transaction() as session:
        return len(session.get("replies", {}))


def age_keys(app: Flask, client, seconds: int) -> None:
    """Move every recorded key `seconds` into the past."""
    if app.config["APP_NAME"] == "fixed_cache":  # the server expires them: shorten the TTL
        server, keys = cache_records()
        for key in keys:
            left = server.ttl(key) - seconds
            server.expire(key, left) if left > 0 else server.delete(key)
        return
    if app.config["APP_NAME"] == "fixed_db":
        with sqlite3.connect(app.extensions["fixed_db"].path) as db:
            db.execute("UPDATE idempotency SET created = created - ?", (seconds,))
        return
    with client.session_transaction() as session:
        replies = session["replies"]
        session["replies"] = {
            k: [s, b, created - seconds, *rest] for k, (s, b, created, *rest) in replies.items()
        }


def ttl_of(app_name: str) -> int:
    return TTL_SECONDS  # one for every store


# The contract, one request at a time (Flask test client).


@pytest.mark.parametrize(("app_name", "write"), WRITES)
def test_the_same_key_again_gets_the_first_answer_and_changes_nothing(client, write):
    write.send_other(client)  # so that even a reset changes what is shown
    before = write.shown(client)
    first = write.send(client, "k1")
    after_first = write.shown(client)
    write.send_other(client)
    after_other = write.shown(client)
    second = write.send(client, "k1")
    assert after_first != before  # the first one wrote
    assert first.status_code in (200, 201)
    assert (second.status_code, second.json) == (first.status_code, first.json)
    assert REPLAYED not in first.headers
    assert second.headers[REPLAYED] == "true"
    assert second.headers["Content-Type"] == "application/json"
    assert write.shown(client) == after_other  # the replay wrote nothing


@pytest.mark.parametrize(("app_name", "write"), WRITES)
def test_another_users_identical_key_is_their_own_write(app, write):
    alice, bob = app.test_client(), app.test_client()
    for user in (alice, bob):  # each gets their cookie (a new user's key would name them)
        ADD_VISIT.send_other(user)
    first = write.send(alice, "same-key")
    after_alice = write.shown(alice)
    theirs = write.send(bob, "same-key")
    assert REPLAYED not in theirs.headers
    assert theirs.status_code == first.status_code
    if write is ADD_VISIT:  # each user's own list
        assert write.shown(alice) == after_alice == {"visits": ["b", "a1"]}
        assert write.shown(bob) == theirs.json == {"visits": ["b", "a1"]}
    elif write is INCREMENT:  # one shared counter, incremented by both
        assert theirs.json["value"] == first.json["value"] + 1


@pytest.mark.parametrize(("app_name", "write"), WRITES)
def test_different_keys_are_different_writes(client, write):
    write.send_other(client)
    first, second = write.send(client, "k1"), write.send(client, "k2")
    assert REPLAYED not in first.headers
    assert REPLAYED not in second.headers
    if write is ADD_VISIT:
        assert write.shown(client) == second.json == {"visits": ["b", "a1", "a1"]}
    elif write is INCREMENT:
        assert second.json["value"] == first.json["value"] + 1


@pytest.mark.parametrize(("app_name", "write"), WRITES)
@pytest.mark.parametrize("key", ["", "has space", "x" * 129, "tab\tinside"])
def test_a_malformed_key_is_a_400_and_writes_nothing(app, client, write, key):
    write.send_other(client)
    before = write.shown(client)
    response = client.post(write.path, json=write.body, headers={KEY: key})
    assert response.status_code == 400
    assert response.json["error"] == "bad request"
    assert KEY in response.json["detail"]
    assert write.shown(client) == before
    assert recorded_keys(app, client) == 0


@pytest.mark.parametrize(("app_name", "write"), WRITES)
def test_without_a_key_every_write_applies_and_nothing_is_recorded(app, client, write):
    write.send_other(client)
    answers = [write.send(client) for _ in range(2)]
    assert all(REPLAYED not in a.headers for a in answers)
    if write is ADD_VISIT:
        assert [a.json for a in answers] == [{"visits": ["b", "a1"]}, {"visits": ["b", "a1", "a1"]}]
        assert [a.status_code for a in answers] == [201, 201]
    elif write is INCREMENT:
        assert answers[1].json["value"] == answers[0].json["value"] + 1
    assert recorded_keys(app, client) == 0


@pytest.mark.parametrize(("app_name", "write"), WRITES)
def test_a_key_is_forgotten_after_its_time(app, app_name, client, write):
    write.send_other(client)
    write.send(client, "k1")
    age_keys(app, client, ttl_of(app_name) - 60)
    assert write.send(client, "k1").headers[REPLAYED] == "true"  # a minute to go
    age_keys(app, client, 61)
    again = write.send(client, "k1")  # now a new write...
    assert REPLAYED not in again.headers
    if write is ADD_VISIT:
        assert again.json == {"visits": ["b", "a1", "a1"]}
    assert write.send(client, "k1").headers[REPLAYED] == "true"  # ...recorded afresh


def test_fixed_db_deletes_keys_past_their_time_through_an_index():
    app = make_app("fixed_db")
    client = app.test_client()
    client.get("/")
    for key in ("old", "recent"):
        INCREMENT.send(client, key)
    path = app.extensions["fixed_db"].path
    with sqlite3.connect(path) as db:
        db.execute(
            "UPDATE idempotency SET created = created - ? WHERE scoped_key LIKE '% old'",
            (TTL_SECONDS + 1,),
        )
    # A new worker process deletes them at its first write with a key.
    another_process = make_app("fixed_db").test_client()
    another_process.get("/")
    INCREMENT.send(another_process, "new")
    with sqlite3.connect(path) as db:
        keys = sorted(
            k.rsplit(" ", 1)[1] for (k,) in db.execute("SELECT scoped_key FROM idempotency")
        )
        plan = db.execute("EXPLAIN QUERY PLAN DELETE FROM idempotency WHERE created < 0").fetchall()
    assert keys == ["new", "recent"]
    assert "USING INDEX idempotency_by_age" in " ".join(row[-1] for row in plan)


def test_fixed_session_keeps_its_last_20_keys():
    app = make_app("fixed_session")
    client = app.test_client()
    client.get("/")
    kept = session_store.REPLIES_KEPT
    for n in range(kept + 1):
        assert REPLAYED not in ADD_VISIT.send(client, f"k{n}").headers
    assert recorded_keys(app, client) == kept
    assert all(ADD_VISIT.send(client, f"k{n}").headers[REPLAYED] for n in range(1, kept + 1))
    assert REPLAYED not in ADD_VISIT.send(client, "k0").headers  # the oldest, forgotten
    assert len(client.get("/visits").json["visits"]) == kept + 2


@pytest.mark.parametrize("route", ["/counter/increment", "/counter/reset"])
def test_a_key_on_fixed_sessions_501_routes_changes_nothing(route):
    # The same @idempotent as the other apps' counter routes: no identity, a
    # 428 first, as for any keyed write; with one, the route's own 501.
    app = make_app("fixed_session")
    client = app.test_client()
    assert client.post(route, headers={KEY: "k1"}).status_code == 428
    client.get("/")
    for _ in range(2):
        response = client.post(route, headers={KEY: "k1"})
        assert response.status_code == 501
        assert REPLAYED not in response.headers
    assert client.get_cookie("session") is None  # no session was even created


# Sixteen requests with one key at the same moment, under real gunicorn.


def placed_sessions(server: AppServer, count: int, cookies) -> list[requests.Session]:
    """`count` kept-alive connections, spread evenly over the worker
    processes, all with the user's cookies."""
    placement = Placement(count, server.workers())
    sessions = []
    while len(sessions) < count:
        http = requests.Session()
        http.cookies.update(cookies)
        for _ in range(200):
            pid = http.get(server.url + "/healthz", timeout=5).headers["X-Worker"].split("-")[0]
            if placement.claim([pid]):
                break
            http.close()  # a new connection, which another process may accept
        else:
            raise RuntimeError(f"could not spread connections: {placement.placed}")
        sessions.append(http)
    return sessions


@pytest.mark.gunicorn
@pytest.mark.parametrize("app_name", KEYED_APPS)
def test_sixteen_concurrent_requests_with_one_key_write_once(isolated_var_dir, app_name):
    env = {"VAR_DIR": str(isolated_var_dir)}
    log_path = isolated_var_dir / f"{app_name}.log"
    with AppServer(app_name, free_port(), env=env, log_path=log_path) as server:
        # The user's cookie first: without it, each request would be a new user.
        first = requests.post(server.url + "/visits", json={"article": "b"}, timeout=5)
        sessions = placed_sessions(server, 16, first.cookies)
        for write in writes_of(app_name):
            before = sessions[0].get(server.url + write.shown_by, timeout=5).json()
            barrier = threading.Barrier(len(sessions))
            answers = [None] * len(sessions)

            def send(n: int, write=write, barrier=barrier, answers=answers) -> None:
                barrier.wait()
                answers[n] = sessions[n].post(
                    server.url + write.path, json=write.body, headers={KEY: f"{write.path}-k"}
                )

            threads = [threading.Thread(target=send, args=(n,)) for n in range(len(sessions))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            after = sessions[0].get(server.url + write.shown_by, timeout=5).json()
            assert len({(a.status_code, a.text) for a in answers}) == 1, write.path  # all alike
            assert answers[0].status_code in (200, 201)
            if write is ADD_VISIT:
                assert after == {"visits": [*before["visits"], "a1"]}  # appended once
            elif write is INCREMENT:
                assert after == {"value": before["value"] + 1}
            else:
                assert after == {"value": 0}
            replayed = sum(a.headers.get(REPLAYED) == "true" for a in answers)
            if app_name == "fixed_db":  # BEGIN IMMEDIATE: one writes, the others wait, then replay
                assert replayed == len(answers) - 1
            # fixed_session: those that loaded the session before the first save
            # write the same new session, key included; the others replay.
            assert {a.headers["X-Worker"].split("-")[0] for a in answers} == set(
                map(str, server.worker_pids)
            )


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
        cwd=REPO,
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
