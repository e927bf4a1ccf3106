"""The HTTP contract in README.md, for every app folder (Flask test client).

Status codes, JSON shapes, cookies, and bad input: always a 4xx JSON answer."""

import re
from urllib.parse import unquote

import pytest

from plumbing.http import MAX_FIELD_LENGTH
from tests.conftest import SERVES_COUNTER, USER_COOKIE

WORKER = re.compile(r"^\d+-\d+$")


def test_healthz_names_the_strategy(client, app_name):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "strategy": app_name}


def test_every_response_names_its_worker(client):
    for response in (client.get("/healthz"), client.get("/no-such-route")):
        assert WORKER.match(response.headers["X-Worker"])


@pytest.mark.parametrize("app_name", [a for a in SERVES_COUNTER if SERVES_COUNTER[a]])
def test_counter_increments_reads_and_resets(client):
    assert client.post("/counter/reset").json == {"value": 0}
    assert client.post("/counter/increment").json == {"value": 1}
    assert client.post("/counter/increment").json == {"value": 2}
    assert client.get("/counter").json == {"value": 2}
    assert client.post("/counter/reset").json == {"value": 0}
    assert client.get("/counter").json == {"value": 0}


@pytest.mark.parametrize("app_name", [a for a in SERVES_COUNTER if not SERVES_COUNTER[a]])
@pytest.mark.parametrize("route", ["/counter/increment", "/counter", "/counter/reset"])
def test_an_app_that_cannot_serve_the_counter_says_why(client, route):
    response = client.get(route) if route == "/counter" else client.post(route)
    assert response.status_code == 501
    assert response.json["error"] == "not implemented"
    assert "fixed_db" in response.json["detail"]
    assert "fixed_cache" in response.json["detail"]


def test_visits_append_in_order(client):
    first = client.post("/visits", json={"article": "a1"})
    assert first.status_code == 201
    assert first.json == {"visits": ["a1"]}
    assert client.post("/visits", json={"article": "a2"}).json == {"visits": ["a1", "a2"]}
    assert client.get("/visits").json == {"visits": ["a1", "a2"]}


def test_visits_belong_to_one_user(app, app_name):
    alice, bob = app.test_client(), app.test_client()
    alice.post("/visits", json={"article": "alice-1"})
    if app_name == "broken_global":
        # The bug, even with one thread: one list for everybody.
        assert bob.get("/visits").json == {"visits": ["alice-1"]}
    else:
        assert bob.get("/visits").json == {"visits": []}
        assert alice.get("/visits").json == {"visits": ["alice-1"]}


def test_user_cookie_is_an_http_only_signed_id(client, app_name):
    # A space never occurs in an id or a signature: if it is in the cookie, data is.
    response = client.post("/visits", json={"article": "my article"})
    cookies = response.headers.getlist("Set-Cookie")
    if app_name == "broken_global":
        assert cookies == []  # it never asks who you are: that is part of its bug
        return
    [cookie] = [c for c in cookies if c.startswith(USER_COOKIE[app_name] + "=")]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # COOKIE_SECURE=1 turns it on for HTTPS
    value = cookie.split(";")[0].split("=", 1)[1]
    assert len(value) >= 40  # a long random id...
    assert "my article" not in unquote(value)  # ...never the data


def test_tampered_user_cookie_gets_a_fresh_user(client, app_name):
    client.post("/visits", json={"article": "a1"})
    client.set_cookie(USER_COOKIE[app_name], "forged-value")
    response = client.get("/visits")
    assert response.status_code == 200
    if app_name != "broken_global":
        assert response.json == {"visits": []}
        append = client.post("/visits", json={"article": "a2"})
        assert append.json == {"visits": ["a2"]}  # a fresh user...
        assert client.get_cookie(USER_COOKIE[app_name]).value != "forged-value"  # ...new id


def test_greet_names_the_caller(client):
    assert client.get("/greet", query_string={"name": "Zoë"}).json == {"greeting": "Hello, Zoë!"}


LONGEST = "x" * MAX_FIELD_LENGTH
TOO_LONG = "x" * (MAX_FIELD_LENGTH + 1)

BAD_REQUESTS = {
    "malformed JSON": dict(
        method="POST", path="/visits", data='{"article": ', content_type="application/json"
    ),
    "wrong content type": dict(method="POST", path="/visits", data="article=a1"),
    "body not an object": dict(method="POST", path="/visits", json=["a1"]),
    "missing field": dict(method="POST", path="/visits", json={}),
    "number": dict(method="POST", path="/visits", json={"article": 5}),
    "null": dict(method="POST", path="/visits", json={"article": None}),
    "empty": dict(method="POST", path="/visits", json={"article": ""}),
    "over-long": dict(method="POST", path="/visits", json={"article": TOO_LONG}),
    "newline": dict(method="POST", path="/visits", json={"article": "a\nb"}),
    "NUL": dict(method="POST", path="/visits", json={"article": "a\x00"}),
    "DEL": dict(method="POST", path="/visits", json={"article": "a\x7f"}),
    "C1 control": dict(method="POST", path="/visits", json={"article": "a\x85"}),
    "1 MB body": dict(
        method="POST",
        path="/visits",
        data='{"article": "' + "x" * 1_000_000 + '"}',
        content_type="application/json",
    ),
    "greet without name": dict(method="GET", path="/greet"),
    "greet empty name": dict(method="GET", path="/greet", query_string={"name": ""}),
    "greet over-long name": dict(method="GET", path="/greet", query_string={"name": TOO_LONG}),
    "greet control character": dict(method="GET", path="/greet", query_string={"name": "a\tb"}),
    "unknown route": dict(method="GET", path="/nope"),
    "wrong method on increment": dict(method="GET", path="/counter/increment"),
    "wrong method on visits": dict(method="DELETE", path="/visits"),
}
EXPECTED_STATUS = {
    "wrong content type": 415,
    "1 MB body": 413,
    "unknown route": 404,
    "wrong method on increment": 405,
    "wrong method on visits": 405,
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_input_gets_a_clear_json_4xx(client, case):
    request = dict(BAD_REQUESTS[case])
    response = client.open(request.pop("path"), **request)
    assert response.status_code == EXPECTED_STATUS.get(case, 400), response.json
    assert set(response.json) == {"error", "detail"}
    assert response.json["detail"]
    assert "Traceback" not in response.get_data(as_text=True)


def test_bad_input_loses_nothing(client):
    client.post("/visits", json={"article": "kept"})
    client.post("/visits", json={"article": TOO_LONG})
    client.post("/visits", data="{", content_type="application/json")
    assert client.get("/visits").json == {"visits": ["kept"]}


def test_longest_valid_field_is_accepted(client):
    assert client.post("/visits", json={"article": LONGEST}).status_code == 201
    assert client.get("/greet", query_string={"name": LONGEST}).status_code == 200


def test_the_detail_says_what_is_wrong(client):
    response = client.post("/visits", json={"article": TOO_LONG})
    assert response.json["detail"] == (
        f"'article' must be 1 to {MAX_FIELD_LENGTH} characters, got {MAX_FIELD_LENGTH + 1}"
    )


def test_an_unexpected_failure_is_a_json_500_without_traceback(app):
    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internals")

    response = app.test_client().get("/boom")
    assert response.status_code == 500
    assert response.json["error"] == "internal server error"
    assert "secret internals" not in response.get_data(as_text=True)
    assert WORKER.match(response.headers["X-Worker"])
