"""Throughput and latency of one route against the same app's /healthz ceiling.

Correctness runs need a recorded history; a benchmark needs a client that is
not the bottleneck. This one keeps CONNECTIONS sockets alive in one selectors
loop per client process, writes pre-built request bytes and parses only the
status line and Content-Length, so nearly all of the machine's time goes to
the server. The routes take turns in ROUNDS short slices, so that a machine
whose speed drifts during the run (shared machines do) slows them alike;
compare the ratio, not the absolute numbers. The CPU time each request cost
the server's processes, read from /proc around every slice, says where the
time went; on a machine where client, app and store share the cores, no
route can beat its CPU per request.

    $ python -m loadtests.bench fixed_cache              # 2026-11-21, 2 cores
    fixed_cache (gunicorn gthread 2 workers x 4 threads, 16 connections, ...)
    route                        req/s   p50 ms   p99 ms  failed  vs /healthz  app us  store us
    GET /healthz                  6631     1.96     6.84       0       1.00x     251         1
    POST /counter/increment       4756     3.04     7.62       0       0.72x     329        21
    app us, store us: CPU time per request, in the app's processes and its store's
"""

import argparse
import multiprocessing
import re
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from loadtests import report
from loadtests.client import ROUTES
from loadtests.hammer import Placement, measure_ceiling
from plumbing.config import var_dir
from serve.pids import cpu_seconds
from serve.processes import APPS, AppServer, available_apps, free_port

DEFAULT_CONNECTIONS = 16
DEFAULT_SECONDS = 6.0
DEFAULT_ROUNDS = 6
DEFAULT_PROCESSES = 1
WORKER_PID = re.compile(rb"\r\nX-Worker: (\d+)-", re.IGNORECASE)
SET_COOKIE = re.compile(rb"\r\nSet-Cookie: ([^;\r]+)", re.IGNORECASE)


APPENDS_PER_USER = 50  # POST /visits: each connection is a new user this often
VISITS_TO_READ = 10  # GET /visits: each connection reads a user with this many


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


@dataclass
class Result:
    completed: int
    failed: int
    seconds: float
    latencies_ms: list[float]
    cpu_seconds: dict[str, float] | None = None  # by server process group, where known

    @property
    def rate(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0

    def percentile(self, p: int) -> float:
        if len(self.latencies_ms) < 2:
            return self.latencies_ms[0] if self.latencies_ms else 0.0
        return statistics.quantiles(self.latencies_ms, n=100)[p - 1]


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
    port: int, placement: Placement, attempts: int = 50
) -> tuple[socket.socket, str]:
    """A kept-alive connection to a worker process that has room for it, and
    that process's pid: every route is measured with the same placement."""
    for _ in range(attempts):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pid = WORKER_PID.search(exchange(sock, request_bytes("healthz", port)))
        worker = pid.group(1).decode() if pid else ""
        if placement.claim([worker]):
            return sock, worker
        sock.close()
    raise RuntimeError(f"could not spread connections over the workers: {placement.placed}")


def drive(port: int, op: str, connections: int, seconds: float, workers: int) -> Result:
    """Keep `connections` requests in flight for `seconds`; one process."""
    selector = selectors.DefaultSelector()
    latencies: list[float] = []
    failed = 0
    placement = Placement(connections, workers)
    anonymous = request_bytes(op, port)

    def open_connection() -> None:
        sock, worker = connect_to_worker(port, placement)
        state = {"buffer": b"", "payload": anonymous, "done": 0, "worker": worker}
        if op == "list_visits":  # a user with some visits to read
            cookie = b""
            for _ in range(VISITS_TO_READ):
                response = exchange(sock, request_bytes("add_visit", port, cookie))
                cookie = set_cookie(response) or cookie
            if not cookie:
                raise RuntimeError(f"no user cookie in: {response[:200]!r}")
            state["payload"] = request_bytes(op, port, cookie)
        selector.register(sock, selectors.EVENT_READ, state)
        state["sent"] = time.perf_counter()
        sock.sendall(state["payload"])

    for _ in range(connections):
        open_connection()
    began = time.perf_counter()
    deadline = began + seconds
    while time.perf_counter() < deadline:
        for key, _ in selector.select(timeout=1.0):
            sock, state = key.fileobj, key.data
            chunk = sock.recv(65536)
            if not chunk:  # the server closed a kept-alive connection
                selector.unregister(sock)
                sock.close()
                failed += 1
                placement.release(state["worker"])  # its replacement takes the place
                open_connection()
                continue
            state["buffer"] += chunk
            while (length := response_length(state["buffer"])) and len(state["buffer"]) >= length:
                now = time.perf_counter()
                response, state["buffer"] = state["buffer"][:length], state["buffer"][length:]
                if not response.startswith(b"HTTP/1.1 2"):
                    failed += 1
                else:
                    latencies.append((now - state["sent"]) * 1000)
                if op == "add_visit":  # the same user, until it is time for a new one
                    state["done"] += 1
                    cookie = set_cookie(response)
                    if state["done"] % APPENDS_PER_USER == 0:
                        state["payload"] = anonymous
                    elif cookie:
                        state["payload"] = request_bytes(op, port, cookie)
                state["sent"] = now
                sock.sendall(state["payload"])
    elapsed = time.perf_counter() - began
    for key in list(selector.get_map().values()):
        key.fileobj.close()
    return Result(len(latencies), failed, elapsed, latencies)


