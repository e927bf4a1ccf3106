"""Property-based fuzzing of every app's real gunicorn server with hostile requests.

Hypothesis builds each request from parts that have each broken an app once
(structure, encodings, framing, sizes, methods, headers, cookies) and sends
its bytes as they are (tests/raw.py). Whatever arrives, the properties hold:

- no 5xx from the app except its documented 501 (a scope it does not serve)
  and 503 (a store down); gunicorn's own rejections of a malformed request,
  sent before the app runs, are 4xx;
- every answer of the app is JSON, or the page for people (GET /,
  plumbing/page.py) as it is; every error carries error and detail;
- the worker process never restarts;
- the state changes only by the writes the app acknowledged: a model of the
  counter and of one user's visits, updated on 2xx answers only, matches the
  app at the end.

One worker process, so that broken_global's state is one copy and the model
can follow it; concurrency is tested elsewhere. `derandomize` makes every run
draw the same requests, so a failure here is reproducible, and each input
that once failed is kept as an @example.
"""

import json
import string

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from plumbing.page import PAGE
from serve.processes import AppServer, available_apps, free_port
from tests.raw import Answer, request, send

pytestmark = pytest.mark.gunicorn

EXAMPLES_PER_APP = 2000
JSON = {"Content-Type": "application/json"}
ROUTES = ["/healthz", "/counter", "/counter/increment", "/counter/reset", "/visits", "/greet"]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "BREW", "get"]
TOKEN = string.ascii_letters + string.digits + "-_.~"
KNOWN_USER = "known-user-cookie"  # replaced by a real user's cookie before sending

# -- the parts of a request -------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=80),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
articles = st.one_of(
    st.text(min_size=1, max_size=64),
    st.text(min_size=65, max_size=200),
    st.just(""),
    st.sampled_from(["\ud800", "a\x00b", "\u202e", "../etc/passwd", "<script>"]),
    st.integers(),
    st.none(),
    st.lists(st.text(max_size=3), max_size=3),
)


# Strategies are made once, here, not in the composites below: made afresh at
# every draw, the text strategies' alphabets were most of the test's time.
body_kinds = st.sampled_from(["article", "json", "bytes", "deep", "big", "empty"])
short_names = st.text(max_size=8)
raw_bodies = st.binary(max_size=300)
depths = st.integers(100, 5000)
big_sizes = st.integers(16 * 1024 - 20, 40_000)


