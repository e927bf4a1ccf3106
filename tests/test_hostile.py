"""Hostile input against real gunicorn servers of every app: each case once
answered 500 or slipped past the body limit, and is now a clear 4xx JSON
answer from the app that changes nothing."""

import json

import pytest

from serve.processes import AppServer, available_apps, free_port
from tests.raw import Answer, request, send

pytestmark = pytest.mark.gunicorn

LIMIT = 16 * 1024  # plumbing.config.MAX_BODY_BYTES
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module", params=available_apps())
def server(request, tmp_path_factory):
    var = tmp_path_factory.mktemp("var")
    with AppServer(request.param, free_port(), env={"VAR_DIR": str(var)}) as running:
        yield running


def rejected(answer: Answer, status: int) -> dict:
    assert answer.status == status, answer
    assert answer.from_app, answer.headers
    body = answer.json()
    assert set(body) >= {"error", "detail"}
    return body


def visits(server) -> list:
    return send(server.port, request("GET", "/visits")).json()["visits"]


def test_deeply_nested_json_is_a_400(server):
    body = b"[" * 1000 + b"]" * 1000  # under the size limit, over the parser's depth
    answer = send(server.port, request("POST", "/visits", body, JSON))
    assert "nested" in rejected(answer, 400)["detail"]


def test_a_lone_surrogate_is_a_400_in_every_app(server):
    body = b'{"article": "\\ud800"}'  # valid JSON, not valid Unicode text
    answer = send(server.port, request("POST", "/visits", body, JSON))
    assert "surrogate" in rejected(answer, 400)["detail"]


def test_broken_chunked_framing_is_a_400(server):
    payload = request("POST", "/visits", headers={**JSON, "Transfer-Encoding": "chunked"})
    payload = payload.replace(b"Content-Length: 0\r\n", b"") + b"zz\r\nabc\r\n0\r\n\r\n"
    answer = send(server.port, payload)
    assert "chunked" in rejected(answer, 400)["detail"]


def test_a_chunked_body_over_the_limit_is_a_413(server):
    for size in (LIMIT + 1000, 20_000_000):  # a valid JSON object padded with spaces
        body = b'{"article": "padded"' + b" " * size + b"}"
        answer = send(server.port, request("POST", "/visits", body, JSON, chunked=True))
        rejected(answer, 413)
    assert "padded" not in json.dumps(visits(server))


def test_a_body_over_the_limit_is_a_413_even_where_the_view_never_reads_it(server):
    def counter() -> object:  # fixed_session's 501 answer, where it has no counter
        return send(server.port, request("GET", "/counter")).json()

    before = counter()
    for chunked in (False, True):
        body = b" " * 20_000_000
        answer = send(server.port, request("POST", "/counter/increment", body, chunked=chunked))
        rejected(answer, 413)
    assert counter() == before


# Requests gunicorn refuses while parsing, before any app code runs: its own
# HTML pages without X-Worker (gunicorn/workers/base.py, handle_error). The
# README's contract lists them; this keeps that list true.
REFUSED_BY_GUNICORN = {
    b"GARBAGE\r\n\r\n": 400,  # not a request line
    b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n": 400,  # not a method
    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n": 414,  # limit_request_line 4094
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 9000 + b"\r\n\r\n": 431,  # a header over 8190
    b"POST /visits HTTP/1.1\r\nHost: x\r\nExpect: 100-banana\r\nContent-Length: 0\r\n\r\n": 417,
}


IDS = ["line", "method", "414", "431", "417"]


@pytest.mark.parametrize("payload", REFUSED_BY_GUNICORN, ids=IDS)
def test_gunicorn_answers_a_malformed_request_itself(server, payload):
    answer = send(server.port, payload)
    assert answer.status == REFUSED_BY_GUNICORN[payload]
    assert not answer.from_app
    assert answer.headers["content-type"] == "text/html"
