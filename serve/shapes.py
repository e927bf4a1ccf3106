"""Ways to serve an app: the shared gunicorn config in a given shape, uWSGI,
or `flask run`; the correctness matrix runs an app in each to show which
shape breaks what.

A gunicorn shape is a GunicornShape, read from the environment once (the
"config" shape: GUNICORN_* over the shared config's defaults) or given, and
passed around as one value: its workers, threads and class are never parsed
again from environment strings. serve/gunicorn_conf.py still reads them from
the environment, which environment() writes for it.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from registry import SettingError
from serve import uwsgi
from serve.gunicorn_conf import DEFAULTS
from serve.uwsgi import UwsgiShape


@dataclass(frozen=True)
class GunicornShape:
    worker_class: str
    workers: int
    threads: int
    connections: int = int(DEFAULTS["GUNICORN_WORKER_CONNECTIONS"])  # gevent's greenlets

    @classmethod
    def from_environment(cls, env: Mapping[str, str]) -> "GunicornShape":
        """The shared config's shape as `env` sets it, else its defaults."""

        def count(name: str) -> int:  # as serve/gunicorn_conf.py's count() says it
            value = env.get(name) or DEFAULTS[name]
            if not (value.isdigit() and int(value) >= 1):
                raise SettingError(f"{name} must be a whole number, 1 or more; got {value!r}")
            return int(value)

        return cls(
            env.get("GUNICORN_WORKER_CLASS") or DEFAULTS["GUNICORN_WORKER_CLASS"],
            count("GUNICORN_WORKERS"),
            count("GUNICORN_THREADS"),
            count("GUNICORN_WORKER_CONNECTIONS"),
        )

    def environment(self) -> dict[str, str]:
        """The environment that gives the shared gunicorn config this shape."""
        return {
            "GUNICORN_WORKER_CLASS": self.worker_class,
            "GUNICORN_WORKERS": str(self.workers),
            "GUNICORN_THREADS": str(self.threads),
            "GUNICORN_WORKER_CONNECTIONS": str(self.connections),
        }

    def describe(self) -> str:
        if self.worker_class == "gevent":
            return f"gunicorn gevent {self.workers} workers x {self.connections} greenlets"
        return f"gunicorn {self.worker_class} {self.workers} workers x {self.threads} threads"


Shape = GunicornShape | UwsgiShape | None  # None: `flask run`

# "gthread-2x4" is the shared production-like config; the others show which
# shape breaks what. (gunicorn turns "sync" with more than one thread into
# gthread, hence 1.) "config" is the shared config as the environment sets it.
SHAPES: dict[str, Shape | Callable[[Mapping[str, str]], GunicornShape]] = {
    "flask-dev": None,  # Flask's development server, threaded (its default)
    "sync-1": GunicornShape("sync", 1, 1),
    "sync-4": GunicornShape("sync", 4, 1),
    "gthread-1x8": GunicornShape("gthread", 1, 8),
    "gthread-2x4": GunicornShape("gthread", 2, 4),
    # gevent: one thread, up to 50 greenlets, each request one of them
    # (examples/gevent_greenlets_share_globals.py shows what that does to globals).
    "gevent-1x50": GunicornShape("gevent", 1, 1, connections=50),
    # uWSGI in the shared config's shape: the same concurrency under a server
    # that loads the app in its master before it forks the workers, and closes
    # each connection after one response (serve/uwsgi.py). A fixed app that
    # made its connections in create_app() would share them across workers
    # here. 4 threads: fixed_db's PostgreSQL pool is sized from
    # GUNICORN_THREADS, 4 when unset, as it is under uWSGI.
    "uwsgi-2x4": UwsgiShape(processes=2, threads=4),
    "config": GunicornShape.from_environment,
}
MATRIX_SHAPES = [shape for shape in SHAPES if shape != "config"]
DEFAULT_SHAPE = "config"


def resolve(name: str, env: Mapping[str, str], given: Mapping[str, str]) -> Shape:
    """The shape called `name`: the "config" one read from `env` (ours and
    the server's own), another gunicorn one with the server's own GUNICORN_*
    settings (`given`) over it."""
    shape = SHAPES[name]
    if callable(shape):
        return shape(env)
    if isinstance(shape, GunicornShape):
        return GunicornShape.from_environment({**shape.environment(), **given})
    return shape


def missing_server(shape: str) -> str | None:
    """Why this shape's server cannot run here (uWSGI not built), or None."""
    if isinstance(SHAPES[shape], UwsgiShape) and not uwsgi.available():
        return uwsgi.missing_message()
    return None
