"""Serving a bare reference app (this package) beside the app it stands for.

BareServer is an AppServer for the project's app (its settings, its shape,
the shared gunicorn config) whose command serves a bare module instead,
pointed at the store the project's app already uses: nothing of its own is
started for it. A store may have more than one reference: the session files
have the bare write, and Flask-Session over it.
"""

from collections.abc import Iterable, Mapping

from loadtests.runs.floor import Store
from serve.processes import AppServer

# The store's kind (floor.Store.kind) -> the bare modules in this package.
BARE_APPS = {
    "valkey": ("valkey",),
    "sqlite": ("sqlite",),
    "postgres": ("postgres",),
    "session-files": ("session", "flask_session"),
}


class BareServer(AppServer):
    """The bare app for a store, under the project's app's gunicorn shape."""

    def __init__(self, app: str, port: int, module: str, env: Mapping[str, str]) -> None:
        super().__init__(app, port, env=env, own_folder="bench-bare")
        self.module = module

    @property
    def name(self) -> str:
        return f"bare_{self.module}"

    @property
    def label(self) -> str:
        return self.name

    def command(self) -> list[str]:
        command = super().command()
        command[-1] = f"loadtests.runs.bare.{self.module}:create_app()"
        return command


def bare_servers(project: AppServer, store: Store, ports: Iterable[int]) -> list[BareServer]:
    """Not started: the bare apps on `store`, the one `project` uses, each on
    a port from `ports`."""
    if store.kind == "session-files":
        where = {"BARE_SESSION_DIR": store.where}
    elif store.kind == "valkey":
        where = {"REDIS_URL": store.where}
    elif store.kind == "sqlite":
        where = {"DATABASE_URL": f"sqlite:///{store.where}"}
    else:
        where = {"DATABASE_URL": store.where}
    settings = {name: project.setting(name) for name in project.spec.environment()}
    return [
        BareServer(project.app, port, module, {**settings, **where})
        for module, port in zip(BARE_APPS[store.kind], ports, strict=False)
    ]
