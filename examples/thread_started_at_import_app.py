"""The app of thread_started_at_import: a background thread started at import.

Importing this module starts the thread, so only the servers of that proof
import it (gunicorn, in its own process); never import it from code that
serves or tests anything else.
"""

import os
import threading
import time

from flask import Flask

from examples.servers import stamp_worker

TICK_SECONDS = 0.05

ticks: list[float] = []


def produce() -> None:
    while True:
        ticks.append(time.monotonic())  # standing in for polling a feed, refreshing a cache...
        time.sleep(TICK_SECONDS)


# At import: in gunicorn's master with --preload, in each worker without.
producer = threading.Thread(target=produce, name="producer", daemon=True)
producer.start()

app = stamp_worker(Flask(__name__))


@app.get("/ticks")
def count_ticks():
    return {"ticks": len(ticks), "producer": os.getpid() if producer.is_alive() else None}
