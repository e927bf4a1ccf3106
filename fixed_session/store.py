"""Where fixed_session's sessions live: cachelib's file store, rewritten in
place under a lock and bounded under several worker processes; or Redis.

init_app(app) sets up Flask-Session: Redis when SESSION_REDIS_URL is set,
else BoundedFileStore under VAR_DIR/sessions, holding about
SESSION_FILE_LIMIT files. A session file is overwritten in place under an
exclusive flock and read under a shared one (cachelib's rename over the old
file costs a disk write per save on ext4), with its space reserved first, so
a full disk loses nothing. The bound keeps no shared count (cachelib's
count file loses updates as broken_global does): each process sweeps the
oldest files beyond the limit now and then. A failed load or save answers
what became of the write (NotApplied, OutcomeUnknown, StoreFull), and a save
is sent at most once. SessionKeys keeps a write's Idempotency-Key in the
session itself, saved with the append. README.md says why, for each.
"""

import fcntl
import itertools
import logging
import os
import pickle
import struct
import time
from collections.abc import Callable
from contextlib import suppress
from datetime import timedelta
from typing import Any

from cachelib.file import FileSystemCache
from flask import Flask, Request, Response, session
from flask_session.base import ServerSideSession
from flask_session.cachelib import CacheLibSessionInterface
from flask_session.defaults import Defaults
from flask_session.redis import RedisSessionInterface
from redis import BusyLoadingError, OutOfMemoryError, Redis, RedisError, ResponseError
from redis.backoff import NoBackoff
from redis.retry import Retry

from plumbing import setting, unavailable_when
from plumbing.idempotency import (
    TTL_SECONDS,
    KeyedWrite,
    NotApplied,
    OutcomeUnknown,
    StoreFull,
    replayed,
)
from plumbing.users import known_user_id

EXPIRY = struct.Struct("I")  # cachelib's header: when the entry expires, 0 for never
SESSION_FILE_LIMIT = 10_000  # beyond it, the least recently written sessions go
REDIS_TIMEOUT_SECONDS = 1.0  # to connect, and to wait for each reply
REPLIES_KEPT = 20  # Idempotency-Keys remembered per session, with their answers
UNAVAILABLE = "the session store is unavailable; retry"
log = logging.getLogger(__name__)


