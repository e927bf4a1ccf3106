"""Session storage for fixed_session: cachelib's file store, with a bound
that holds when several worker processes write at once.

cachelib can cap its file store with `threshold`, but it keeps the file count
in a file that each process reads, adds one to and writes back: the lost
update this repository is about. Under gunicorn the count drifts (a trial with
a threshold of 200 ended with 599 files), and once over the threshold every
write reads every file to find what to delete (120 requests/s).

Here there is no count to keep. Each process, after every `sweep_every` new
sessions it has created, lists the folder and deletes the least recently
written files beyond `limit`. However fast the flood, the folder holds at most
limit + workers x sweep_every files (plus those being written).
"""

import itertools
import os
from contextlib import suppress
from typing import Any

from cachelib.file import FileSystemCache


class BoundedFileStore(FileSystemCache):
    def __init__(self, path: str, limit: int, mode: int = 0o600) -> None:
        super().__init__(path, threshold=0, mode=mode)  # 0: no count file
        self.limit = limit
        self.sweep_every = max(1, limit // 10)
        self.new_sessions = itertools.count(1)  # next() is atomic under the GIL

    def set(self, key: str, value: Any, timeout: int | None = None, mgmt_element: bool = False):
        is_new = not os.path.exists(self._get_filename(key))
        stored = super().set(key, value, timeout, mgmt_element)
        if is_new and next(self.new_sessions) % self.sweep_every == 0:
            self.sweep()
        return stored

    def sweep(self) -> None:
        """Delete the least recently written session files beyond the limit."""
        files = []
        for entry in os.scandir(self._path):
            if entry.name.endswith(self._fs_transaction_suffix):
                continue  # still being written
            with suppress(FileNotFoundError):  # another process swept it
                files.append((entry.stat().st_mtime, entry.path))
        files.sort()
        for _, path in files[: max(0, len(files) - self.limit)]:
            with suppress(FileNotFoundError):
                os.remove(path)
