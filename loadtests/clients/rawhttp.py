"""Raw HTTP/1.1 over a socket, for the bench: pre-built request bytes, and
just enough parsing to find where a response ends.

A benchmark client must not be what limits the run. Building each request
once and reading only the status line, Content-Length, Set-Cookie and
X-Worker leaves nearly all of the machine's time to the server (the hammer's
client, which records whole answers, reaches about two thirds of it: see
docs/results.md). The routes come from loadtests/clients/client.py's ROUTES, the one
place that knows them.
"""

import re
import socket
import time

from loadtests.clients.client import ROUTES
from loadtests.clients.placement import Placement

WORKER_PID = re.compile(rb"\r\nX-Worker: (\d+)-", re.IGNORECASE)
SET_COOKIE = re.compile(rb"\r\nSet-Cookie: ([^;\r]+)", re.IGNORECASE)


def request_bytes(op: str, port: int, cookie: bytes = b"") -> bytes:
    method, path, _ = ROUTES[op]
    body = b'{"article": "bench"}' if op == "add_visit" else b""
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    ).encode()
    if cookie:
        head += b"Cookie: " + cookie + b"\r\n"
    return head + b"\r\n" + body


def exchange(sock: socket.socket, payload: bytes) -> bytes:
    """Send one request and return its whole response (blocking)."""
    sock.sendall(payload)
    buffer = b""
    while (length := response_length(buffer)) is None or len(buffer) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        buffer += chunk
    return buffer[:length]


def set_cookie(response: bytes) -> bytes | None:
    """The "name=value" of the first Set-Cookie header, if any."""
    found = SET_COOKIE.search(response)
    return found.group(1) if found else None


def response_length(buffer: bytes) -> int | None:
    """Total length of the first response in buffer, once its headers are in."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    for line in buffer[:end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return end + 4 + int(value)
    return end + 4


def connect_to_worker(
    port: int, placement: Placement, attempts: int = 200
) -> tuple[socket.socket, str]:
    """A kept-alive connection to a worker process that has room for it, and
    that process's pid: every route is measured with the same placement.

    Which worker accepts a connection is a race; on a busy machine the same
    one can win it many times running, so each miss waits a little longer
    (up to 0.1 s) for the others to be scheduled. Raises RuntimeError when
    `attempts` connections all landed where there was no room."""
    for attempt in range(attempts):
        if attempt:
            time.sleep(min(0.1, 0.005 * attempt))
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pid = WORKER_PID.search(exchange(sock, request_bytes("healthz", port)))
        worker = pid.group(1).decode() if pid else ""
        if placement.claim([worker]):
            return sock, worker
        sock.close()
    raise RuntimeError(f"could not spread connections over the workers: {placement.placed}")
