"""Where fixed_session's sessions live: cachelib's file store, rewritten in
place under a lock, with a bound that holds when several worker processes
write at once; or Redis.

init_app(app) sets up Flask-Session: Redis when SESSION_REDIS_URL is set,
else the BoundedFileStore below, under VAR_DIR/sessions and holding about
SESSION_FILE_LIMIT files. When the store fails (Redis down, a full disk), the
app answers 503, saying what became of the write (see "Failures" below).

Idempotency. The user is the session, so a write's Idempotency-Key is kept
in the session itself: @idempotent records the key and the answer in
session["replies"], and Flask-Session saves them in the same whole-session
write as the append. The last REPLIES_KEPT keys, each for
IDEMPOTENCY_TTL_SECONDS, are kept.

Writing. cachelib writes each new version of a session to a temporary file
and renames it over the old one. On ext4, Linux's most common file system,
renaming over an existing file starts writing the new file's data to disk
right away (the `auto_da_alloc` safeguard), so every saved session costs a
disk write. Here a session file is overwritten in place while holding an
exclusive lock (flock), and read while holding a shared one, so nobody reads
half a version, and the workers spend less CPU per `POST /visits` than
with the rename (`python -m loadtests.bench fixed_session`; the figures of
this version are in docs/results/bench.csv, the rename's were not kept). The
format stays cachelib's (a 4-byte expiry time, then a pickle), so its other
methods (has, delete, clear) still work.

The price: a power cut, or a worker killed in the middle of a write (gunicorn's
timeout, the OOM killer), can leave that one file torn,
its user's visits lost or partly old; a file that no longer reads counts as
an empty session, never as an error. A full disk loses nothing: the space is
reserved before any byte of the old version is overwritten. Sessions hold
what a user can rebuild; what must survive a power cut belongs in fixed_db.

Bounding. cachelib can cap its file store with `threshold`, but it keeps the
file count in a file that each process reads, adds one to and writes back:
the lost update this repository is about (cachelib/file.py,
FileSystemCache._update_count). Under gunicorn the count drifts (seen in a
trial by hand, not kept), and once over the threshold every write reads
every file to find what to delete. Here there is no count to keep. Each process, at the first new
session it creates and after every `sweep_every` more, lists the folder and
deletes the least recently written files beyond `limit`. However fast the
flood, and however often the app restarts, the folder holds at most
limit + workers x sweep_every files.

Failures. A session is read before the view and saved after it, so a
failure there answers what became of the save (plumbing/idempotency.py):

- Loading fails: nothing was written. NotApplied (503).
- The file store fails before it overwrites a byte of the old version
  (opening, locking, reserving space: a full disk fails here): NotApplied
  (503). Not StoreFull, although the disk is full: the store itself is
  bounded (SESSION_FILE_LIMIT), so a full disk is the machine's condition,
  not this user's data outgrowing the store, and the old version is intact.
- The file store fails while it overwrites (an I/O error): the file may hold
  the new version, the old one or a torn one. OutcomeUnknown (503).
- Redis: a connection that cannot be made, before the SET is sent:
  NotApplied. The server refuses the SET (an error reply): NotApplied, or
  StoreFull (507) when it is out of memory (maxmemory, noeviction). No reply
  after the SET was sent (a timeout, a lost connection): the server may have
  applied it, or may yet. OutcomeUnknown.

And a save is sent at most once. The client is made with no retry (redis-py
8's Redis() retries a timed-out command up to 10 times; from_url() currently
does not, and this does not depend on it). Flask itself, when save_session()
raises, answers the error and then saves the session again
(Flask.finalize_request() on the error response): the same SET, on another
pooled connection. A failed save marks the session unmodified first, so that
second save writes nothing.
"""

import fcntl
import functools
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
from flask import Flask, Request, Response, current_app, session
from flask_session.base import ServerSideSession
from flask_session.cachelib import CacheLibSessionInterface
from flask_session.defaults import Defaults
from flask_session.redis import RedisSessionInterface
from redis import BusyLoadingError, OutOfMemoryError, Redis, RedisError, ResponseError
from redis.backoff import NoBackoff
from redis.retry import Retry

from plumbing import setting, unavailable_when
from plumbing.idempotency import (
    NotApplied,
    OutcomeUnknown,
    StoreFull,
    idempotency_key,
    scoped_key,
)

EXPIRY = struct.Struct("I")  # cachelib's header: when the entry expires, 0 for never
SESSION_FILE_LIMIT = 10_000  # beyond it, the least recently written sessions go
REDIS_TIMEOUT_SECONDS = 1.0  # to connect, and to wait for each reply
REPLIES_KEPT = 20  # Idempotency-Keys remembered per session, with their answers
IDEMPOTENCY_TTL_SECONDS = 24 * 60 * 60  # a key older than this is forgotten
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


def idempotent(view: Callable) -> Callable:
    """Make a write route answer once per Idempotency-Key, kept in the session.

    Without the header the view runs as it is. With it: a key (scoped to the
    route and the session) found in session["replies"] sends its recorded
    answer again, with `Idempotent-Replayed: true`, and changes nothing; else
    the view runs, and its answer (status and JSON body) is recorded under the
    key. session["replies"] is assigned a new dict, never changed in place,
    so the key is saved in the same whole-session write as the view's change.
    A view that fails records no key, so a retry with it runs the write. Keeps
    the last REPLIES_KEPT keys, each for IDEMPOTENCY_TTL_SECONDS (24 hours).

    Raises BadRequest (400) for a malformed key."""

    @functools.wraps(view)
    def write(*args, **kwargs):
        key = idempotency_key()
        if key is None:
            return view(*args, **kwargs)
        key = scoped_key(session.sid, key)
        now = int(time.time())
        replies = {
            k: reply
            for k, reply in session.get("replies", {}).items()
            if reply[2] >= now - IDEMPOTENCY_TTL_SECONDS
        }
        if key in replies:
            status, body, _created = replies[key]
            response = current_app.response_class(body, status, mimetype="application/json")
            response.headers["Idempotent-Replayed"] = "true"
            return response
        response = current_app.make_response(view(*args, **kwargs))
        kept = list(replies.items())[-(REPLIES_KEPT - 1) :]
        answer = [response.status_code, response.get_data(as_text=True), now]
        session["replies"] = {**dict(kept), key: answer}
        return response

    return write


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
    # Any other failure of the store (a RedisError or OSError not mapped above): a 503.
    unavailable_when(app, (RedisError, OSError), UNAVAILABLE)
