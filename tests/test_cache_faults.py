"""fixed_cache when its Redis server stalls, restarts or fills up, and its
Idempotency-Key (fixed_cache/store.py).

Every test runs a real Valkey server of its own (serve/valkey.py), so it may
pause it (SIGSTOP by PID), kill it or fill it; the app runs under Flask's test
client, and under real gunicorn where two worker processes matter. A write
in flight when the server stops answering is sent before the pause ends and
the test resumes the server only once the request has answered: nothing here
depends on how fast the machine is, except the breaker's reset, waited for
with its own constant.
"""

import http.client
import importlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis
from flask import Flask

from fixed_cache import store
from plumbing.idempotency import TTL_SECONDS
from serve.processes import AppServer, free_port
from serve.valkey import EmbeddedValkey

SETTLE_SECONDS = 5.0  # the longest a test waits for the server to show a write


@pytest.fixture
def valkey(tmp_path) -> Iterator[EmbeddedValkey]:
    with EmbeddedValkey(tmp_path / "valkey") as server:
        yield server


@pytest.fixture
def server(valkey) -> redis.Redis:
    """A client of the test's server of its own, to look at what the app wrote."""
    client = redis.Redis.from_url(valkey.url, decode_responses=True)
    yield client
    client.close()


def fixed_cache(url: str, monkeypatch) -> Flask:
    monkeypatch.setenv("REDIS_URL", url)
    monkeypatch.setenv("WORK_MS", "0")
    return importlib.import_module("fixed_cache.app").create_app({"TESTING": True})


@pytest.fixture
def app(valkey, monkeypatch) -> Flask:
    return fixed_cache(valkey.url, monkeypatch)


