"""The one gunicorn config every app runs under, production-like on purpose.

Several worker processes with several threads each: the setup a real
deployment uses, and the one that breaks broken_global and none of the fixed
apps. Always bound to 127.0.0.1. The environment may change the shape (the
correctness matrix does) but not the address:

    PORT=5000  GUNICORN_WORKERS=2  GUNICORN_THREADS=4  GUNICORN_WORKER_CLASS=gthread
"""

import os

# The shape when the environment does not set it; serve/processes.py reads these too.
DEFAULTS = {"GUNICORN_WORKERS": "2", "GUNICORN_THREADS": "4", "GUNICORN_WORKER_CLASS": "gthread"}


def setting(name: str) -> str:
    return os.environ.get(name) or DEFAULTS[name]


bind = f"127.0.0.1:{int(os.environ.get('PORT', '8000'))}"
workers = int(setting("GUNICORN_WORKERS"))
threads = int(setting("GUNICORN_THREADS"))
worker_class = setting("GUNICORN_WORKER_CLASS")
keepalive = 5
graceful_timeout = 5
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "warning")
accesslog = None
errorlog = "-"
