"""Where fixed_session's sessions live: cachelib's file store, rewritten in
place under a lock, with a bound that holds when several worker processes
write at once; or Redis.

init_app(app) sets up Flask-Session: Redis when SESSION_REDIS_URL is set,
else the BoundedFileStore below, under VAR_DIR/sessions and holding about
SESSION_FILE_LIMIT files. When the store fails (Redis down, a full disk), the
app answers 503.

Writing. cachelib writes each new version of a session to a temporary file
and renames it over the old one. On ext4, Linux's most common file system,
renaming over an existing file starts writing the new file's data to disk
right away (the `auto_da_alloc` safeguard), so every saved session costs a
disk write. Here a session file is overwritten in place while holding an
exclusive lock (flock), and read while holding a shared one, so nobody reads
half a version. In `python -m loadtests.bench fixed_session` on 2 cores, the
workers' CPU time per `POST /visits` fell from about 860 us to about 520 us,
and the route went from about 0.35x to about 0.6x of the app's /healthz. The
format stays cachelib's (a 4-byte expiry time, then a pickle), so its other
methods (has, delete, clear) still work.

The price: a power cut in the middle of a write can leave that one file torn,
its user's visits lost or partly old; a file that no longer reads counts as
an empty session, never as an error. A full disk loses nothing: the space is
reserved before any byte of the old version is overwritten. Sessions hold
what a user can rebuild; what must survive a power cut belongs in fixed_db.

Bounding. cachelib can cap its file store with `threshold`, but it keeps the
file count in a file that each process reads, adds one to and writes back:
the lost update this repository is about. Under gunicorn the count drifts (a
trial with a threshold of 200 ended with 599 files), and once over the
threshold every write reads every file to find what to delete (120
requests/s). Here there is no count to keep. Each process, at the first new
session it creates and after every `sweep_every` more, lists the folder and
deletes the least recently written files beyond `limit`. However fast the
flood, and however often the app restarts, the folder holds at most
limit + workers x sweep_every files.
"""

import fcntl
import itertools
import logging
import os
import pickle
import struct
import time
from contextlib import suppress
from typing import Any

from cachelib.file import FileSystemCache
from flask import Flask
from flask_session import Session
from redis import Redis, RedisError

from plumbing import setting, unavailable_when

EXPIRY = struct.Struct("I")  # cachelib's header: when the entry expires, 0 for never
SESSION_FILE_LIMIT = 10_000  # beyond it, the least recently written sessions go


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
        data = EXPIRY.pack(self._normalize_timeout(timeout)) + pickle.dumps(value, protocol=5)
        fd = os.open(self._get_filename(key), os.O_RDWR | os.O_CREAT, self._mode)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            old = os.fstat(fd)
            old_size = old.st_size
            if len(data) > old.st_blocks * 512:  # more than the blocks it has
                os.posix_fallocate(fd, 0, len(data))  # disk full fails here, intact
            written = 0
            while written < len(data):
                written += os.pwrite(fd, data[written:], written)
            if len(data) < old_size:
                os.ftruncate(fd, len(data))
        finally:
            os.close(fd)  # and with it the lock
        if old_size == 0 and next(self.new_sessions) % self.sweep_every == 0:
            self.sweep()
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


def init_app(app: Flask) -> None:
    if url := setting(app, "SESSION_REDIS_URL"):
        server = Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
        app.config.update(SESSION_TYPE="redis", SESSION_REDIS=server)
    else:
        limit = int(setting(app, "SESSION_FILE_LIMIT", SESSION_FILE_LIMIT))
        files = BoundedFileStore(f"{app.config['VAR_DIR']}/sessions", limit)
        app.config.update(SESSION_TYPE="cachelib", SESSION_CACHELIB=files)
    Session(app)
    # OSError: the file store could not write (a full disk); the old version is intact.
    unavailable_when(app, (RedisError, OSError), "the session store is unavailable; retry")
