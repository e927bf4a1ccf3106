"""uWSGI, the other common WSGI server: the command AppServer runs for a uWSGI shape.

    uwsgi --http-socket 127.0.0.1:PORT --master --processes 2 --threads 4 \\
          --module 'fixed_db.app:create_app()' --need-app --die-on-term ...

uWSGI calls the factory itself (`--module 'pkg.app:create_app()'`, the target
gunicorn is given). Where its defaults differ from gunicorn's, each option
here makes it behave as the shared gunicorn config does, or shows the
difference on purpose: it loads the app in the master before the fork;
--threads; --die-on-term, so that SIGTERM stops it rather than reloading it;
`Connection: close` on every response of --http-socket; --need-app, so an
app that fails to load stops it. Why each, in serve/README.md ("uWSGI").

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
