"""Raw HTTP/1.1 for the hostile-input tests: bytes out exactly as written, so
framing, encodings and sizes that no well-behaved client would send reach the
server as they are."""

import contextlib
import json
import socket
from dataclasses import dataclass
from typing import Any

TIMEOUT_SECONDS = 5.0


@dataclass
class Answer:
    status: int  # 0 when the server closed the connection without an answer
    headers: dict[str, str]  # names lower-cased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def from_app(self) -> bool:
        """Every answer of the apps carries X-Worker; gunicorn's own do not."""
        return "x-worker" in self.headers


def send(port: int, payload: bytes) -> Answer:
    """Send one request on a new connection and read the answer until the
    server closes it (the payload should say `Connection: close`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_SECONDS) as sock:
        with contextlib.suppress(OSError):  # it may answer and close before reading it all
            sock.sendall(payload)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    head, _, body = received.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/"):
        return Answer(0, {}, received)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(lines[0].split()[1]), headers, body)


def request(
    method: str,
    target: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    chunked: bool = False,
) -> bytes:
    """A request's bytes, with Connection: close and the body framed by
    Content-Length, or as one chunk."""
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        framed = (b"%x\r\n" % len(body) + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
    else:
        lines.append(f"Content-Length: {len(body)}")
        framed = body
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + framed
