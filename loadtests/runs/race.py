"""`make race`: race the apps yourself, from a page on 127.0.0.1.

The page asks for an app (or all of them, side by side), a route (increment,
add a visit, greet) and how many requests to send at once; on Race, this
server sends them from its own threads, each on a connection opened before
and all released by one barrier (a browser would queue them behind its six
connections per host). It answers with each request's answer, the checker's
verdict on that race and its timeline (render.py), which the page shows.

    python -m loadtests.runs.race                 # every app, page on :8090
    python -m loadtests.runs.race broken_global --port 8091

The apps run under the shared gunicorn config, each in a data folder of its
own deleted on exit; Ctrl-C stops every server it started, by PID.
"""

import argparse
import json
import secrets
import sys
import threading
from collections import Counter
from contextlib import ExitStack
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

from loadtests.clients.client import Client
from loadtests.clients.transport import KeepAliveSession
from loadtests.judge.checker import check
from loadtests.judge.history import Event, answer
from loadtests.timeline.render import render, worker_lane
from registry import APPS
from serve.pids import join_all, port_in_use_message, port_is_free
from serve.processes import AppServer, available_apps, free_port, launcher

# The routes a learner can race: what each racer sends.
ROUTES = {
    "increment": lambda client: client.increment(),
    "add a visit": lambda client: client.add_visit(f"{client.user}/race"),
    "greet": lambda client: client.greet(client.user),
}
CONCURRENCY = (2, 10, 50)
DEFAULT_PORT = 8090
PAGE = Path(__file__).with_name("race.html")


def race(url: str, route: str, racers: int) -> list[Event]:
    """`racers` users each send one request of `route`, released together."""
    tag = secrets.token_hex(2)
    clients = [Client(url, f"r{n:02d}-{tag}", http=KeepAliveSession()) for n in range(racers)]
    together = threading.Barrier(racers)
    history: list[Event] = []  # list.append is atomic

    def racer(client: Client) -> None:
        try:
            client.healthz()  # the connection is open before the start
            together.wait()
            history.append(ROUTES[route](client))
        finally:
            client.close()

    threads = [threading.Thread(target=racer, args=(c,), daemon=True) for c in clients]
    for thread in threads:
        thread.start()
    join_all(threads)
    return sorted(history, key=lambda e: e.start)


def result(app: str, history: list[Event]) -> dict[str, Any]:
    """What the page shows of one app's race."""
    verdict = check(history)
    values = Counter(repr(e.value) for e in history if e.ok and e.op == "increment")
    return {
        "app": app,
        "verdict": "; ".join(f"{a.kind}: {a.summary}" for a in verdict.examples)
        or (
            f"no anomaly in {len(history)} requests"
            if verdict.counter_served
            else f"{app} does not serve the shared counter (501): nothing to judge"
        ),
        "anomalies": len(verdict.examples),
        "answers": [
            {
                "user": e.user,
                "answer": answer(e),
                "worker": worker_lane(e.worker)[2],
                "ms": round((e.end - e.start) * 1000, 1),
                "duplicate": values[repr(e.value)] > 1 if e.op == "increment" and e.ok else False,
            }
            for e in history
        ],
        "timeline": render(f"{app}: {len(history)} x {history[0].op} at once", history, verdict),
    }


class Handler(BaseHTTPRequestHandler):
    servers: ClassVar[dict[str, AppServer]] = {}  # app -> its running server

    def send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def json(self, status: int, payload: dict[str, Any]) -> None:
        self.send(status, json.dumps(payload).encode(), "application/json")

    def do_GET(self) -> None:
        if self.path != "/":
            return self.json(HTTPStatus.NOT_FOUND, {"error": "only / is here"})
        page = PAGE.read_text().replace("{{apps}}", json.dumps(list(self.servers)))
        self.send(HTTPStatus.OK, page.encode(), "text/html; charset=utf-8")

    def do_POST(self) -> None:
        try:
            asked = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            apps = list(self.servers) if asked["app"] == "all" else [asked["app"]]
            route, racers = asked["route"], int(asked["concurrency"])
            if self.path != "/race" or route not in ROUTES or racers not in CONCURRENCY:
                raise ValueError
            servers = [self.servers[app] for app in apps]
        except (ValueError, KeyError, TypeError):
            choices = f"app: {', '.join(self.servers)} or all; route: {', '.join(ROUTES)}"
            error = f"POST /race with JSON {{app, route, concurrency}}; {choices}; "
            error += f"concurrency: {', '.join(map(str, CONCURRENCY))}"
            return self.json(HTTPStatus.BAD_REQUEST, {"error": error})
        results = [result(s.app, race(s.url, route, racers)) for s in servers]
        self.json(HTTPStatus.OK, {"results": results})

    def log_message(self, *_args: Any) -> None:  # the console shows the servers' lines only
        pass


@launcher
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.runs.race", description=__doc__.split("\n")[0]
    )
    parser.add_argument("apps", nargs="*", metavar="APP", help=" | ".join(APPS) + " (default: all)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="the page's port")
    args = parser.parse_args(argv)
    apps = args.apps or available_apps()
    if unknown := [a for a in apps if a not in available_apps()]:
        parser.error(f"no such app in this checkout: {unknown[0]}")
    if not port_is_free(args.port):
        elsewhere = f"choose another: python -m loadtests.runs.race --port {free_port()}"
        raise RuntimeError(port_in_use_message(args.port, "the race page", elsewhere))
    with ExitStack() as running:
        page = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
        running.callback(page.server_close)
        for app in apps:
            server = running.enter_context(AppServer(app, free_port(), own_folder="race"))
            Handler.servers[app] = server
            print(f"{app} on {server.url}, gunicorn pid {server.process.pid}", flush=True)
        print(f"race page: http://127.0.0.1:{args.port}/  (Ctrl-C stops it all)", flush=True)
        page.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