@contextmanager
def paused(valkey: EmbeddedValkey) -> Iterator[None]:
    """The server frozen (SIGSTOP) for the block: it holds its connections open
    and answers nothing, as a server in a long pause does."""
    os.kill(valkey.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(valkey.process.pid, signal.SIGCONT)


def shown(read, expected) -> None:
    """Wait until the server, resumed, shows what was sent to it while paused."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while (seen := read()) != expected:
        assert time.monotonic() < deadline, f"still {seen!r}, not {expected!r}"
        time.sleep(0.01)


def calls(server: redis.Redis, command: str) -> int:
    """How many times the server has run a command since it started."""
    return server.info("commandstats").get(f"cmdstat_{command}", {}).get("calls", 0)


def key(value: str) -> dict[str, str]:
    return {"Idempotency-Key": value}


# A write in flight when the server stops answering: its outcome is unknown,
# and it is never sent a second time.


def test_a_write_in_flight_is_unknown_and_never_sent_twice(app, valkey, server):
    """The reproduction: before the fix, redis-py re-sent the INCR after its
    socket timeout, and once the server resumed it ran both: 2, not 1."""
    server.set("counter", 0)
    with app.test_request_context("/counter/increment", method="POST"):
        assert store.read("GET", "counter") == "0"  # this thread's connection is open
        with paused(valkey), pytest.raises(store.OutcomeUnknown):
            store.write(("INCR", "counter"), answer={"value": store.REPLY})
    shown(lambda: server.get("counter"), "1")
    assert server.get("counter") == "1"
    assert calls(server, "incr") == 1


# (route, body, the route that reads its state, that state once it has run once)
WRITES = [
    ("/counter/increment", None, "/counter", {"value": 1}),
    ("/visits", {"article": "a1"}, "/visits", {"visits": ["a0", "a1"]}),
]
ANSWERS = {"/counter/increment": (200, {"value": 1}), "/visits": (201, {"visits": ["a0", "a1"]})}


def connected(client) -> None:
    """Open the app's connections before the pause: this thread's own, and the
    pool's one for MULTI/EXEC, so that a write in flight is sent, not stuck
    connecting; and load the key's script, so that the server runs it, not
    refuses it (NOSCRIPT). Leaves a user cookie, one visit, "a0", and a reset."""
    assert client.get("/visits").json == {"visits": []}
    assert client.post("/visits", json={"article": "a0"}).json == {"visits": ["a0"]}
    assert client.post("/counter/reset", headers=key("warm-up")).json == {"value": 0}


@pytest.mark.parametrize(("path", "body", "read", "state"), WRITES, ids=["increment", "visits"])
def test_a_route_answers_unknown_and_the_write_lands_once(app, valkey, path, body, read, state):
    client = app.test_client()
    connected(client)
    with paused(valkey):
        response = client.post(path, json=body)
    assert response.status_code == 503
    assert response.json["outcome"] == "unknown"
    assert "same Idempotency-Key" in response.json["detail"]
    shown(lambda: client.get(read).json, state)
    assert client.get(read).json == state  # applied once: the counter at 1, the token once


# The same Idempotency-Key again: the first answer, and nothing applied again.


@pytest.mark.parametrize(("path", "body", "read", "state"), WRITES, ids=["increment", "visits"])
def test_after_an_unknown_outcome_the_same_key_replays_the_first_answer(
    app, valkey, path, body, read, state
):
    client = app.test_client()
    connected(client)
    with paused(valkey):
        lost = client.post(path, json=body, headers=key("k-1"))
    assert (lost.status_code, lost.json["outcome"]) == (503, "unknown")
    shown(lambda: client.get(read).json, state)  # the server ran it on resuming

    retry = client.post(path, json=body, headers=key("k-1"))
    assert (retry.status_code, retry.json) == ANSWERS[path]
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert client.get(read).json == state  # applied once


def test_a_key_replays_status_and_body_and_writes_nothing_more(app, server):
    client = app.test_client()
    client.get("/")  # the cookie a keyed write needs
    first = client.post("/visits", json={"article": "a1"}, headers=key("v-1"))
    assert (first.status_code, first.json) == (201, {"visits": ["a1"]})
    assert "Idempotent-Replayed" not in first.headers
    client.post("/visits", json={"article": "a2"})  # another write since
    again = client.post("/visits", json={"article": "a1"}, headers=key("v-1"))
    assert (again.status_code, again.data) == (201, first.data)  # byte for byte
    assert again.headers["Idempotent-Replayed"] == "true"
    assert client.get("/visits").json == {"visits": ["a1", "a2"]}

    assert client.post("/counter/increment", headers=key("c-1")).json == {"value": 1}
    assert client.post("/counter/increment", headers=key("c-2")).json == {"value": 2}
    assert client.post("/counter/increment", headers=key("c-1")).json == {"value": 1}
    assert client.post("/counter/reset", headers=key("r-1")).json == {"value": 0}
    assert client.post("/counter/increment").json == {"value": 1}
    assert client.post("/counter/reset", headers=key("r-1")).json == {"value": 0}
    assert client.get("/counter").json == {"value": 1}  # the replayed reset reset nothing

    ttl = server.ttl(next(iter(server.keys("idempotency:*"))))
    assert TTL_SECONDS - 60 < ttl <= TTL_SECONDS


def test_a_key_is_scoped_to_its_user_and_route(app):
    alice, bob = app.test_client(), app.test_client()
    for user in (alice, bob):  # each a user with a cookie: a keyed write needs one
        assert user.get("/visits").json == {"visits": []}
    assert alice.post("/counter/increment", headers=key("same")).json == {"value": 1}
    from_bob = bob.post("/counter/increment", headers=key("same"))
    assert from_bob.json == {"value": 2}  # applied: not alice's answer
    assert "Idempotent-Replayed" not in from_bob.headers
    bob_visit = bob.post("/visits", json={"article": "b1"}, headers=key("same"))
    assert bob_visit.json == {"visits": ["b1"]}  # another route: applied too
    replayed = alice.post("/counter/increment", headers=key("same"))
    assert (replayed.json, replayed.headers["Idempotent-Replayed"]) == ({"value": 1}, "true")
    assert alice.get("/visits").json == {"visits": []}


@pytest.mark.parametrize("bad", ["", "has space", "x" * 129, "caf\u00e9"])
@pytest.mark.parametrize(
    ("path", "body"), [("/counter/increment", None), ("/visits", {"article": "a1"})]
)
def test_an_invalid_key_is_a_400_that_writes_nothing(app, server, bad, path, body):
    client = app.test_client()
    response = client.post(path, json=body, headers=key(bad))
    assert response.status_code == 400
    assert response.is_json
    assert response.json["error"] == "bad request"
    assert "Idempotency-Key" in response.json["detail"]
    assert server.dbsize() == 0


# A full server: 507, and nothing acknowledged is lost.


def test_a_full_store_answers_507_and_keeps_every_acknowledged_append(valkey, server, app):
    users = [app.test_client() for _ in range(20)]
    connected(users[0])  # the app's connections count in the server's memory
    # Room for a few hundred appends; each user keeps at most 1,000 visits, so
    # the appends are spread over several users until memory runs out.
    server.config_set("maxmemory", server.info("memory")["used_memory"] + 64 * 1024)
    acknowledged: list[list[str]] = [[] for _ in users]
    for n in range(20 * 250):
        user = n // 250
        article = f"{n:04d}-" + "x" * 59
        response = users[user].post("/visits", json={"article": article})
        if response.status_code != 201:
            break
        acknowledged[user].append(article)
    assert sum(map(len, acknowledged)) > 100
    assert response.status_code == 507  # refused for memory, before the users ran out
    assert response.json["error"] == "insufficient storage"
    assert "full" in response.json["detail"]
    assert response.json["outcome"] == "not applied"
    client = users[user]
    # At the edge, memory comes and goes with each request's buffers: well
    # under it, every write is refused, the keyed ones too.
    server.config_set("maxmemory", server.info("memory")["used_memory"] // 2)
    assert client.post("/counter/increment").status_code == 507
    assert client.post("/visits", json={"article": "k"}, headers=key("k-1")).status_code == 507
    assert not [k for k in server.keys("idempotency:*") if k.endswith(" k-1")]  # not recorded
    expected = [["a0", *acknowledged[0]], *acknowledged[1:]]
    for visitor, visits in zip(users, expected, strict=True):
        assert visitor.get("/visits").json == {"visits": visits}  # all kept, in order

    server.config_set("maxmemory", "0")  # space again: the same key applies now, once
    for _ in range(2):
        again = client.post("/visits", json={"article": "k"}, headers=key("k-1"))
        assert again.json == {"visits": [*expected[user], "k"]}


# The circuit breaker: a stalled server costs a few timeouts, then nothing.


def test_the_breaker_opens_fails_fast_and_closes_when_the_store_answers(app, valkey, server):
    client = app.test_client()
    assert client.post("/counter/increment").json == {"value": 1}
    breaker = app.extensions["fixed_cache"].breaker  # made on first use
    connections = server.info("stats")["total_connections_received"]
    with paused(valkey):
        failed = [client.post("/counter/increment") for _ in range(store.BREAKER_FAIL_MAX)]
        assert breaker.current_state == "open"
        fast = [client.post("/counter/increment") for _ in range(20)]
    assert [r.status_code for r in failed + fast] == [503] * (store.BREAKER_FAIL_MAX + 20)
    # The first was sent, then timed out ("unknown"); each next one needed a
    # new connection, which a paused server cannot finish. Once open, nothing
    # is even tried: the 20 fast ones cost the server no connection, no INCR.
    outcomes = [r.json["outcome"] for r in failed]
    assert outcomes[0] == "unknown"
    assert set(outcomes) <= {"unknown", "not applied"}
    assert {r.json["outcome"] for r in fast} == {"not applied"}
    sent = outcomes.count("unknown")
    shown(lambda: server.get("counter"), str(1 + sent))
    assert calls(server, "incr") == 1 + sent
    assert server.info("stats")["total_connections_received"] == (
        connections + store.BREAKER_FAIL_MAX - 1
    )

    time.sleep(store.BREAKER_RESET_SECONDS)  # then one trial goes through, and closes it
    assert client.post("/counter/increment").json == {"value": 2 + sent}
    assert breaker.current_state == "closed"


def test_while_half_open_one_trial_goes_through_and_the_rest_fail_fast(valkey, server, monkeypatch):
    # A long timeout, on purpose: the trial waits on the paused server until
    # the test resumes it, however slow the machine.
    monkeypatch.setattr(store, "TIMEOUT_SECONDS", 10.0)
    app = fixed_cache(valkey.url, monkeypatch)
    client = app.test_client()
    assert client.post("/counter/increment").json == {"value": 1}
    breaker = app.extensions["fixed_cache"].breaker
    trial = []
    with paused(valkey):
        breaker.open()
        time.sleep(store.BREAKER_RESET_SECONDS)
        thread = threading.Thread(
            target=lambda: trial.append(app.test_client().post("/counter/increment"))
        )
        thread.start()
        deadline = time.monotonic() + SETTLE_SECONDS
        while breaker.current_state != "half-open" and time.monotonic() < deadline:
            time.sleep(0.005)
        others = [client.post("/counter/increment") for _ in range(5)]
    thread.join()
    assert {(r.status_code, r.json["outcome"]) for r in others} == {(503, "not applied")}
    assert [r.json for r in trial] == [{"value": 2}]  # the server answered the trial...
    assert breaker.current_state == "closed"  # ...which closed the breaker
    assert calls(server, "incr") == 2


# A server that restarts: the next request reconnects before it sends.


def test_a_restarted_store_is_reconnected_to_before_anything_is_sent(tmp_path, monkeypatch):
    directory = tmp_path / "valkey"
    valkey = EmbeddedValkey(directory).start()
    try:
        client = fixed_cache(valkey.url, monkeypatch).test_client()
        assert client.post("/counter/increment").json == {"value": 1}
        assert client.post("/visits", json={"article": "a1"}).status_code == 201
        valkey.kill()
        down = client.post("/counter/increment")
        assert (down.status_code, down.json["outcome"]) == (503, "not applied")  # never sent
        valkey = EmbeddedValkey(directory).start()  # the same files
        assert client.post("/counter/increment").json == {"value": 2}

        valkey.kill()
        valkey = EmbeddedValkey(directory).start()
        # Each kept connection now reads as closed: replaced, not written into.
        assert client.post("/counter/increment").json == {"value": 3}
        assert client.post("/visits", json={"article": "a2"}).json == {"visits": ["a1", "a2"]}
        assert client.get("/counter").json == {"value": 3}
    finally:
        valkey.stop()


# Under real gunicorn: the record lives in the server, shared by the workers.


def exchange(
    connection: http.client.HTTPConnection, method: str, path: str, headers: dict[str, str]
) -> tuple[int, dict, http.client.HTTPResponse]:
    connection.request(method, path, headers=headers)
    response = connection.getresponse()
    return response.status, json.loads(response.read()), response


@pytest.mark.gunicorn
def test_a_key_replays_on_another_worker_process(isolated_var_dir, valkey, server):
    env = {"VAR_DIR": str(isolated_var_dir), "REDIS_URL": valkey.url}
    with AppServer("fixed_cache", free_port(), env=env) as gunicorn:
        by_worker: dict[str, http.client.HTTPConnection] = {}
        cookie = {}
        for _ in range(200):  # a kept-alive connection to each worker process
            connection = http.client.HTTPConnection("127.0.0.1", gunicorn.port, timeout=10)
            _, _, response = exchange(connection, "GET", "/visits", cookie)
            cookie = cookie or {"Cookie": response.headers["Set-Cookie"].split(";")[0]}
            worker = response.headers["X-Worker"].partition("-")[0]
            if worker in by_worker:
                connection.close()
            by_worker.setdefault(worker, connection)
            if len(by_worker) == 2:
                break
        first, second = by_worker.values()
        headers = {**cookie, **key("k-1")}
        applied = exchange(first, "POST", "/counter/increment", headers)
        replayed = exchange(second, "POST", "/counter/increment", headers)
        for connection in by_worker.values():
            connection.close()
    assert applied[:2] == (200, {"value": 1})
    assert "Idempotent-Replayed" not in applied[2].headers
    assert replayed[:2] == (200, {"value": 1})
    assert replayed[2].headers["X-Worker"] != applied[2].headers["X-Worker"]
    assert replayed[2].headers["Idempotent-Replayed"] == "true"
    assert server.get("counter") == "1"
