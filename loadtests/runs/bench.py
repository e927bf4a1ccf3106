"""Throughput and latency of one route against the same app's /healthz ceiling.

    python -m loadtests.runs.bench fixed_cache        # its main write vs. /healthz
    python -m loadtests.runs.bench --wrk               # every app, and wrk's figure

A benchmark needs a client that is not the bottleneck: this one keeps
CONNECTIONS sockets alive in one selectors loop per client process, with
raw HTTP (loadtests/clients/rawhttp.py). The routes take turns in ROUNDS
short slices, so a machine whose speed drifts slows them alike: compare the
ratio, not the absolute numbers. The store's floor (floor.py: the same write
straight from its client, as many client threads as the app has) takes its
turn with them. The CPU each request cost the app and its store (cpu.py)
says where the time went and gives the best case, a model (docs/load-testing.md;
computed in bench_app()); a short profiled pass (profiled.py)
splits the app's CPU between web stack, store client and this project's
code. Measured figures are in docs/results/.
"""

import argparse
import multiprocessing
import re
import selectors
import shutil
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from loadtests.clients.client import ROUTES
from loadtests.clients.placement import Placement
from loadtests.clients.rawhttp import (
    connect_to_worker,
    exchange,
    request_bytes,
    response_length,
    set_cookie,
)
from loadtests.runs import report
from loadtests.runs.bare.server import BareServer, bare_servers
from loadtests.runs.bench_table import (
    COLUMNS,
    LEGEND,
    rounded,
    shares_of,
    shown,
    where_the_rest_went,
)
from loadtests.runs.cpu import (
    CpuSeconds,
    Groups,
    cpu_per_request,
    cpu_spent,
    cpu_used,
    server_processes,
)
from loadtests.runs.floor import Floor, floor_slice, floor_store
from loadtests.runs.hammer import measure_ceiling
from loadtests.runs.profiled import ProfiledServer, split
from plumbing.config import var_dir
from registry import APPS
from serve.processes import AppServer, available_apps, free_port, launcher, run_folder

DEFAULT_CONNECTIONS = 16
DEFAULT_SECONDS = 6.0
DEFAULT_ROUNDS = 6
DEFAULT_PROCESSES = 1
DEFAULT_PROFILE_SECONDS = 2.0


APPENDS_PER_USER = 50  # POST /visits: each connection is a new user this often
VISITS_TO_READ = 10  # GET /visits: each connection reads a user with this many


