"""The app of connection_before_fork: a Redis connection and a random generator made at import.

Importing this module connects to REDIS_URL, so only the servers of that
proof import it (gunicorn or uWSGI, each in its own process); never import
it from code that serves or tests anything else.
"""

import os
import random

import redis
from flask import Flask

from examples.servers import stamp_worker

# At import: in gunicorn's master with --preload (uWSGI's, by default), before the fork.
client = redis.Redis.from_url(
    os.environ["REDIS_URL"],
    single_connection_client=True,  # connects now, and keeps this one socket
    decode_responses=True,
    socket_timeout=0.5,
)
invite_codes = random.Random()  # seeded now, from the OS

app = stamp_worker(Flask(__name__))


@app.get("/items/<key>")
def item(key: str):
    return {"key": key, "value": client.get(key)}


@app.get("/jobs/<user>/next")
def next_job(user: str):
    """Wait up to a second for the user's next job: a long poll."""
    return {"user": user, "job": client.blpop([f"jobs:{user}"], timeout=1)}


@app.get("/connection")
def connection():
    return {"id": client.client_id()}  # the server's id for this socket


@app.post("/invites")
def invite():
    return {"code": f"{invite_codes.getrandbits(64):016x}"}