def _drive_args(args: tuple) -> Result:
    return drive(*args)


def measure(
    port: int, op: str, connections: int, seconds: float, processes: int, workers: int
) -> Result:
    if processes == 1:
        return drive(port, op, connections, seconds, workers)
    share = [(port, op, max(1, connections // processes), seconds, workers)] * processes
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        parts = pool.map(_drive_args, share)
    # Client processes ran side by side: their counts add up over one span.
    return Result(
        sum(p.completed for p in parts),
        sum(p.failed for p in parts),
        max(p.seconds for p in parts),
        [ms for p in parts for ms in p.latencies_ms],
    )


def combine(slices: list[Result]) -> Result:
    """Slices of one route, run one after another: their times add up."""
    cpu = None
    if all(r.cpu_seconds is not None for r in slices):
        cpu = {group: sum(r.cpu_seconds[group] for r in slices) for group in slices[0].cpu_seconds}
    return Result(
        sum(r.completed for r in slices),
        sum(r.failed for r in slices),
        sum(r.seconds for r in slices),
        [ms for r in slices for ms in r.latencies_ms],
        cpu,
    )


def server_processes(server: AppServer) -> dict[str, list[int]]:
    """The processes that serve a request: the app's, and its store's if we run it."""
    groups = {"app": sorted({server.process.pid, *server.worker_pids})}  # flask run: one
    if server.backing:
        groups["store"] = [server.backing.process.pid]
    return groups


def cpu_used(groups: dict[str, list[int]]) -> dict[str, float] | None:
    """CPU seconds used so far by each group; None if any is unknown (no /proc)."""
    used = {}
    for group, pids in groups.items():
        times = [cpu_seconds(pid) for pid in pids]
        if None in times:
            return None
        used[group] = sum(times)
    return used


def cpu_spent(
    before: dict[str, float] | None, after: dict[str, float] | None
) -> dict[str, float] | None:
    if before is None or after is None:
        return None
    return {group: after[group] - before[group] for group in before}


def cpu_per_request(result: Result, group: str) -> float | None:
    """Microseconds of CPU per completed request, spent in one process group."""
    if not result.cpu_seconds or group not in result.cpu_seconds or not result.completed:
        return None
    return result.cpu_seconds[group] / result.completed * 1e6


MAIN_WRITE = {
    "broken_global": "increment",
    "fixed_session": "add_visit",  # it has no counter (501)
    "fixed_db": "increment",
    "fixed_cache": "increment",
}


def wrk_rate(url: str, connections: int, seconds: float) -> float | None:
    """wrk's req/s on a URL, for comparison, if wrk is installed. wrk cannot
    spread its connections over gunicorn's workers as this bench does; where
    they land is luck, so it runs twice and its better run counts."""
    if not shutil.which("wrk"):
        return None
    threads = min(2, connections)
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds / 2))}s", url]
    rates = []
    for _ in range(2):
        output = subprocess.run(cmd, capture_output=True, text=True).stdout
        if found := re.search(r"Requests/sec:\s+([\d.]+)", output):
            rates.append(float(found.group(1)))
    return max(rates, default=None)