class BoundedFileStore(FileSystemCache):
    def __init__(self, path: str, limit: int, mode: int = 0o600) -> None:
        super().__init__(path, threshold=0, mode=mode)  # 0: no count file
        self.limit = limit
        self.sweep_every = max(1, limit // 10)
        # From 0: the first new session sweeps what earlier runs left.
        self.new_sessions = itertools.count()  # next() is atomic under the GIL

    def get(self, key: str) -> Any:
        try:
            fd = os.open(self._get_filename(key), os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)  # wait for a write under way
            data = os.pread(fd, os.fstat(fd).st_size, 0)
        finally:
            os.close(fd)
        if not data:  # created by a writer that has not written yet
            return None
        try:
            (expires,) = EXPIRY.unpack_from(data)
            if expires and expires < time.time():
                return None
            return pickle.loads(data[EXPIRY.size :])
        except Exception:  # a torn file, after a power cut: start over
            logging.warning("unreadable session file for %r", key, exc_info=True)
            return None

    def set(
        self, key: str, value: Any, timeout: int | None = None, mgmt_element: bool = False
    ) -> bool:
        """Write `value` over the key's file, in place, under an exclusive lock.

        Raises NotApplied (503) when it fails before a byte of the old version
        is overwritten, a full disk included (the old version is intact), and
        OutcomeUnknown (503) when it fails while overwriting."""
        data = EXPIRY.pack(self._normalize_timeout(timeout)) + pickle.dumps(value, protocol=5)
        try:
            fd = os.open(self._get_filename(key), os.O_RDWR | os.O_CREAT, self._mode)
        except OSError as error:
            raise NotApplied(UNAVAILABLE) from error
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                old = os.fstat(fd)
                old_size = old.st_size
                if len(data) > old.st_blocks * 512:  # more than the blocks it has
                    os.posix_fallocate(fd, 0, len(data))  # disk full fails here, intact
            except OSError as error:
                raise NotApplied(UNAVAILABLE) from error
            try:
                written = 0
                while written < len(data):
                    written += os.pwrite(fd, data[written:], written)
                if len(data) < old_size:
                    os.ftruncate(fd, len(data))
            except OSError as error:  # the file may hold the new, the old or a torn version
                raise OutcomeUnknown() from error
        finally:
            os.close(fd)  # and with it the lock
        if old_size == 0 and next(self.new_sessions) % self.sweep_every == 0:
            try:
                self.sweep()
            except OSError:  # the session is saved; the next sweep tries again
                log.warning("could not sweep the session files", exc_info=True)
        return True

    def sweep(self) -> None:
        """Delete the least recently written session files beyond the limit."""
        files = []
        for entry in os.scandir(self._path):
            with suppress(FileNotFoundError):  # another process swept it
                files.append((entry.stat().st_mtime, entry.path))
        files.sort()
        for _, path in files[: max(0, len(files) - self.limit)]:
            with suppress(FileNotFoundError):
                os.remove(path)


class SavedAtMostOnce:
    """Flask-Session's interface, with failures that say what became of the
    write, and a failed save that is never sent again."""

    def open_session(self, app: Flask, request: Request) -> ServerSideSession:
        """Raises NotApplied (503) when the store cannot be read."""
        try:
            return super().open_session(app, request)
        except (RedisError, OSError) as error:
            log.warning("could not load a session: %s", error)
            raise NotApplied(UNAVAILABLE) from error

    def save_session(self, app: Flask, session: ServerSideSession, response: Response) -> None:
        """Raises what the store raises (NotApplied, OutcomeUnknown, StoreFull)."""
        try:
            super().save_session(app, session, response)
        except BaseException:
            # Flask answers the error, then saves the session again: unmodified,
            # that second save writes nothing.
            session.modified = False
            raise


class FileSessions(SavedAtMostOnce, CacheLibSessionInterface):
    pass


class RedisSessions(SavedAtMostOnce, RedisSessionInterface):
    def _upsert_session(
        self, session_lifetime: timedelta, session: ServerSideSession, store_id: str
    ) -> None:
        """SET the session, sent once, on a connection made before sending.

        Raises NotApplied (503) if the connection cannot be made or the server
        refuses the SET, StoreFull (507) if it refuses it for lack of memory,
        OutcomeUnknown (503) if no reply comes after sending."""
        data = self.serializer.encode(session)
        pool = self.client.connection_pool
        try:
            conn = pool.get_connection()  # connects if need be; nothing is sent yet
        except RedisError as error:
            raise NotApplied(UNAVAILABLE) from error
        try:
            conn.send_command("SET", store_id, data, "EX", int(session_lifetime.total_seconds()))
            conn.read_response()
        except OutOfMemoryError as error:  # an answer: refused
            raise StoreFull() from error
        except (ResponseError, BusyLoadingError) as error:  # an answer: refused
            raise NotApplied(UNAVAILABLE) from error
        except (RedisError, OSError) as error:  # no answer: it may be applied, even later
            conn.disconnect()
            raise OutcomeUnknown() from error
        finally:
            pool.release(conn)


class SessionKeys:
    """fixed_session's KeyStore (plumbing.idempotency): the user is the
    session, so a key is kept in it, in session["replies"], assigned a new
    dict (never changed in place) so that the key is saved in the same
    whole-session write as the view's change, under the file's lock or as
    one Redis SET. Keeps the last REPLIES_KEPT keys, each for TTL_SECONDS."""

    @staticmethod
    def identity() -> str | None:
        """The user cookie GET / sets; else the session, if the request's
        cookie named one the store holds (a new one is empty until the view
        writes to it). Either way a key is found only by requests that hold
        the session it was recorded in."""
        return known_user_id() or (session.sid if session else None)

    @staticmethod
    def write_once(view: Callable[[], Response], keyed: KeyedWrite | None) -> Response:
        if keyed is None:
            return view()
        now = int(time.time())
        replies = {
            k: reply
            for k, reply in session.get("replies", {}).items()
            if reply[2] >= now - TTL_SECONDS
        }
        if keyed.scope in replies:
            status, body, _created, *recorded = replies[keyed.scope]
            return replayed(status, body, recorded[0] if recorded else "")
        response = view()
        kept = list(replies.items())[-(REPLIES_KEPT - 1) :]
        answer = [response.status_code, response.get_data(as_text=True), now, keyed.fingerprint]
        session["replies"] = {**dict(kept), keyed.scope: answer}
        return response


def session_settings(app: Flask) -> dict[str, Any]:
    """The settings flask_session.Session(app) gives every session interface,
    from app.config or Flask-Session's defaults."""
    names = {
        "key_prefix": "SESSION_KEY_PREFIX",
        "use_signer": "SESSION_USE_SIGNER",
        "permanent": "SESSION_PERMANENT",
        "sid_length": "SESSION_ID_LENGTH",
        "serialization_format": "SESSION_SERIALIZATION_FORMAT",
    }
    return {arg: app.config.get(name, getattr(Defaults, name)) for arg, name in names.items()}


def init_app(app: Flask) -> None:
    # What flask_session.Session(app) does for these two SESSION_TYPEs, with the classes above.
    if url := setting(app, "SESSION_REDIS_URL"):
        server = Redis.from_url(
            url,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), retries=0),  # a write is never sent twice
        )
        app.config.update(SESSION_TYPE="redis", SESSION_REDIS=server)
        app.session_interface = RedisSessions(app, client=server, **session_settings(app))
    else:
        limit = int(setting(app, "SESSION_FILE_LIMIT", SESSION_FILE_LIMIT))
        files = BoundedFileStore(f"{app.config['VAR_DIR']}/sessions", limit)
        app.config.update(SESSION_TYPE="cachelib", SESSION_CACHELIB=files)
        app.session_interface = FileSessions(app, client=files, **session_settings(app))
    app.extensions["idempotency"] = SessionKeys()
    # Any other failure of the store (a RedisError or OSError not mapped above): a 503.
    unavailable_when(app, (RedisError, OSError), UNAVAILABLE)
