"""A kept-alive HTTP/1.1 connection that speaks just enough of requests' API.

The hammer's users are threads sharing two cores with the server they test.
A requests.Session costs so much CPU per request that the client, not the
server, sets the pace: on this project's 2-core machine, 16 threads with
requests reached 0.23x of what wrk drove against the same /healthz, and the
same threads over the standard library's http.client 0.64x. This module wraps
http.client in the small part of requests.Session that loadtests/clients/client.py
uses: request(), cookies, close().

It also tells the client what a failure means for a write. A connection that
could not be opened sent nothing (NotSent: the write was not applied); once
the first byte may have left, a failure leaves the outcome unknown.
"""

import http.client
import json as jsonlib
import select
from dataclasses import dataclass
from email.message import Message
from typing import Any
from urllib.parse import urlencode, urlsplit

# What a dropped or refused connection raises here; callers catch these.
TRANSPORT_ERRORS = (OSError, http.client.HTTPException)


class NotSent(ConnectionError):
    """The connection could not be opened: not one byte of the request left."""


@dataclass
class Response:
    status_code: int
    reason: str
    headers: Message
    content: bytes

    def json(self) -> Any:
        return jsonlib.loads(self.content)


class KeepAliveSession:
    """A kept-alive connection per server, reused for every request, and one
    cookie jar for all of them (cookies do not tell ports apart, nor does a
    browser's jar)."""

    def __init__(self) -> None:
        self.cookies: dict[str, str] = {}
        self.connections: dict[tuple[str, int], http.client.HTTPConnection] = {}

    def request(
        self,
        method: str,
        url: str,
        *,
        timeout: float,
        json: Any = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        parts = urlsplit(url)
        target = parts.path + (f"?{urlencode(params)}" if params else "")
        headers, body = dict(headers or {}), None
        if json is not None:
            body = jsonlib.dumps(json).encode()
            headers["Content-Type"] = "application/json"
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        server = (parts.hostname, parts.port)
        connection = self._connection(server, timeout)
        if connection.sock is None:
            try:
                connection.connect()
            except TRANSPORT_ERRORS as error:
                self.connections.pop(server).close()
                raise NotSent(f"could not connect: {error}") from error
        try:
            connection.request(method, target, body=body, headers=headers)
            answer = connection.getresponse()
            content = answer.read()
        except TRANSPORT_ERRORS:
            self.connections.pop(server).close()  # never reuse one in an unknown state
            raise
        for cookie in answer.headers.get_all("Set-Cookie") or []:
            name, _, rest = cookie.partition("=")
            self.cookies[name.strip()] = rest.split(";", 1)[0]
        return Response(answer.status, answer.reason, answer.headers, content)

    def _connection(self, server: tuple[str, int], timeout: float) -> http.client.HTTPConnection:
        # A kept-alive socket that is readable while idle has been closed by
        # the server (its keep-alive timeout): open a new one rather than
        # send a request into it and lose it.
        connection = self.connections.get(server)
        if connection and connection.sock and select.select([connection.sock], [], [], 0)[0]:
            connection.close()
            connection = None
        if connection is None:
            connection = http.client.HTTPConnection(*server, timeout=timeout)
            self.connections[server] = connection
        return connection

    def close_connection(self, url: str) -> None:
        """Close the connection to url's server, if one is open; the next
        request there opens a new one. The others stay open."""
        parts = urlsplit(url)
        if connection := self.connections.pop((parts.hostname, parts.port), None):
            connection.close()

    def close(self) -> None:
        # A copy: a thread may still be opening one, in a run that a Ctrl-C ended.
        for connection in list(self.connections.values()):
            connection.close()
        self.connections.clear()
