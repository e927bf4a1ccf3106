"""Configuration from environment variables, and the secret key.

Nothing here is the lesson; every app reads its settings the same way:

    VAR_DIR        where runtime data lives (default: var/ at the repo root)
    SECRET_KEY     signs cookies; if unset, generated once and kept in
                   VAR_DIR/secret_key (mode 0600), shared by every worker
    WORK_MS        the work a handler does between reading and writing state,
                   standing in for a query or an API call (default 2 ms)
    COOKIE_SECURE  "1" to send cookies over HTTPS only (default off, so the
                   demo works on plain http://127.0.0.1)
"""

import os
import secrets
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
MAX_BODY_BYTES = 16 * 1024
DEFAULT_WORK_MS = 2.0


def var_dir() -> Path:
    path = Path(os.environ.get("VAR_DIR") or REPO_ROOT / "var")
    path.mkdir(parents=True, exist_ok=True)
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
