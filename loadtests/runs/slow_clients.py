"""Slow clients against gunicorn alone, then against gunicorn behind Caddy.

    python -m loadtests.runs.slow_clients [APP]

A client that sends half a request and then nothing holds one of gunicorn's
threads while it waits for the rest: a dozen such clients stall the shared
config's 8 threads for everyone (gunicorn's docs: deploy it behind a
buffering proxy). Caddy (serve/balancer.py) reads request headers in a
goroutine of its own, so the same dozen cost it nothing. This opens SOCKETS
half-sent requests against each front, then asks /healthz ATTEMPTS times
through it, one at a time, and prints a row per front. Which of gunicorn's
workers accepts each slow client is a race (tests/test_balancer.py).
Bounded: each attempt waits TIMEOUT_SECONDS at most.
"""

import argparse
import socket
import statistics
import sys
import time
import urllib.request
from contextlib import ExitStack

from loadtests.runs import report
from registry import APPS
from serve.balancer import Balancer
from serve.processes import AppServer, free_port, launcher

DEFAULT_SOCKETS = 12
DEFAULT_ATTEMPTS = 10
TIMEOUT_SECONDS = 2.0
HALF_A_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Still-Typing: "


def open_slow_clients(port: int, count: int) -> list[socket.socket]:
    """Connections that sent the start of a request's headers, and nothing more."""
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(HALF_A_REQUEST)
        sockets.append(sock)
    time.sleep(0.3)  # gunicorn hands each to a thread as it becomes readable
    return sockets


def ask_healthz(url: str, attempts: int) -> list[float | None]:
    """Seconds each /healthz took, or None when it timed out."""
    took: list[float | None] = []
    for _ in range(attempts):
        began = time.monotonic()
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=TIMEOUT_SECONDS) as answer:
                answer.read()
            took.append(time.monotonic() - began)
        except OSError:
            took.append(None)
    return took


def row(front: str, took: list[float | None]) -> dict[str, str]:
    answered = sorted(t * 1000 for t in took if t is not None)
    return {
        "front": front,
        "answered": str(len(answered)),
        "timed_out": str(len(took) - len(answered)),
        "p50_ms": f"{statistics.median(answered):.2f}" if answered else "n/a",
        "max_ms": f"{answered[-1]:.2f}" if answered else "n/a",
    }


COLUMNS = (
    ("front", "front"),
    ("answered", "answered"),
    ("timed_out", "timed out"),
    ("p50_ms", "p50 ms"),
    ("max_ms", "max ms"),
)


def compare(app: str, sockets: int, attempts: int, env: dict[str, str] | None = None) -> list:
    """Slow clients at gunicorn's own port, then at Caddy's: the table rows."""
    with ExitStack() as running:
        # Data in a folder of its own (never what `make run` serves), Caddy's too.
        server = running.enter_context(AppServer(app, free_port(), env=env, own_folder="slow"))
        proxy = running.enter_context(Balancer([server.url], server.var_dir / "caddy"))
        print(
            f"{app} ({server.shape()}), {sockets} slow clients, {attempts} /healthz each",
            flush=True,
        )
        rows = []
        for front, url in (("gunicorn alone", server.url), ("Caddy in front", proxy.url)):
            slow = open_slow_clients(int(url.rpartition(":")[2]), sockets)
            try:
                rows.append(row(front, ask_healthz(url, attempts)))
            finally:
                for sock in slow:
                    sock.close()
            time.sleep(0.5)  # gunicorn's threads give up the closed connections
    return rows


@launcher  # a server that did not start: an error, exit code 2
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.runs.slow_clients", description=__doc__.split("\n")[0]
    )
    parser.add_argument("app", nargs="?", default="broken_global", choices=list(APPS))
    parser.add_argument("--sockets", type=int, default=DEFAULT_SOCKETS)
    parser.add_argument("--attempts", type=int, default=DEFAULT_ATTEMPTS)
    args = parser.parse_args(argv)
    print(report.format_table(compare(args.app, args.sockets, args.attempts), COLUMNS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
