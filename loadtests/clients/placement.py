"""Spreading kept-alive connections evenly over an app's worker processes.

Used by the hammer and the bench, so that every run and every route is
measured with the same placement, whatever the accept race decides.
"""

import threading
import time
from collections import Counter

from loadtests.clients.client import Client


class Placement:
    """Spreads the users' kept-alive connections evenly over worker processes.

    gunicorn's workers race to accept connections, and a kept-alive connection
    stays with the worker that won it: left to chance, on a busy machine all
    of a run's connections can land on one process, and a run meant to show
    several processes would show one. A load balancer spreads connections;
    so does this. Each user, before the run, keeps its connection only if the
    process that answered has fewer than its share, else it reconnects."""

    def __init__(self, users: int, workers: int) -> None:
        self.share = -(-users // workers)  # ceiling division
        self.placed: Counter[str] = Counter()
        self.lock = threading.Lock()

    def claim(self, pids: list[str]) -> bool:
        """Take a place on each of these processes if every one has room."""
        with self.lock:
            if all(self.placed[pid] < self.share for pid in pids):
                self.placed.update(pids)
                return True
        return False

    def release(self, pid: str) -> None:
        with self.lock:
            self.placed[pid] -= 1

    def settle(self, client: Client, instances: int, attempts: int = 200) -> None:
        """Connect the client (its http a KeepAliveSession) to a process with
        room on each of its first `instances` base URLs, up to `attempts` tries.

        Each instance is settled on its own: a connection that landed on a
        process with room is kept, and only the others are opened again. A try
        that needed room on every instance at once would need every instance's
        accept race won in the same try: on a busy 2-core machine (make test)
        the last of 12 users on 3 instances took 76 tries, 7.2 s, mostly the
        waits between them, while the other users waited at the run's start."""
        unsettled = list(client.base_urls[:instances])
        for attempt in range(attempts):
            if attempt:  # on a busy machine one process can win the accept race many times
                time.sleep(min(0.1, 0.005 * attempt))
            for url in list(unsettled):
                if self.claim([client.healthz(url).pid]):
                    unsettled.remove(url)
                else:
                    client.http.close_connection(url)  # a new one, which another process may take
            if not unsettled:
                return