def bench_app(app: str, ops: list[str], args: argparse.Namespace) -> list[dict]:
    """Each route of one app, in interleaved turns, against GET /healthz."""
    # WORK_MS=0: measure what the state costs, not the stand-in for a query.
    with AppServer(app, free_port(), env={"WORK_MS": "0"}) as server:
        print(
            f"\n{app} ({server.shape()}, {args.connections} connections, "
            f"{args.processes} client process(es), {args.seconds:g} s per route "
            f"in {args.rounds} turns)",
            flush=True,
        )
        workers = server.workers()
        groups = server_processes(server)  # whose CPU time each request costs
        slices: dict[str, list[Result]] = {op: [] for op in ["healthz", *ops]}
        for _ in range(args.rounds):
            for op in slices:
                share = args.seconds / args.rounds
                before = cpu_used(groups)
                result = measure(server.port, op, args.connections, share, args.processes, workers)
                result.cpu_seconds = cpu_spent(before, cpu_used(groups))
                slices[op].append(result)
        wrk = hammer = None
        if args.wrk and (wrk := wrk_rate(server.url + "/healthz", args.connections, args.seconds)):
            # The hammer's own client (threads, one kept-alive connection each) on
            # the same route with as many connections: it must not limit a run.
            hammer = measure_ceiling(server.url, args.connections, 400, workers)

    rows, ceiling = [], combine(slices["healthz"]).rate
    print(
        f"{'route':<26}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'failed':>8}  vs /healthz"
        f"{'app us':>8}{'store us':>10}"
    )
    for op, parts in slices.items():
        result = combine(parts)
        method, path, _ = ROUTES[op]
        rows.append(
            {
                "app": app,
                "route": f"{method} {path}",
                "req_per_s": round(result.rate),
                "p50_ms": round(result.percentile(50), 2),
                "p99_ms": round(result.percentile(99), 2),
                "failed": result.failed,
                "vs_healthz": round(result.rate / ceiling, 2),
                "app_cpu_us": rounded(cpu_per_request(result, "app")),
                "store_cpu_us": rounded(cpu_per_request(result, "store")),
            }
        )
        r = rows[-1]
        print(
            f"{r['route']:<26}{r['req_per_s']:>8}{r['p50_ms']:>9.2f}{r['p99_ms']:>9.2f}"
            f"{r['failed']:>8}  {r['vs_healthz']:>9.2f}x"
            f"{blank_if_none(r['app_cpu_us']):>8}{blank_if_none(r['store_cpu_us']):>10}",
            flush=True,
        )
    if any(r["app_cpu_us"] is not None for r in rows):
        print("app us, store us: CPU time per request, in the app's processes and its store's")
    if wrk:
        print(f"{'GET /healthz, wrk':<26}{wrk:>8.0f}   this bench: {ceiling / wrk:.2f}x of wrk")
        print(
            f"{'GET /healthz, hammer':<26}{hammer:>8.0f}   the hammer: {hammer / wrk:.2f}x of wrk"
        )
        for name, rate in (("wrk", wrk), ("hammer", hammer)):
            rows.append({**rows[0], "route": f"GET /healthz ({name})", "req_per_s": round(rate)})
    return rows


def rounded(value: float | None) -> int | None:
    return None if value is None else round(value)


def blank_if_none(value: int | None) -> str:
    return "" if value is None else str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("apps", nargs="*", metavar="APP", help=" | ".join(APPS) + " (default: all)")
    parser.add_argument(
        "--op",
        action="append",
        choices=list(ROUTES),
        help="route(s) to measure (default: the app's main write)",
    )
    parser.add_argument("--connections", type=int, default=DEFAULT_CONNECTIONS)
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="per route")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="turns per route")
    parser.add_argument("--processes", type=int, default=DEFAULT_PROCESSES)
    parser.add_argument("--wrk", action="store_true", help="also run wrk on /healthz, if installed")
    parser.add_argument("--out", type=Path, default=var_dir() / "results", help="folder")
    args = parser.parse_args(argv)
    apps = args.apps or available_apps()
    if unknown := [a for a in apps if a not in available_apps()]:
        parser.error(f"no such app in this checkout: {unknown[0]}")

    rows = [row for app in apps for row in bench_app(app, args.op or [MAIN_WRITE[app]], args)]
    print(f"\nresults: {report.write_csv(args.out / 'bench.csv', rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
