"""uWSGI, the other common WSGI server: the command AppServer runs for a uWSGI shape.

    uwsgi --http-socket 127.0.0.1:PORT --master --processes 2 --threads 4 \\
          --module 'fixed_db.app:create_app()' --need-app --die-on-term ...

uWSGI 2.0.31 calls the factory itself: `--module 'pkg.app:create_app()'`,
the same target gunicorn is given. Where its defaults differ from gunicorn's,
and what each decides here:

- It loads the app once, in the master, then forks the workers (gunicorn
  does that only with --preload; uWSGI's --lazy-apps is the opposite).
  Whatever create_app() makes is made once and copied into every worker: a
  connection made there would be one socket shared by all of them
  (examples/uwsgi_loads_before_fork.py). The fixed apps make their pools on
  first use in each process, checking the PID, so they pass; the globals of
  broken_global are copied at the fork, each worker then has its own.
- A worker runs one request at a time unless given --threads. Python threads
  are on in 2.0.31 without --enable-threads (its --help calls the option a
  stub), which older releases needed; it is given all the same.
- SIGTERM makes uWSGI 2.0 reload, not stop. --die-on-term makes it stop, as
  AppServer.stop() (SIGTERM by PID) and the parent-death signal that spawn()
  sets (SIGTERM, serve/pids.py) both mean.
- --http-socket answers HTTP/1.1 and then closes the connection without
  saying so; a client that reuses it sends its next request into a closed
  socket. `Connection: close` on every response says so. (--http11-socket
  keeps connections, but an idle one holds a worker's thread until the
  socket timeout, 4 s by default: tried once by hand, with both threads of a
  1 x 2 server holding an idle connection, a third request waited 4.0 s.)
- An app that fails to load leaves uWSGI serving nothing, and answering 500;
  --need-app makes it exit, as gunicorn does, so AppServer reports the log.

Its log (start-up and errors; request lines are off, as gunicorn's access log
is) goes to stderr, which AppServer sends to the app's log file.
"""

import sys
from dataclasses import dataclass
from pathlib import Path

from plumbing.config import REPO_ROOT


@dataclass(frozen=True)
class UwsgiShape:
    """How many worker processes, and threads in each."""

    processes: int
    threads: int

    def describe(self) -> str:
        return f"uWSGI {self.processes} processes x {self.threads} threads, app loaded before fork"


def binary() -> Path:
    """The venv's uwsgi, built from source by pip (a C compiler and Python's headers)."""
    return Path(sys.executable).with_name("uwsgi")


def available() -> bool:
    return binary().is_file()


def missing_message() -> str:
    return (
        f"uWSGI is not installed ({binary()} is missing): "
        ".venv/bin/pip install uwsgi (it builds from source)"
    )


def uwsgi_command(app: str, port: int, shape: UwsgiShape) -> list[str]:
    """The command line that serves `app` on 127.0.0.1:port in this shape."""
    return command(f"{app}.app:create_app()", port, shape.processes, shape.threads)


def command(target: str, port: int, processes: int, threads: int = 1) -> list[str]:
    """uWSGI serving `target` ("module:callable", or "module:factory()") on
    127.0.0.1:port: a master and `processes` workers, `threads` threads each
    (uWSGI runs one unless told). Also what examples/servers.py runs."""
    threaded = ["--threads", str(threads), "--enable-threads"] if threads > 1 else []
    return [
        str(binary()),
        "--http-socket", f"127.0.0.1:{port}",
        "--add-header", "Connection: close",
        "--module", target,
        "--pythonpath", str(REPO_ROOT),
        "--home", sys.prefix,  # the venv: its site-packages
        "--master",
        "--processes", str(processes),
        *threaded,
        "--need-app",
        "--die-on-term",
        "--disable-logging",
    ]  # fmt: skip
