"""`SSL error: decryption failed or bad record mac` after --preload: one TLS session, two workers.

A connection opened at import or in the app factory is opened, under
gunicorn's `--preload`, once in the master, and fork() copies it into every
worker: one socket, and one TLS session whose keys and record counters each
worker now advances on its own. Worker A sends a query and reads its answer;
worker B, whose copy still has the old counters, sends the next record under
a number already used. The server cannot authenticate it ("decryption failed
or bad record mac"), and sends an alert that B in turn cannot decrypt: B's
query fails with the message database drivers print (psycopg's "SSL error:
decryption failed or bad record mac"). Without TLS the same sharing hands
one worker's answer to the other (connection_before_fork.py).

    python -m gunicorn --preload --workers 2 \
        'examples.tls_connection_before_fork:create_app()'

The proof serves a line protocol over TLS (Python's ssl module, OpenSSL; a
CA and certificate from trustme) standing in for the database server, and
sends one query through A, then one through B. A run:

    made with the app:    A answered 'pong 1'; B failed: SSLError decryption
                          failed or bad record mac; the server: the same
    made in each worker:  A and B answered, on 2 connections

The fix, as for any connection: make it in each worker, after the fork (on
first use, in a pool made lazily, or in gunicorn's post_fork hook).
"""

import os
import socket
import socketserver
import ssl
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests
import trustme
from flask import Flask, request

from examples.servers import Gunicorn, at_once, stamp_worker

LABEL = "proven"
BAD_RECORD = "decryption failed or bad record mac"


def connect() -> ssl.SSLSocket:
    """A TLS connection to the server at TLS_SERVER, trusting TLS_CA."""
    host, port = os.environ["TLS_SERVER"].rsplit(":", 1)
    context = ssl.create_default_context(cafile=os.environ["TLS_CA"])
    raw = socket.create_connection((host, int(port)), timeout=5)
    return context.wrap_socket(raw, server_hostname=host)


def ask(connection: ssl.SSLSocket, line: str) -> str:
    connection.sendall(line.encode() + b"\n")
    answer = b""
    while not answer.endswith(b"\n"):
        if not (chunk := connection.recv(1024)):
            raise ConnectionError("the server closed the connection")
        answer += chunk
    return answer.decode().strip()


def add_query_route(app: Flask, connection) -> None:
    @app.get("/query")
    def query():
        try:
            return {"answer": ask(connection(), request.args["q"])}
        except (OSError, ssl.SSLError) as error:
            return {"error": type(error).__name__, "detail": str(error)}, 500


def create_app() -> Flask:
    """The connection made with the app: under --preload, in the master, before the fork."""
    app = stamp_worker(Flask(__name__))
    shared_connection = connect()
    add_query_route(app, lambda: shared_connection)
    return app


def create_app_connecting_per_worker() -> Flask:
    """The fix: the same route, the connection made on first use, in the worker."""
    per_worker = stamp_worker(Flask(__name__))
    mine: dict[int, ssl.SSLSocket] = {}

    def connection() -> ssl.SSLSocket:
        if os.getpid() not in mine:  # a fork copies the dict: the pid says whose it is
            mine.clear()
            mine[os.getpid()] = connect()
        return mine[os.getpid()]

    add_query_route(per_worker, connection)
    return per_worker


@dataclass
class TlsLineServer:
    """Answers 'pong N' to 'ping N' over TLS; remembers each connection's errors."""

    context: ssl.SSLContext
    connections: int = 0
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, raw: socket.socket) -> None:
        with self.lock:
            self.connections += 1
        try:
            with (
                self.context.wrap_socket(raw, server_side=True) as tls,
                tls.makefile("rb") as lines,
            ):
                for line in lines:
                    tls.sendall(line.replace(b"ping", b"pong"))
        except (OSError, ssl.SSLError) as error:
            with self.lock:
                self.errors.append(str(error))

    @contextmanager
    def serving(self) -> Iterator[str]:
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                outer.handle(self.request)

        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()
            thread.join()


@dataclass
class Run:
    on_a: dict  # the answer to the query sent through worker A
    on_b: dict  # and through worker B, after it
    connections: int  # what the server saw
    server_errors: list[str]


def one_query_each(target: str, options: list[str]) -> Run:
    with tempfile.TemporaryDirectory() as directory:
        ca = trustme.CA()
        ca_file = Path(directory) / "ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(context)
        line_server = TlsLineServer(context)
        with line_server.serving() as address:
            env = {"TLS_SERVER": address, "TLS_CA": str(ca_file)}
            with Gunicorn(target, workers=2, options=options, env=env) as server:
                a, b = server.worker_pids
                answers = []
                for worker, n in ((a, 1), (b, 2)):
                    with server.only(worker):
                        answers.append(requests.get(f"{server.url}/query?q=ping {n}", timeout=10))
            return Run(
                answers[0].json(),
                answers[1].json(),
                line_server.connections,
                list(line_server.errors),
            )


@dataclass
class Finding:
    made_before_fork: Run
    made_per_worker: Run

    @property
    def holds(self) -> bool:
        broken, fixed = self.made_before_fork, self.made_per_worker
        return (
            broken.connections == 1
            and broken.on_a == {"answer": "pong 1"}
            and BAD_RECORD in broken.on_b.get("detail", "")
            and any(BAD_RECORD in error for error in broken.server_errors)
            and fixed.connections == 2
            and fixed.on_a == {"answer": "pong 1"}
            and fixed.on_b == {"answer": "pong 2"}
        )

    def summary(self) -> str:
        broken, fixed = self.made_before_fork, self.made_per_worker
        b = broken.on_b
        failed = f"failed: {b['error']} {b['detail']}" if "error" in b else f"answered {b}"
        return (
            f"--preload, 2 workers, a TLS connection made with the app: {broken.connections} "
            f"connection; A answered {broken.on_a.get('answer')!r}; B {failed}; the server: "
            f"{'; '.join(broken.server_errors) or 'no error'}; made in each worker: "
            f"{fixed.connections} connections, A {fixed.on_a.get('answer')!r}, "
            f"B {fixed.on_b.get('answer')!r}"
        )


def prove() -> Finding:
    this = "examples.tls_connection_before_fork"
    made_before_fork, made_per_worker = at_once(
        lambda: one_query_each(f"{this}:create_app()", ["--preload"]),
        lambda: one_query_each(f"{this}:create_app_connecting_per_worker()", []),
    )
    return Finding(made_before_fork, made_per_worker)