@st.composite
def bodies(draw) -> bytes:
    kind = draw(body_kinds)
    if kind == "article":
        obj = {"article": draw(articles)}
        if draw(st.booleans()):
            obj[draw(short_names)] = draw(json_values)
        return json.dumps(obj, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    if kind == "json":
        return json.dumps(draw(json_values)).encode()
    if kind == "bytes":
        return draw(raw_bodies)
    if kind == "deep":
        depth = draw(depths)
        return b"[" * depth + b"]" * depth
    if kind == "big":
        return b'{"article": "big"' + b" " * draw(big_sizes) + b"}"
    return b""


def quoted(text: str) -> str:
    return "".join(c if c in TOKEN else "".join(f"%{b:02X}" for b in c.encode()) for c in text)


paths = (
    st.sampled_from(ROUTES)
    | st.sampled_from(["/", "/visits/", "/../healthz", "//counter", "/%2e%2e/x", "/a" * 300])
    | st.text(TOKEN + "/%", min_size=1, max_size=40).map(lambda t: "/" + t)
)
names = st.text(max_size=80) | st.sampled_from(["", "\ud800", "a\x00"])


@st.composite
def targets(draw) -> str:
    path = draw(paths)
    if draw(st.booleans()):
        name = draw(names)
        path += "?name=" + quoted(name.encode("utf-8", "surrogatepass").decode("latin-1"))
    return path


header_values = st.text(string.printable.strip() + " ", max_size=60)
content_types = st.sampled_from(
    [None, "application/json", "application/json; charset=latin-1", "text/plain"]
)
cookie_kinds = st.sampled_from(["none", "known", "forged"])
cookie_names = st.sampled_from(["uid", "session"])
cookie_values = st.text(TOKEN + ".=", max_size=120)
header_names = st.text(TOKEN, min_size=1, max_size=12)


@st.composite
def headers(draw) -> dict[str, str]:
    found = {}
    content_type = draw(content_types)
    if content_type:
        found["Content-Type"] = content_type
    cookie = draw(cookie_kinds)
    if cookie == "known":  # the user whose visits the model follows
        found["Cookie"] = KNOWN_USER
    elif cookie == "forged":
        name = draw(cookie_names)
        found["Cookie"] = f"{name}={draw(cookie_values)}"
    if draw(st.booleans()):
        found["Idempotency-Key"] = draw(header_values)
    for _ in range(draw(st.integers(0, 2))):
        found["X-" + draw(header_names)] = draw(header_values)
    return found


methods = st.sampled_from(METHODS)
framings = st.sampled_from(["length", "chunked", "broken-chunks", "short-length"])


@st.composite
def requests_(draw) -> tuple[str, str, bytes]:
    """(method, path, the request's bytes)."""
    method = draw(methods)
    target = draw(targets())
    body = draw(bodies())
    framing = draw(framings)
    payload = request(method, target, body, draw(headers()), chunked=framing != "length")
    if framing == "broken-chunks":  # complete, but its chunk size is not hexadecimal
        head = payload.partition(b"\r\n\r\n")[0]
        payload = head + b"\r\n\r\nzz\r\n" + body + b"\r\n0\r\n\r\n"
    elif framing == "short-length" and body:
        payload = payload.replace(b"Transfer-Encoding: chunked", b"Content-Length: 1", 1)
    return method, target.partition("?")[0], payload


# -- the model of the state, and the properties -----------------------------------


class Model:
    """The state the app should have, changed only by acknowledged writes: the
    counter, and the visits of the known user (of everyone in broken_global,
    whose one list is the bug)."""

    def __init__(self, visits: list, global_visits: bool) -> None:
        self.counter = 0
        self.visits = visits
        self.global_visits = global_visits

    def follow(self, method: str, path: str, known_user: bool, answer: Answer) -> None:
        if method != "POST" or not 200 <= answer.status < 300:
            return
        if path == "/counter/increment":
            self.counter = answer.json()["value"]
        elif path == "/counter/reset":
            self.counter = 0
        elif path == "/visits" and (known_user or self.global_visits):
            self.visits = answer.json()["visits"]


def check_answer(method: str, answer: Answer) -> None:
    assert answer.status, "the connection closed without an answer"
    if not answer.from_app:  # gunicorn's parser refused it before the app ran
        assert 400 <= answer.status < 500, answer
        return
    assert answer.status < 500 or answer.status in (501, 503), answer
    if method in ("HEAD", "OPTIONS"):
        return  # no body to read
    if answer.headers.get("content-type", "").startswith("text/html"):
        assert answer.body == PAGE.read_bytes(), answer  # the page for people, and only it
        return
    body = answer.json()
    if answer.status >= 400:
        assert isinstance(body["error"], str) and isinstance(body["detail"], str), body


@pytest.fixture(scope="module", params=available_apps())
def app_server(request, tmp_path_factory):
    env = {"VAR_DIR": str(tmp_path_factory.mktemp("var")), "GUNICORN_WORKERS": "1"}
    with AppServer(request.param, free_port(), env=env) as server:
        yield server


def test_no_hostile_request_breaks_an_app(app_server):
    port = app_server.port
    send(port, request("POST", "/counter/reset"))
    first = send(port, request("POST", "/visits", b'{"article": "seed"}', JSON))
    cookie = first.headers.get("set-cookie", "uid=").split(";")[0]  # none in broken_global
    model = Model(first.json()["visits"], global_visits=app_server.app == "broken_global")

    @settings(
        max_examples=EXAMPLES_PER_APP,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(requests_())
    @example(("POST", "/visits", request("POST", "/visits", b"[" * 1000 + b"]" * 1000, JSON)))
    @example(("POST", "/visits", request("POST", "/visits", b'{"article": "\\ud800"}', JSON)))
    def one(sent: tuple[str, str, bytes]) -> None:
        method, path, payload = sent
        known_user = KNOWN_USER.encode() in payload
        answer = send(port, payload.replace(KNOWN_USER.encode(), cookie.encode()))
        check_answer(method, answer)
        model.follow(method, path, known_user, answer)

    one()
    counter = send(port, request("GET", "/counter"))
    if app_server.app != "fixed_session":  # its counter is a 501
        assert counter.json()["value"] == model.counter
    visits = send(port, request("GET", "/visits", headers={"Cookie": cookie}))
    assert visits.json()["visits"] == model.visits
    worker = send(port, request("GET", "/healthz")).headers["x-worker"].partition("-")[0]
    assert worker == str(app_server.worker_pids[0]), "the worker process restarted"
