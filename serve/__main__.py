"""Serve apps in the foreground on their fixed ports; Ctrl-C stops them all.

python -m serve broken_global          # http://127.0.0.1:5000
python -m serve --fixed                # every fixed app, each on its port
python -m serve fixed_db --port 6002

fixed_cache's Valkey server is restarted by its supervisor if it dies
(serve/valkey.py); a line says so. A second launcher for fixed_cache in the
same checkout stops with an error: one Valkey server per data folder.

FIXED_DB_BACKEND=postgres (make run APP=fixed_db DB=postgres) serves fixed_db
on an embedded PostgreSQL server (serve/postgres.py), started first; its PID
is printed next to gunicorn's. On SQLite, the line names its file.

A known failure (a port taken, a data folder in use, a server that did not
start, a setting of a wrong value) is one paragraph on stderr, exit code 2.
"""

import argparse
import sys
import time

from serve.pids import (
    free_port,
    port_in_use_message,
    port_is_free,
    raise_if_interrupted,
    shield_cleanup,
    stop_on_sigterm,
)
from serve.processes import APPS, AppServer, fixed_apps, launcher


def stores(server: AppServer) -> str:
    """What the start-up line says of a server: its PIDs, and where its data is.
    A file before gunicorn's PID, which ends the line as it always has."""
    shown = f"gunicorn pid {server.process.pid}"
    store = server.backing.name if server.backing else None
    if store == "valkey":
        shown += f", valkey-server pid {server.backing.process.pid} at {server.backing.url}"
    elif store == "postgres":
        postgres = server.backing
        shown += f", postgres pid {postgres.process.pid} at {postgres.shown_url}"
    elif path := server.sqlite_file():
        shown = f"SQLite file {path}, {shown}"
    elif server.backend == "postgres":
        shown = f"PostgreSQL at DATABASE_URL (not started here), {shown}"
    return shown


def check_ports(ports: dict[str, int]) -> None:
    """Every port free, before any server starts; else who holds it, and what to do."""
    for app, port in ports.items():
        if not port_is_free(port):
            elsewhere = (
                f"serve {app} on another port: `python -m serve {app} --port {free_port()}` "
                f"(or `make run APP={app} APP_PORT=<port>`; make run-fixed has no port option)"
            )
            raise RuntimeError(port_in_use_message(port, app, elsewhere))


@launcher  # a port taken, a store in use, a server that did not start: an error, exit code 2
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serve", description=__doc__.split("\n")[0])
    parser.add_argument("apps", nargs="*", metavar="APP", help=" | ".join(APPS))
    parser.add_argument("--fixed", action="store_true", help="serve every fixed app")
    parser.add_argument("--port", type=int, help="port for a single app")
    args = parser.parse_args(argv)
    apps = args.apps + (fixed_apps() if args.fixed else [])
    if unknown := [app for app in apps if app not in APPS]:
        parser.error(f"unknown app {unknown[0]!r}; choose from {', '.join(APPS)}")
    if not apps:
        parser.error(f"name an app ({', '.join(APPS)}) or pass --fixed")
    if args.port and len(apps) != 1:
        parser.error("--port needs exactly one app")

    stop_on_sigterm()
    servers: list[AppServer] = []
    try:
        ports = {app: args.port or APPS[app].port for app in apps}
        check_ports(ports)
        for app in apps:
            server = AppServer(app, ports[app]).start(foreground=True)
            servers.append(server)
            print(f"{app:<14} {server.url}  ({stores(server)})", flush=True)
        print("Ctrl-C stops all of them.", flush=True)
        restarts = {server.app: 0 for server in servers}
        while all(s.process.poll() is None for s in servers):
            time.sleep(0.5)
            raise_if_interrupted()  # a Ctrl-C that Python dropped (serve.pids.INTERRUPTED)
            for server in servers:
                valkey = server.backing is not None and server.backing.name == "valkey"
                if valkey and server.backing.restarts != restarts[server.app]:
                    restarts[server.app] = server.backing.restarts
                    print(
                        f"{server.app:<14} store restarted: valkey-server pid "
                        f"{server.backing.process.pid} (restart {restarts[server.app]}; "
                        f"see {server.backing.supervisor_log_path()})",
                        flush=True,
                    )
        dead = [s.app for s in servers if s.process.poll() is not None]
        print(f"stopped unexpectedly: {', '.join(dead)}; stopping the rest", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping...", flush=True)
        return 0
    finally:
        shield_cleanup()
        for server in servers:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
