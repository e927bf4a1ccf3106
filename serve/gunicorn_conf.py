"""The one gunicorn config every app runs under, production-like on purpose.

Several worker processes with several threads each: the setup a real
deployment uses, and the one that breaks broken_global and none of the fixed
apps. Always bound to 127.0.0.1. The environment may change the shape (the
correctness matrix does) but not the address:

    PORT=5000  GUNICORN_WORKERS=2  GUNICORN_THREADS=4  GUNICORN_WORKER_CLASS=gthread
"""

import os

bind = f"127.0.0.1:{int(os.environ.get('PORT', '8000'))}"
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
keepalive = 5
graceful_timeout = 5
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "warning")
accesslog = None
errorlog = "-"
