"""When a session is saved whole, and what that does to its lifetime.

Checked against Flask 3.1 and Flask-Session 0.8 (tests/test_claims.py fails
on other versions). Two rules decide it:

- Flask's SessionInterface.should_set_cookie (flask/sessions.py), called by
  SecureCookieSessionInterface.save_session:
  the cookie is set when the session was modified, or when it is permanent
  and SESSION_REFRESH_EACH_REQUEST is on.
- Flask-Session's ServerSideSessionInterface.should_set_storage
  (flask_session/base.py): the session is written to the store when it was
  modified, or when SESSION_REFRESH_EACH_REQUEST is on.

So a change made inside a value (an in-place append) is saved whenever the
whole session is saved anyway, and a read-only request extends the
session's lifetime only when refresh is on."""

import time
from datetime import timedelta

import pytest
from flask import Flask, session

from tests.conftest import make_app


def cookie_app(*, refresh: bool) -> Flask:
    """Flask's own signed-cookie session, permanent, with an in-place append."""
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test", TESTING=True, SESSION_REFRESH_EACH_REQUEST=refresh)

    @app.post("/assign")
    def assign():
        session.permanent = True
        session["visits"] = [*session.get("visits", []), "assigned"]
        return {}

    @app.post("/append-in-place")
    def append_in_place():
        session["visits"].append("in-place")  # the session is not marked modified
        return {}

    @app.get("/visits")
    def visits():
        return {"visits": session.get("visits", [])}

    return app


@pytest.mark.parametrize("refresh", [True, False])
def test_flasks_cookie_session_keeps_an_in_place_change_only_when_refreshed(refresh):
    app = cookie_app(refresh=refresh)
    client = app.test_client()
    client.post("/assign")
    response = client.post("/append-in-place")
    # should_set_cookie: not modified, so only "permanent and refresh" sets it.
    assert ("Set-Cookie" in response.headers) is refresh
    expected = ["assigned", "in-place"] if refresh else ["assigned"]
    assert client.get("/visits").json == {"visits": expected}


def session_app(monkeypatch, **config) -> Flask:
    monkeypatch.setenv("WORK_MS", "0")
    app = make_app("fixed_session")
    app.config.update(config)
    return app


@pytest.mark.parametrize("refresh", [True, False])
def test_flask_sessions_store_keeps_an_in_place_change_only_when_refreshed(monkeypatch, refresh):
    # fixed_session sets refresh off; Flask-Session's default (Flask's) is on.
    app = session_app(monkeypatch, SESSION_REFRESH_EACH_REQUEST=refresh)

    @app.post("/append-in-place")
    def append_in_place():
        session["visits"].append("in-place")
        return {}

    client = app.test_client()
    client.post("/visits", json={"article": "a1"})
    client.post("/append-in-place")
    expected = ["a1", "in-place"] if refresh else ["a1"]
    assert client.get("/visits").json == {"visits": expected}


LIFETIME_SECONDS = 3  # the file store keeps whole seconds: expiry is int(now) + 3
READ_EVERY_SECONDS = 0.5  # a read comes long before a refreshed expiry runs out


@pytest.mark.parametrize("refresh", [True, False])
def test_a_user_who_only_reads_keeps_the_session_only_when_refreshed(monkeypatch, refresh):
    app = session_app(
        monkeypatch,
        SESSION_REFRESH_EACH_REQUEST=refresh,
        PERMANENT_SESSION_LIFETIME=timedelta(seconds=LIFETIME_SECONDS),
    )
    client = app.test_client()
    written = client.post("/visits", json={"article": "a1"})
    # The write stored int(its time) + LIFETIME_SECONDS, and the store drops an
    # entry once time.time() is past it: a read begun after this instant comes
    # after that expiry, wherever in its second the write fell. The reads stop
    # at the first such one, which decides both cases; later ones show nothing more.
    written_expired_by = int(time.time()) + LIFETIME_SECONDS
    assert written.status_code == 201 and "Set-Cookie" in written.headers
    seen, cookie_refreshed = [], []
    while True:
        began = time.time()
        response = client.get("/visits")  # the first one at once
        seen.append(response.json["visits"])
        cookie_refreshed.append("Set-Cookie" in response.headers)
        if began > written_expired_by:  # this read came after the write's expiry
            break
        time.sleep(READ_EVERY_SECONDS)
    if refresh:  # each read rewrote the store's expiry and the cookie's
        assert seen == [["a1"]] * len(seen)
        assert all(cookie_refreshed)
    else:  # reads extend nothing: the lifetime ran out after the one write
        assert seen[0] == ["a1"] and seen[-1] == []
        assert not any(cookie_refreshed[: seen.index([])])