@dataclass
class Result:
    completed: int
    failed: int
    seconds: float
    latencies_ms: list[float]
    cpu_seconds: CpuSeconds | None = None  # by server process group, where known

    @property
    def rate(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0

    def percentile(self, p: int) -> float:
        if len(self.latencies_ms) < 2:
            return self.latencies_ms[0] if self.latencies_ms else 0.0
        return statistics.quantiles(self.latencies_ms, n=100)[p - 1]


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


def profile_shares(
    app: str, ops: list[str], args: argparse.Namespace
) -> dict[str, dict[str, float] | None]:
    """The profiled pass (profiled.py): each part's share of a request's CPU,
    for each route in turn, from one server that listens on a port per route."""
    if args.profile_seconds <= 0:
        return dict.fromkeys(ops)
    ports: dict[str, int] = {}
    for op in ops:  # distinct ports: free_port() may give one twice
        ports[op] = next(p for p in iter(free_port, None) if p not in ports.values())
    first, *more = ports.values()
    with run_folder("bench-profile") as folder:
        env = {"WORK_MS": "0"}
        with ProfiledServer(
            app, first, folder, more_ports=tuple(more), env=env, own_folder="bench"
        ) as server:
            if server.setting("GUNICORN_WORKER_CLASS") != "gthread":
                return dict.fromkeys(ops)
            for op, port in ports.items():
                measure(port, op, args.connections, args.profile_seconds, 1, server.workers())
        return {op: split(folder, port) for op, port in ports.items()}


def bench_app(app: str, ops: list[str], args: argparse.Namespace) -> list[dict]:
    """Each route of one app, in interleaved turns, against GET /healthz and
    its store's floor, and beside the bare app of its store (loadtests/runs/bare/)."""
    # WORK_MS=0: measure what the state costs, not the stand-in for a query.
    with ExitStack() as running:
        server = running.enter_context(
            AppServer(app, free_port(), env={"WORK_MS": "0"}, own_folder="bench")
        )
        print(
            f"\n{server.label} ({server.shape()}, {args.connections} connections, "
            f"{args.processes} client process(es), {args.seconds:g} s per route "
            f"in {args.rounds} turns)",
            flush=True,
        )
        workers = server.workers()
        groups = server_processes(server)  # whose CPU time each request costs
        store = floor_store(server) if args.floor else None
        slices: dict[str, list[Result]] = {op: [] for op in ["healthz", *ops]}
        bares: list[tuple[BareServer, Groups, dict[str, list[Result]]]] = []
        if args.bare and store and APPS[app].main_write in ops:
            # Each one's own processes, and the store's, which the project's app started.
            store_group = {g: groups[g] for g in groups if g == "store"}
            for bare in bare_servers(server, store, iter(free_port, None)):
                running.enter_context(bare)
                bare_groups = {**server_processes(bare), **store_group}
                bares.append((bare, bare_groups, {"healthz": [], APPS[app].main_write: []}))
                print(f"{bare.label} beside it ({bare.shape()}, on the same store)", flush=True)
        floors: list[Floor] = []
        share = args.seconds / args.rounds
        for _ in range(args.rounds):
            for target, watched, taken in ((server, groups, slices), *bares):
                for op in taken:
                    before = cpu_used(watched)
                    result = measure(
                        target.port, op, args.connections, share, args.processes, workers
                    )
                    result.cpu_seconds = cpu_spent(before, cpu_used(watched))
                    taken[op].append(result)
            if store:
                floors.append(floor_slice(store, server, groups, share))
        wrk = hammer = None
        if args.wrk and (wrk := wrk_rate(server.url + "/healthz", args.connections, args.seconds)):
            # The hammer's own client (threads, one kept-alive connection each) on
            # the same route with as many connections: it must not limit a run.
            hammer = measure_ceiling(server.url, args.connections, 400, workers)
        backend = server.backend or ""  # fixed_db's: sqlite or postgres
    profiles = profile_shares(app, list(slices), args)

    floor = Floor(*(sum(getattr(f, k) for f in floors) for k in ("completed", "seconds")), 0.0)
    floor.client_cpu_seconds = sum(f.client_cpu_seconds for f in floors)
    rows = table_rows(app, backend, slices, floor, profiles)
    print(report.format_table([shown(r) for r in rows], COLUMNS), flush=True)
    print(LEGEND)
    for row in rows[1:]:
        if row["vs_best_case"] and row["cores_busy"] and rows[0]["cores_busy"]:
            print(where_the_rest_went(rows[0], row))
    project_rows = list(rows)
    for bare, _, bare_slices in bares:
        bare_rows = table_rows(bare.name, backend, bare_slices, floor, {})
        print(f"{bare.name}, the same write from a bare Flask app (loadtests/runs/bare/):")
        print(report.format_table([shown(r) for r in bare_rows], COLUMNS), flush=True)
        for row in bare_rows[1:]:
            if row["vs_best_case"] and row["cores_busy"] and bare_rows[0]["cores_busy"]:
                print(where_the_rest_went(bare_rows[0], row))
        print(against_bare(project_rows, bare_rows))
        rows += bare_rows
    if store:
        print(f"floor: {store.operation}, {workers} x {server.setting('GUNICORN_THREADS', '1')}")
    if wrk:
        ceiling = rows[0]["req_per_s"]
        print(f"{'GET /healthz, wrk':<26}{wrk:>8.0f}   this bench: {ceiling / wrk:.2f}x of wrk")
        print(
            f"{'GET /healthz, hammer':<26}{hammer:>8.0f}   the hammer: {hammer / wrk:.2f}x of wrk"
        )
        for name, rate in (("wrk", wrk), ("hammer", hammer)):
            rows.append({**rows[0], "route": f"GET /healthz ({name})", "req_per_s": round(rate)})
    return rows


def table_rows(
    app: str,
    backend: str,
    slices: dict[str, list[Result]],
    floor: Floor,
    profiles: dict[str, dict[str, float] | None],
) -> list[dict]:
    """One row per route, /healthz first: its rate, CPU, and the best case
    the model gives from this app's own /healthz and the store's floor."""
    healthz = combine(slices["healthz"])
    ceiling = healthz.rate
    healthz_cpu = server_cpu_per_request(healthz)
    rows = []
    for op, parts in slices.items():
        result = combine(parts)
        method, path, _ = ROUTES[op]
        spent, done = result.cpu_seconds, result.completed
        best = None
        if op != "healthz" and floor.completed and healthz_cpu:
            floor_cpu = floor.client_cpu_seconds / floor.completed * 1e6
            # Nor can it go faster than its store alone.
            best = min(ceiling * healthz_cpu / (healthz_cpu + floor_cpu), floor.rate)
        kernel = cpu_per_request(spent, "app_kernel", done)
        rows.append(
            {
                "app": app,
                "backend": backend,
                "route": f"{method} {path}",
                "req_per_s": round(result.rate),
                "p50_ms": round(result.percentile(50), 2),
                "p99_ms": round(result.percentile(99), 2),
                "failed": result.failed,
                "vs_healthz": round(result.rate / ceiling, 2),
                "app_cpu_us": rounded(cpu_per_request(spent, "app", done)),
                "store_cpu_us": rounded(cpu_per_request(spent, "store", done)),
                "floor_req_s": rounded(floor.rate) if op != "healthz" and floor.completed else None,
                "floor_cpu_us": rounded(floor.client_cpu_seconds / floor.completed * 1e6)
                if op != "healthz" and floor.completed
                else None,
                "best_case_req_s": rounded(best),
                "vs_best_case": round(result.rate / best, 2) if best else None,
                "kernel_cpu_us": rounded(kernel),
                "cores_busy": round(busy, 2) if (busy := cores_busy(result)) else None,
                "switches_per_req": round(spent["app_switches"] / done, 1)
                if spent and done
                else None,
                **shares_of(profiles.get(op)),
            }
        )
    return rows


def against_bare(rows: list[dict], bare_rows: list[dict]) -> str:
    """The project's write against the bare app's, and both against the
    project's best case: what is the stack's, and what is the project's."""
    write, bare = rows[-1], bare_rows[-1]
    best = write["best_case_req_s"]
    return (
        f"{write['route']}: {write['app']} {write['req_per_s']} req/s, "
        f"{bare['app']} {bare['req_per_s']} req/s ({write['req_per_s'] / bare['req_per_s']:.2f}x "
        f"of the bare one's); against {write['app']}'s best case {best}: "
        f"{write['req_per_s'] / best:.2f} and {bare['req_per_s'] / best:.2f}"
    )


def server_cpu_per_request(result: Result) -> float | None:
    """The app's and its store's CPU per request, in microseconds."""
    spent = result.cpu_seconds
    if not spent or not result.completed:
        return None
    return (spent["app"] + spent.get("store", 0.0)) / result.completed * 1e6


def cores_busy(result: Result) -> float | None:
    """Cores the app and its store kept busy: their CPU seconds per second."""
    cpu = server_cpu_per_request(result)
    return cpu * result.rate / 1e6 if cpu else None


@launcher  # a server that did not start: an error, exit code 2
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.runs.bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("apps", nargs="*", metavar="APP", help=" | ".join(APPS) + " (default: all)")
    parser.add_argument(
        "--op", action="append", choices=list(ROUTES), help="default: the app's main write"
    )
    parser.add_argument("--connections", type=int, default=DEFAULT_CONNECTIONS)
    parser.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="per route")
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="turns per route")
    parser.add_argument("--processes", type=int, default=DEFAULT_PROCESSES)
    parser.add_argument("--wrk", action="store_true", help="also run wrk on /healthz, if installed")
    parser.add_argument(
        "--no-floor", dest="floor", action="store_false", help="skip the store's floor"
    )
    parser.add_argument(
        "--no-bare",
        dest="bare",
        action="store_false",
        help="skip the bare app beside each write (loadtests/runs/bare/)",
    )
    parser.add_argument(
        "--profile-seconds",
        type=float,
        default=DEFAULT_PROFILE_SECONDS,
        help="the profiled pass per route (0: none)",
    )
    parser.add_argument("--out", type=Path, default=var_dir() / "results", help="folder")
    args = parser.parse_args(argv)
    apps = args.apps or available_apps()
    if unknown := [a for a in apps if a not in available_apps()]:
        parser.error(f"no such app in this checkout: {unknown[0]}")

    rows = [row for app in apps for row in bench_app(app, args.op or [APPS[app].main_write], args)]
    print(f"\nresults: {report.write_csv(args.out / 'bench.csv', rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
