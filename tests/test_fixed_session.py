"""fixed_session's three details, each proven deterministically (test client).

The concurrent ones pause a real request at the point that matters (after its
handler, before Flask-Session saves it) instead of hoping for a race."""

import threading
from pathlib import Path

import pytest
from flask import session

from serve.valkey import EmbeddedValkey
from tests.conftest import make_app


def build(monkeypatch, **config):
    monkeypatch.setenv("WORK_MS", "0")
    app = make_app("fixed_session")
    app.config.update(config)
    return app


def test_appending_in_place_would_be_lost_and_the_app_does_not(monkeypatch):
    app = build(monkeypatch)

    @app.post("/naive-append")
    def naive_append():  # the trap: the session never learns the list changed
        session.setdefault("visits", []).append("naive")
        return {}

    client = app.test_client()
    client.post("/visits", json={"article": "a1"})
    client.post("/naive-append")
    assert client.get("/visits").json == {"visits": ["a1"]}  # the naive append vanished
    client.post("/visits", json={"article": "a2"})
    assert client.get("/visits").json == {"visits": ["a1", "a2"]}  # the route keeps it


def read_during_append(app) -> list[str]:
    """A GET /visits that loaded the session, paused until an append of the
    same user has finished, then completes. Returns the user's final visits."""
    loaded, appended = threading.Event(), threading.Event()

    @app.after_request
    def pause_slow_reads(response):  # runs before Flask-Session saves
        if threading.current_thread().name == "slow-read":
            loaded.set()
            appended.wait(5)
        return response

    client = app.test_client()
    client.post("/visits", json={"article": "a1"})

    reader = threading.Thread(target=lambda: client.get("/visits"), name="slow-read")
    reader.start()
    assert loaded.wait(5)
    client.post("/visits", json={"article": "a2"})
    appended.set()
    reader.join(5)
    return client.get("/visits").json["visits"]


def test_with_flasks_default_a_slow_read_erases_a_concurrent_append(monkeypatch):
    app = build(monkeypatch, SESSION_REFRESH_EACH_REQUEST=True)
    assert read_during_append(app) == ["a1"]  # the read saved its stale copy


def test_read_only_requests_do_not_rewrite_the_session(monkeypatch):
    app = build(monkeypatch)
    assert app.config["SESSION_REFRESH_EACH_REQUEST"] is False
    assert read_during_append(app) == ["a1", "a2"]


def test_cookies_can_be_made_secure(monkeypatch):
    monkeypatch.setenv("COOKIE_SECURE", "1")
    response = build(monkeypatch).test_client().post("/visits", json={"article": "a1"})
    assert "Secure" in response.headers["Set-Cookie"]


def session_files(app) -> list[Path]:
    return list(Path(app.config["SESSION_CACHELIB"]._path).iterdir())


def test_requests_that_store_nothing_create_no_session_file(monkeypatch):
    app = build(monkeypatch)
    for _ in range(50):
        app.test_client().get("/visits")
        app.test_client().get("/greet", query_string={"name": "x"})
    assert session_files(app) == []


@pytest.mark.parametrize("limit", [20])
def test_a_flood_of_new_users_cannot_grow_the_store_past_its_limit(monkeypatch, limit):
    monkeypatch.setenv("SESSION_FILE_LIMIT", str(limit))
    app = build(monkeypatch)
    for n in range(10 * limit):
        app.test_client().post("/visits", json={"article": f"a{n}"})  # no cookie each time
    assert len(session_files(app)) <= limit


def test_a_dead_redis_store_gets_a_503_then_recovers(monkeypatch, tmp_path):
    # The session is loaded before the view and saved after it, outside the
    # error handlers a view's errors reach: this took a fix in plumbing.
    valkey = EmbeddedValkey(tmp_path / "valkey").start()
    try:
        monkeypatch.setenv("SESSION_REDIS_URL", valkey.url)
        # TESTING would hand errors from outside the view to the test, not to the app.
        client = build(monkeypatch, TESTING=False).test_client()
        assert client.post("/visits", json={"article": "a1"}).status_code == 201
        valkey.kill()
        valkey.process.wait()
        for response in (client.post("/visits", json={"article": "a2"}), client.get("/visits")):
            assert response.status_code == 503
            assert response.json["detail"] == "the session store is unavailable; retry"
        valkey = EmbeddedValkey(tmp_path / "valkey").start()  # the same append-only file
        response = client.post("/visits", json={"article": "a3"})
        assert (response.status_code, response.json) == (201, {"visits": ["a1", "a3"]})
    finally:
        valkey.stop()
