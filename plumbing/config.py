"""Configuration: one way to read a setting, and the secret key.

Nothing here is the lesson. Every setting has a default, and an environment
variable of the same name changes it. create_base_app() reads the plumbing's
settings into app.config, where a test's `create_app({...})` may replace
them; each store reads its own with setting(app, NAME, default): app.config
first, then the environment. They are the rows of the configuration table in
the top-level README.md:

    SECRET_KEY          signs cookies; if unset, generated once into
                        VAR_DIR/secret_key (mode 0600), shared by every worker
    SECRET_KEY_FALLBACKS  earlier keys, comma-separated: cookies they signed are
                        still read, new ones are signed with SECRET_KEY (to
                        rotate the key on every host without logging users out)
    WORK_MS             work a handler does between reading and writing state,
                        standing in for a query or an API call (default 2)
    FIXED_DB_BACKEND    fixed_db's store: sqlite (default) or postgres (the launchers
                        start an embedded PostgreSQL when DATABASE_URL is unset)
    DATABASE_URL        fixed_db's database (default sqlite:////<VAR_DIR>/fixed_db.sqlite3;
                        or postgresql://...)
    POSTGRES_POOL_SIZE  fixed_db's connections per worker process on PostgreSQL
                        (default GUNICORN_THREADS, else 4)
    REDIS_URL           fixed_cache's server (`make run-fixed`, `python -m serve`
                        and the tests start an embedded one and set it)
    SESSION_REDIS_URL   fixed_session's store (default unset: files under
                        VAR_DIR/sessions)
    SESSION_FILE_LIMIT  most session files kept (default 10000)
    SQLITE_SYNCHRONOUS  fixed_db's SQLite sync level (default NORMAL; FULL to
                        fsync every commit)
    SQLITE_BUSY_TIMEOUT_MS  how long a fixed_db write waits for another's lock
                        before answering 503 "not applied" (default 5000)
    COOKIE_SECURE       "1" to send cookies over HTTPS only (default off, so the
                        demo works on plain http://127.0.0.1)
    VAR_DIR             where runtime data lives (default: var/ at the repo root)

GUNICORN_WORKERS, GUNICORN_THREADS and GUNICORN_WORKER_CLASS shape the server:
serve/gunicorn_conf.py reads them, not the apps.
"""

import os
import secrets
from pathlib import Path
from typing import Any

from flask import Flask

REPO_ROOT = Path(__file__).resolve().parent.parent
MAX_BODY_BYTES = 16 * 1024
DEFAULT_WORK_MS = 2.0


def setting(app: Flask, name: str, default: Any = None) -> Any:
    """app.config[name] if set, else the environment variable, else default.
    An empty value counts as unset."""
    for value in (app.config.get(name), os.environ.get(name)):
        if value not in (None, ""):
            return value
    return default


def var_dir() -> Path:
    """The folder of all runtime data, private to its owner (mode 0700): the
    databases, session files and append-only files in it hold users' data,
    which other accounts on a shared machine must not read."""
    path = Path(os.environ.get("VAR_DIR") or REPO_ROOT / "var")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:  # made by an older checkout, or by hand
        path.chmod(0o700)
    return path


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def work_seconds() -> float:
    raw = os.environ.get("WORK_MS", str(DEFAULT_WORK_MS))
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"WORK_MS must be a number of milliseconds, got {raw!r}") from None
    if value < 0:
        raise ValueError(f"WORK_MS must not be negative, got {raw!r}")
    return value / 1000


def secret_key_fallbacks() -> list[str]:
    """SECRET_KEY_FALLBACKS from the environment, oldest first; Flask's session
    cookie reads it (Flask 3.1+, sessions.py get_signing_serializer), and so
    does the user cookie (plumbing/users.py)."""
    return [
        key.strip() for key in os.environ.get("SECRET_KEY_FALLBACKS", "").split(",") if key.strip()
    ]


def load_secret_key(directory: Path) -> str:
    """SECRET_KEY from the environment, else one generated once per checkout.

    Every gunicorn worker calls this at start-up, possibly at the same moment.
    The key is written to a private temporary file and hard-linked into place,
    which either succeeds for exactly one worker or fails because the file is
    already there, so all workers end up with the same key.
    """
    if key := os.environ.get("SECRET_KEY"):
        return key
    path = directory / "secret_key"
    if not path.exists():
        tmp = directory / f".secret_key.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()
