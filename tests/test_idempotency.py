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

import os
import sqlite3
import threading
import time
from dataclasses import dataclass

import pytest
import redis
import requests
from flask import Flask

from fixed_cache import store as cache_store
from fixed_session import store as session_store
from loadtests.clients.placement import Placement
from plumbing.idempotency import TTL_SECONDS
from serve.processes import AppServer, free_port
from tests.conftest import SERVES_COUNTER, make_app

# The apps whose write routes record keys: every fixed app.
KEYED_APPS = ["fixed_db", "fixed_session", "fixed_cache"]
KEY = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"


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
        for attempt in range(200):
            if attempt:  # on a busy machine one process can win the accept race many times
                time.sleep(min(0.1, 0.005 * attempt))
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
        # Closed first: gunicorn would hold them open 2 s as it stops. The
        # responses go first, as each one kept holds its socket open past its
        # session's close.
        del first
        answers.clear()
        for session in sessions:
            session.close()
