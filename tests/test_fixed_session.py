"""fixed_session's three details, each proven deterministically (test client),
and its file store.

The concurrent ones pause a real request at the point that matters (after its
handler, before Flask-Session saves it) instead of hoping for a race."""

import json
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from flask import session

from fixed_session import store as store_module
from fixed_session.store import BoundedFileStore
from plumbing.config import REPO_ROOT
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
    sweep_every = app.config["SESSION_CACHELIB"].sweep_every  # one process
    assert len(session_files(app)) <= limit + sweep_every


# The file store itself (fixed_session/store.py): rewritten in place, under a lock.


def test_a_reader_never_sees_half_a_rewrite(tmp_path):
    # Two threads rewrite one file while a third reads it 10,000 times. Without
    # the locks in store.py, some reads mix both versions: the next test.
    store = BoundedFileStore(str(tmp_path), limit=10)
    versions = {letter: letter.encode() * 64_000 for letter in "ab"}  # written in many pages
    store.set("shared", versions["a"])
    stop = threading.Event()

    def rewrite(letter: str) -> None:
        while not stop.is_set():
            store.set("shared", versions[letter])

    writers = [threading.Thread(target=rewrite, args=(letter,)) for letter in "ab"]
    for writer in writers:
        writer.start()
    try:
        seen = [store.get("shared") for _ in range(10_000)]
    finally:
        stop.set()
        for writer in writers:
            writer.join()
    assert all(value in versions.values() for value in seen)
    assert set(seen) == set(versions.values())  # both writers were at work


def test_the_limit_holds_across_restarts(tmp_path):
    # Each run adds fewer new sessions than sweep_every: without a sweep at a
    # process's first new session, the folder would grow run after run.
    for run in range(40):
        store = BoundedFileStore(str(tmp_path), limit=20)  # a new process
        for n in range(store.sweep_every - 1):
            store.set(f"run{run}-user{n}", ["a1"])
    assert len(list(tmp_path.iterdir())) <= 20 + store.sweep_every


def test_a_shorter_version_leaves_none_of_the_longer_behind(tmp_path):
    store = BoundedFileStore(str(tmp_path), limit=10)
    store.set("k", ["x" * 1000])
    store.set("k", ["y"])
    assert store.get("k") == ["y"]
    assert Path(store._get_filename("k")).stat().st_size < 100


def test_an_expired_session_reads_as_none(tmp_path):
    store = BoundedFileStore(str(tmp_path), limit=10)
    store.set("k", ["x"], timeout=-1)
    assert store.get("k") is None


def test_an_unreadable_session_file_starts_its_user_over(monkeypatch):
    app = build(monkeypatch)
    client = app.test_client()
    client.post("/visits", json={"article": "a1"})
    [file] = session_files(app)
    file.write_bytes(b"\0\0\0\0torn")  # as a power cut in mid-write might leave it
    response = client.get("/visits")
    assert (response.status_code, response.json) == (200, {"visits": []})
    client.post("/visits", json={"article": "a2"})
    assert client.get("/visits").json == {"visits": ["a2"]}


FULL_DISK = """
import json, resource, signal, sys
from fixed_session.app import create_app

app = create_app({"VAR_DIR": sys.argv[1]})
client = app.test_client()
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # fail the write with EFBIG, do not die
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))  # as if the disk had filled up
statuses = [client.post("/visits", json={"article": "x" * 64}).status_code for _ in range(80)]
response = client.get("/visits")
print(json.dumps({"statuses": statuses, "visits": len(response.json["visits"])}))
"""


def test_a_full_disk_gets_a_503_and_loses_no_saved_visit(tmp_path):
    run = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(tmp_path)],
        capture_output=True,
        text=True,
        env={"WORK_MS": "0", "PATH": ""},
        cwd=REPO_ROOT,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout)
    saved = found["statuses"].count(201)
    assert 0 < saved < 80
    assert found["statuses"] == [201] * saved + [503] * (80 - saved)  # once full, every one
    assert found["visits"] == saved  # each acknowledged visit is still there


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


def test_without_the_locks_a_reader_sees_half_a_rewrite(monkeypatch, tmp_path):
    # The same writers and reader as above, with store.py's flock calls made
    # no-ops: a read then mixes two versions. Rounds until one is seen, bounded.
    monkeypatch.setattr(
        store_module, "fcntl", SimpleNamespace(flock=lambda fd, op: None, LOCK_SH=0, LOCK_EX=0)
    )
    store = BoundedFileStore(str(tmp_path), limit=10)
    versions = {letter: letter.encode() * 64_000 for letter in "ab"}
    store.set("shared", versions["a"])
    stop = threading.Event()

    def rewrite(letter: str) -> None:
        while not stop.is_set():
            store.set("shared", versions[letter])

    writers = [threading.Thread(target=rewrite, args=(letter,)) for letter in "ab"]
    for writer in writers:
        writer.start()
    torn = 0
    try:
        for _ in range(50):  # rounds of 2,000 reads
            torn += sum(store.get("shared") not in versions.values() for _ in range(2_000))
            if torn:
                break
    finally:
        stop.set()
        for writer in writers:
            writer.join()
    assert torn > 0  # a read that is neither version: half of one, half of the other


def login_app(monkeypatch, *, regenerate: bool):
    """fixed_session's app with a tiny login: a privilege change."""
    app = build(monkeypatch)

    def login():
        if regenerate:
            app.session_interface.regenerate(session)  # Flask-Session 0.8: a new id
        session["user"] = "alice"
        return {}

    app.add_url_rule("/login", view_func=login, methods=["POST"])
    return app


def session_id(client, app) -> str:
    return client.get_cookie(app.config["SESSION_COOKIE_NAME"]).value


@pytest.mark.parametrize("regenerate", [False, True])
def test_a_login_keeps_the_session_id_unless_it_is_regenerated(monkeypatch, regenerate):
    app = login_app(monkeypatch, regenerate=regenerate)
    attacker = app.test_client()
    attacker.post("/visits", json={"article": "a1"})  # a real session id, planted below
    planted = session_id(attacker, app)
    victim = app.test_client()
    victim.set_cookie(app.config["SESSION_COOKIE_NAME"], planted)
    victim.post("/login")
    after = session_id(victim, app)
    if regenerate:
        assert after != planted
        attacker_sees = app.session_interface.open_session(app, attacker_request(app, planted))
        assert "user" not in attacker_sees  # the old id no longer names the login
    else:  # Flask-Session accepted the existing id and kept it: the attacker is logged in
        assert after == planted
        assert (
            app.session_interface.open_session(app, attacker_request(app, planted))["user"]
            == "alice"
        )


def attacker_request(app, sid: str):
    with app.test_request_context(
        headers={"Cookie": f"{app.config['SESSION_COOKIE_NAME']}={sid}"}
    ) as context:
        return context.request
