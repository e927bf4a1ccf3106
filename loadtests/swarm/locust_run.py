"""Start an app, then Locust against it; Ctrl-C stops all of it, each process by PID.

    python -m loadtests.swarm.locust_run broken_global         # web UI on http://127.0.0.1:8089
    python -m loadtests.swarm.locust_run fixed_db --workers 2  # a master and two workers
    python -m loadtests.swarm.locust_run fixed_db --headless --run-time 20s --users 24
    python -m loadtests.swarm.locust_run fixed_db --run-time 3m --users 48  # web UI, at once
    python -m loadtests.swarm.locust_run broken_global --headless -- --judge-as fixed_db

The app runs under the shared gunicorn config on its own port (see
registry.py; `--app-port 0` picks a free one), with its backing
server if it has one, its data in a folder of its own (never that of the
app `make run` serves; serve/processes.py run_folder). Locust runs
loadtests/swarm/locustfile.py, listening on 127.0.0.1 only: the web UI, and the
master's port for its workers. Arguments after `--` go to Locust (the
master). A headless run exits with Locust's exit code: 1 when an app that
should be correct showed an anomaly or answered with errors (requests that
got no answer do not count: their outcome is unknown, see
loadtests/swarm/correctness_tab.py). A known failure (the app's port taken, the app
not starting) is one paragraph on stderr and exit code 2.
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

from plumbing.config import REPO_ROOT
from registry import APPS
from serve.pids import (
    free_port,
    port_in_use_message,
    port_is_free,
    shield_cleanup,
    spawn,
    stop_on_sigterm,
    stop_process,
)
from serve.processes import AppServer, launcher

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
WEB_PORT = 8089
DEFAULT_RUN_TIME = "20s"
MASTER_STOP_SECONDS = 40.0  # it stops its users gracefully and gathers the workers' events
WORKER_EXIT_SECONDS = 10.0  # after the master, a worker quits on its own


def locust_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), *args]


def start(command: list[str]) -> subprocess.Popen:
    # A session of its own: a Ctrl-C reaches us only, and we stop it in order;
    # and if we are killed outright, the kernel stops it (serve.pids.spawn).
    return spawn(command, cwd=REPO_ROOT)


@launcher  # the app did not start, its port is taken: an error, exit code 2
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    ours, locust_args = argv[:split], argv[split + 1 :]
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.swarm.locust_run", description=__doc__.split("\n")[0]
    )
    parser.add_argument("app", choices=list(APPS))
    parser.add_argument("--workers", type=int, default=0, help="Locust workers (0: one process)")
    parser.add_argument("--headless", action="store_true", help="no web UI: run, sum up, exit")
    parser.add_argument(
        "--run-time",
        default=None,
        help="headless: how long (default 20s); with the web UI: start at once, stop after it",
    )
    parser.add_argument("--users", type=int, default=24, help="simulated users (default: 24)")
    parser.add_argument("--spawn-rate", type=float, default=None, help="default: all at once")
    parser.add_argument("--app-port", type=int, default=None, help="default: the app's own port")
    parser.add_argument("--web-port", type=int, default=WEB_PORT)
    args = parser.parse_args(ours)
    if args.workers < 0 or args.users < 1:
        parser.error("--workers must be 0 or more and --users 1 or more")
    app_port = APPS[args.app].port if args.app_port is None else args.app_port or free_port()
    if not args.headless and not port_is_free(args.web_port):
        parser.error(f"port {args.web_port} is in use: pick another with --web-port")

    options = ["--users", str(args.users), "--spawn-rate", str(args.spawn_rate or args.users)]
    if args.headless:
        options += ["--headless", "--run-time", args.run_time or DEFAULT_RUN_TIME]
    else:
        options += ["--web-host", "127.0.0.1", "--web-port", str(args.web_port)]
        if args.run_time:
            options += ["--autostart", "--run-time", args.run_time]
    master_port = free_port()
    if args.workers:
        options += ["--master", "--master-bind-host", "127.0.0.1"]
        options += ["--master-bind-port", str(master_port), "--expect-workers", str(args.workers)]
    worker_options = ["--worker", "--master-host", "127.0.0.1", "--master-port", str(master_port)]

    if not port_is_free(app_port):
        elsewhere = f"give the app another port: `make locust APP={args.app} APP_PORT=0`"
        elsewhere += " (0: a free one), or `--app-port N` here"
        raise RuntimeError(port_in_use_message(app_port, args.app, elsewhere))
    stop_on_sigterm()
    server = AppServer(args.app, app_port, own_folder="locust")
    master: subprocess.Popen | None = None
    workers: list[subprocess.Popen] = []
    try:
        server.start()
        print(f"{server.label} on {server.url} (gunicorn pid {server.process.pid})", flush=True)
        workers_option = ["--app-workers", str(server.workers())]  # for the reset to reach each
        master = start(
            locust_command("--host", server.url, *options, *workers_option, *locust_args)
        )
        for _ in range(args.workers):
            workers.append(start(locust_command(*worker_options)))
        pids = " ".join(str(worker.pid) for worker in workers)
        print(f"locust pid {master.pid}" + (f", worker pids {pids}" if workers else ""))
        if not args.headless:
            print(f"Locust web UI on http://127.0.0.1:{args.web_port}")
        print("Ctrl-C stops everything.", flush=True)
        return master.wait()  # headless: when the run is over; else only if it fails
    except KeyboardInterrupt:
        print("\nstopping...", flush=True)
        return 0
    finally:
        shield_cleanup()
        if master is not None:
            stop_process(master, MASTER_STOP_SECONDS)  # it prints the correctness summary
        deadline = time.monotonic() + WORKER_EXIT_SECONDS
        for worker in workers:
            try:
                worker.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                stop_process(worker)
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
