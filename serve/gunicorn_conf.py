"""The one gunicorn config every app runs under, production-like on purpose.

Several worker processes with several threads each: the setup a real
deployment uses, and the one that breaks broken_global and none of the fixed
apps. Always bound to 127.0.0.1. The environment may change the shape (the
correctness matrix does) but not the address:

    PORT=5000  GUNICORN_WORKERS=2  GUNICORN_THREADS=4  GUNICORN_WORKER_CLASS=gthread
    GUNICORN_WORKER_CONNECTIONS=1000   (gevent: greenlets per worker, its default)
"""

import os
import sys

# The shape when the environment does not set it; serve/processes.py reads these too.
# The settings table's defaults (plumbing/config.py SETTINGS), spelled here so
# that gunicorn loads this file alone, without the apps' package; tests/test_config.py
# fails if the two differ.
DEFAULTS = {"GUNICORN_WORKERS": "2", "GUNICORN_THREADS": "4", "GUNICORN_WORKER_CLASS": "gthread"}
DEFAULTS |= {"GUNICORN_WORKER_CONNECTIONS": "1000", "GUNICORN_LOGLEVEL": "warning"}


def setting(name: str) -> str:
    return os.environ.get(name) or DEFAULTS[name]


def count(name: str) -> int:
    """A setting that counts something, 1 or more. Else an error in one line
    and exit code 2, as for a wrong argument: read when a launcher imports
    this file (serve/processes.py) as when gunicorn does, before any start."""
    value = setting(name)
    if not (value.isdigit() and int(value) >= 1):
        print(f"error: {name} must be a whole number, 1 or more; got {value!r}", file=sys.stderr)
        raise SystemExit(2)
    return int(value)


bind = f"127.0.0.1:{int(os.environ.get('PORT', '8000'))}"
workers = count("GUNICORN_WORKERS")
threads = count("GUNICORN_THREADS")
worker_class = setting("GUNICORN_WORKER_CLASS")
worker_connections = count("GUNICORN_WORKER_CONNECTIONS")
# How long an idle kept-alive connection stays open, in seconds. Longer than
# any client of these apps keeps one idle, so the client always gives it up
# first: a server that closes an idle connection races the client reusing it,
# and a request sent into a closing connection gets no answer, its outcome
# unknown (16 "no answer" in a 3-minute Locust run with gunicorn's default 5,
# always eight tabs' connections idle for the same time). The clients:
# Chromium reuses an idle connection for up to 300 s (g_used_idle_socket_timeout_s
# in net/socket/client_socket_pool.cc); Caddy in front (serve/balancer.py)
# keeps idle upstream connections 2 minutes (its reverse proxy's default
# IdleConnTimeout, modules/caddyhttp/reverseproxy/reverseproxy.go); Locust's
# requests and the hammer's http.client set no limit and check that a
# connection is still open before they reuse it. gunicorn's docs advise a
# keepalive above the idle timeout of whatever sits in front of it. An idle
# connection costs gthread a socket in its poller, not a thread.
keepalive = 310
graceful_timeout = 5
loglevel = setting("GUNICORN_LOGLEVEL")
accesslog = None
errorlog = "-"
# gunicorn 25.1 and later open a control socket for gunicornc at
# ~/.gunicorn/gunicorn.ctl by default: one path for every gunicorn of the
# account, so each app started here would replace the last one's (and a
# user's own gunicorn's), and the folder would stay behind in their home.
# Earlier versions ignore the name.
control_socket_disable = True


def on_starting(server) -> None:
    """In the master, once, before it forks: import Flask, so that each
    worker starts with it rather than importing it again. The app itself is
    still imported by each worker after the fork (no preload_app), so its
    globals, connections and threads stay each worker's own, as the lessons
    need. Only for the worker classes that patch nothing: gevent's must
    patch the standard library before Flask imports it."""
    if server.cfg.worker_class_str in ("sync", "gthread"):
        import flask  # noqa: F401
