"""An Idempotency-Key is never a credential (plumbing/idempotency.py).

A keyed write needs an identity the client already holds (the user cookie a
first GET / gives, or fixed_session's session cookie); without one it is
refused with a 428 and writes nothing.
A key is looked up only within that identity, a replay carries no cookie,
and a key sent again with another request is a 422. fixed_db on PostgreSQL:
tests/test_fixed_db_postgres.py.
"""

import pytest

from tests.conftest import USER_COOKIE

KEYED_APPS = ["fixed_db", "fixed_session", "fixed_cache"]
KEY = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
STRANGERS_KEY = "3f0c9a52-0d4e-4c55-9a51-7d7bbd0e4b7e"  # one both clients happen to send


def keyed_visit(client, article: str, key: str = STRANGERS_KEY):
    return client.post("/visits", json={"article": article}, headers={KEY: key})


@pytest.mark.parametrize("app_name", KEYED_APPS)
def test_a_stranger_replaying_a_key_gets_neither_the_identity_nor_the_data(app, app_name):
    alice, bob = app.test_client(), app.test_client()
    keyed_visit(alice, "alice-secret")
    answer = keyed_visit(bob, "bob-own")
    alices_cookie = alice.get_cookie(USER_COOKIE[app_name])
    assert REPLAYED not in answer.headers
    assert "alice-secret" not in answer.get_data(as_text=True)
    if alices_cookie is not None:  # Bob was not handed Alice's cookie...
        assert alices_cookie.value not in " ".join(answer.headers.getlist("Set-Cookie"))
    assert "alice-secret" not in bob.get("/visits").get_data(as_text=True)  # ...nor her list


@pytest.mark.parametrize("app_name", KEYED_APPS)
def test_a_keyed_write_without_an_identity_is_a_428_and_writes_nothing(app, app_name):
    stranger = app.test_client()
    answer = keyed_visit(stranger, "a1")
    assert answer.status_code == 428
    assert answer.json["error"] == "precondition required"
    assert "cookie" in answer.json["detail"] and "GET /" in answer.json["detail"]
    assert answer.headers.getlist("Set-Cookie") == []  # no identity handed out either
    assert stranger.get("/visits").json == {"visits": []}
    stranger.get("/")
    # The first request gave the cookie: the same key now applies the write, once.
    assert keyed_visit(stranger, "a1").status_code == 201
    replay = keyed_visit(stranger, "a1")
    assert replay.headers[REPLAYED] == "true"
    assert replay.headers.getlist("Set-Cookie") == []  # a replay carries no identity
    assert stranger.get("/visits").json == {"visits": ["a1"]}


@pytest.mark.parametrize("app_name", KEYED_APPS)
def test_a_write_without_a_key_or_a_cookie_still_makes_a_new_user(app, app_name):
    stranger = app.test_client()
    answer = stranger.post("/visits", json={"article": "a1"})
    assert (answer.status_code, answer.json) == (201, {"visits": ["a1"]})
    assert stranger.get_cookie(USER_COOKIE[app_name]) is not None


@pytest.mark.parametrize("app_name", KEYED_APPS)
def test_a_key_sent_again_with_another_body_is_a_422_and_applies_nothing(app):
    client = app.test_client()
    client.get("/")  # the first request: the cookie
    assert keyed_visit(client, "a1").status_code == 201
    reused = keyed_visit(client, "a2")
    assert reused.status_code == 422
    assert KEY in reused.json["detail"]
    assert REPLAYED not in reused.headers
    assert client.get("/visits").json == {"visits": ["a1"]}
    assert keyed_visit(client, "a1").headers[REPLAYED] == "true"  # the first use still replays
