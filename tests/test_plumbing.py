"""The plumbing every app shares: secret key, configuration, validation."""

import os
import stat
import threading

import pytest
from flask import Flask

from plumbing.config import load_secret_key, setting, var_dir, work_seconds
from tests.conftest import make_app


def test_secret_key_is_generated_once_and_private(isolated_var_dir):
    first = make_app("fixed_db").secret_key
    second = make_app("broken_global").secret_key
    path = isolated_var_dir / "secret_key"
    assert first == second == path.read_text().strip()
    assert len(first) == 64
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_secret_key_from_the_environment_wins(monkeypatch, isolated_var_dir):
    monkeypatch.setenv("SECRET_KEY", "from-the-environment")
    assert make_app("fixed_db").secret_key == "from-the-environment"
    assert not (isolated_var_dir / "secret_key").exists()


def test_workers_starting_together_agree_on_one_key(tmp_path):
    keys, start = [], threading.Barrier(16)

    def worker():
        start.wait()
        keys.append(load_secret_key(tmp_path))

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(keys)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["secret_key"]


def test_work_ms_is_validated(monkeypatch):
    monkeypatch.setenv("WORK_MS", "5")
    assert work_seconds() == 0.005
    for bad in ("fast", "-1"):
        monkeypatch.setenv("WORK_MS", bad)
        with pytest.raises(ValueError, match="WORK_MS"):
            work_seconds()


def test_a_setting_comes_from_the_config_then_the_environment_then_the_default(monkeypatch):
    app = Flask(__name__)
    monkeypatch.delenv("SESSION_FILE_LIMIT", raising=False)
    assert setting(app, "SESSION_FILE_LIMIT", 10) == 10
    monkeypatch.setenv("SESSION_FILE_LIMIT", "")  # empty counts as unset
    assert setting(app, "SESSION_FILE_LIMIT", 10) == 10
    monkeypatch.setenv("SESSION_FILE_LIMIT", "20")
    assert setting(app, "SESSION_FILE_LIMIT", 10) == "20"
    app.config["SESSION_FILE_LIMIT"] = 30
    assert setting(app, "SESSION_FILE_LIMIT", 10) == 30


def test_fixed_db_rejects_an_unknown_database_url(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "mysql://somewhere/db")
    with pytest.raises(ValueError, match="DATABASE_URL"):
        make_app("fixed_db")


def test_fixed_db_makes_no_folder_for_a_database_url(monkeypatch, tmp_path):
    """A mistyped path used to be made, folders and all, readable by everyone."""
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/no/such/folder/x.db")
    with pytest.raises(ValueError, match="in a folder that does not exist"):
        make_app("fixed_db")
    assert not (tmp_path / "no").exists()


def test_runtime_data_is_private_to_its_owner(isolated_var_dir):
    # On a shared machine, other accounts must not read users' visits.
    isolated_var_dir.mkdir(parents=True, mode=0o755)
    isolated_var_dir.chmod(0o755)
    assert var_dir() == isolated_var_dir
    assert isolated_var_dir.stat().st_mode & 0o777 == 0o700


def test_a_new_user_is_random_whatever_key_it_sends():
    # A key never names a user: the same key from two clients without a
    # cookie makes two users (a keyed write then needs the cookie first).
    from plumbing import create_base_app, current_user_id

    app = create_base_app("who_calls", {"TESTING": True})
    app.get("/who")(lambda: {"user": current_user_id()})

    def user(key: str | None) -> str:
        headers = {"Idempotency-Key": key} if key else {}
        return app.test_client().get("/who", headers=headers).json["user"]  # no cookie

    assert user("key-1") != user("key-1")
    assert user(None) != user(None)


def test_a_rotated_key_keeps_users_when_the_old_one_is_a_fallback(monkeypatch):
    # Many hosts, one key, rotated: the old key moves to SECRET_KEY_FALLBACKS.
    from plumbing import create_base_app, current_user_id

    def app_with(key: str, fallbacks: str = ""):
        monkeypatch.setenv("SECRET_KEY", key)
        monkeypatch.setenv("SECRET_KEY_FALLBACKS", fallbacks)
        app = create_base_app("who_calls", {"TESTING": True})
        app.get("/who")(lambda: {"user": current_user_id()})
        return app

    old = app_with("old-key").test_client()
    user = old.get("/who").json["user"]
    cookie = old.get_cookie("uid").value
    for fallbacks, same_user in (("", False), ("older-key, old-key", True)):
        rotated = app_with("new-key", fallbacks).test_client()
        rotated.set_cookie("uid", cookie)
        assert (rotated.get("/who").json["user"] == user) is same_user
