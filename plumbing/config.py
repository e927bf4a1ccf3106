"""Configuration: every setting once, one way to read it, and the secret key.

Nothing here is the lesson. Every setting has a default, and an environment
variable of the same name changes it. SETTINGS is the one list of them (name,
default, meaning): the top-level README's Configuration table is generated
from it (docs/tools/blocks.py, `settings`), the tests clear every one of
them before each test (tests/conftest.py), and the code that needs a default
takes it from here (default()). create_base_app() reads the plumbing's
settings into app.config, where a test's `create_app({...})` may replace
them; each store reads its own with setting(app, NAME, default): app.config
first, then the environment. GUNICORN_* shape the server, read by
serve/gunicorn_conf.py, not by the apps.
"""

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # not imported at run time: serve/gunicorn_conf.py reads this module
    from flask import Flask

REPO_ROOT = Path(__file__).resolve().parent.parent
MAX_BODY_BYTES = 16 * 1024
# fixed_db's stores, FIXED_DB_BACKEND's values (the first is the default; the
# Makefile's DB= check spells them too, and tests/test_config.py compares),
# and its SQLite file under VAR_DIR when DATABASE_URL is unset.
FIXED_DB_BACKENDS = ("sqlite", "postgres")
FIXED_DB_SQLITE_FILE = "fixed_db.sqlite3"


def url_backend(url: str) -> str | None:
    """Which of FIXED_DB_BACKENDS a DATABASE_URL names, by its scheme; None
    for neither.

    >>> url_backend("postgresql://db.example/app"), url_backend("sqlite:////tmp/x.db")
    ('postgres', 'sqlite')
    >>> url_backend("mysql://db.example/app") is None
    True
    """
    scheme = url.partition("://")[0] if "://" in url else ""
    if scheme in ("postgresql", "postgres"):
        return "postgres"
    return "sqlite" if scheme == "sqlite" else None


@dataclass(frozen=True)
class Setting:
    """An environment setting: `shown` is its default as the README says it,
    `value` the default the code uses, where it is one plain value."""

    name: str
    shown: str
    meaning: str
    value: str | None = None


SETTINGS = (
    Setting(
        "SECRET_KEY",
        "generated once into `var/secret_key` (mode 0600)",
        "signs the user cookie; on several hosts, set the same one on every host",
    ),
    Setting(
        "SECRET_KEY_FALLBACKS",
        "unset",
        "earlier keys, comma-separated, still accepted: rotate `SECRET_KEY` "
        "without logging users out",
    ),
    Setting(
        "WORK_MS",
        "`2`",
        "work a handler does between reading and writing state (a query, an API call)",
        "2",
    ),
    Setting(
        "FIXED_DB_BACKEND",
        "`sqlite`",
        "`postgres`: fixed_db on PostgreSQL; with no `DATABASE_URL`, the launchers start an "
        "embedded server under `var/postgres/` ([`serve/postgres.py`](serve/postgres.py)). "
        "`make ... DB=postgres` sets it",
        "sqlite",
    ),
    Setting(
        "DATABASE_URL",
        f"`sqlite:////<repo>/var/{FIXED_DB_SQLITE_FILE}`",
        "fixed_db's database: `sqlite:////abs/path.db` (in a folder that exists), or any "
        "`postgresql://` server (nothing is started then)",
    ),
    Setting(
        "POSTGRES_POOL_SIZE",
        "`GUNICORN_THREADS` (4)",
        "fixed_db's connections per worker process on PostgreSQL; see [`fixed_db/`](fixed_db/)",
    ),
    Setting(
        "POSTGRES_SYNCHRONOUS_COMMIT",
        "`on`",
        "the embedded PostgreSQL's commits: `off` is faster and loses acknowledged commits to "
        "a crash of the server; see [`serve/`](serve/)",
        "on",
    ),
    Setting("REDIS_URL", "an embedded Valkey server under `var/valkey/`", "fixed_cache's server"),
    Setting(
        "VALKEY_APPENDFSYNC",
        "`always`",
        "the embedded Valkey's fsync: `everysec` is faster and loses acknowledged writes to a "
        "badly timed crash; see [`serve/`](serve/)",
        "always",
    ),
    Setting("SESSION_REDIS_URL", "unset: files under `var/sessions/`", "fixed_session's store"),
    Setting("SESSION_FILE_LIMIT", "`10000`", "most session files kept", "10000"),
    Setting(
        "SQLITE_SYNCHRONOUS",
        "`NORMAL`",
        "`FULL` to fsync every commit; see [`fixed_db/`](fixed_db/)",
        "NORMAL",
    ),
    Setting(
        "SQLITE_BUSY_TIMEOUT_MS",
        "`5000`",
        'how long a fixed_db write waits for another\'s lock before a 503 "not applied"',
        "5000",
    ),
    Setting("COOKIE_SECURE", "off", "`1` to send cookies over HTTPS only"),
    Setting("VAR_DIR", "`var/`", "where runtime data lives"),
    Setting("GUNICORN_WORKERS", "`2`", "the server's worker processes", "2"),
    Setting("GUNICORN_THREADS", "`4`", "threads per worker process (gthread)", "4"),
    Setting("GUNICORN_WORKER_CLASS", "`gthread`", "gunicorn's worker type", "gthread"),
    Setting(
        "GUNICORN_WORKER_CONNECTIONS", "`1000`", "greenlets per worker process (gevent)", "1000"
    ),
    Setting("GUNICORN_LOGLEVEL", "`warning`", "what gunicorn logs", "warning"),
)
BY_NAME = {setting.name: setting for setting in SETTINGS}


def default(name: str) -> str:
    """The default value of a setting that has one plain value (SETTINGS)."""
    value = BY_NAME[name].value
    if value is None:
        raise KeyError(f"{name} has no plain default value")
    return value


def settings_table() -> str:
    """The README's Configuration table, in Markdown."""
    rows = [f"| `{s.name}` | {s.shown} | {s.meaning} |" for s in SETTINGS]
    return "\n".join(["| variable | default | meaning |", "| --- | --- | --- |", *rows]) + "\n"


def setting(app: "Flask", name: str, default: Any = None) -> Any:
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
    raw = os.environ.get("WORK_MS") or default("WORK_MS")
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
