"""Every fact about the four apps that code outside them needs, in one place.

The launchers, the hammer, the bench, the locustfile, the tests and the docs
read these; none of them spells out an app's port, store or limits again.

    >>> APPS["fixed_db"].port
    5002
    >>> [app.name for app in APPS.values() if not app.serves_counter]
    ['fixed_session']
    >>> APPS["fixed_db"].embedded_server({"FIXED_DB_BACKEND": "postgres"})
    'postgres'
    >>> APPS["fixed_db"].embedded_server({"FIXED_DB_BACKEND": "postgres", "DATABASE_URL": "x"})
"""

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class App:
    name: str  # the folder, which /healthz calls the "strategy"
    port: int  # where `make run*` serves it on 127.0.0.1
    store: str  # what holds its state
    embedded: str | None  # the server the launcher starts when the app's URL is unset
    serves_counter: bool  # False: the shared counter answers 501
    main_write: str  # the client operation the bench measures (loadtests/client.py ROUTES)
    user_cookie: str  # the cookie that says who the user is
    # Anomalies its tool shows by nature, documented in its README; checker field names.
    known_limits: frozenset[str] = frozenset()
    url_setting: str | None = None  # the variable that names its store's server, when set
    # A store chosen by a variable: its name, and the server the launcher starts
    # for each of its values (None: a file, nothing to start).
    backend_setting: str | None = None
    embedded_by_backend: Mapping[str, str | None] = field(default_factory=dict, hash=False)

    @property
    def is_fixed(self) -> bool:
        return self.name.startswith("fixed_")

    def embedded_server(self, env: Mapping[str, str]) -> str | None:
        """The server a launcher starts for this app in this environment
        ("valkey", "postgres"), or None: none is needed, or its URL is set."""
        if self.url_setting and env.get(self.url_setting):
            return None
        if self.backend_setting and (backend := env.get(self.backend_setting)):
            if backend not in self.embedded_by_backend:
                choices = " or ".join(self.embedded_by_backend)
                raise ValueError(f"{self.backend_setting} must be {choices}, got {backend!r}")
            return self.embedded_by_backend[backend]
        return self.embedded


APPS = {
    app.name: app
    for app in (
        App("broken_global", 5000, "module-level globals", None, True, "increment", "uid"),
        App(
            "fixed_session",
            5001,
            "a server-side session (Flask-Session)",
            None,
            serves_counter=False,
            main_write="add_visit",
            user_cookie="session",
            known_limits=frozenset({"tabs_lost"}),  # a session is saved whole: last writer wins
        ),
        App(
            "fixed_db",
            5002,
            "SQLite, or PostgreSQL",
            None,  # SQLite: a file under var/
            True,
            "increment",
            "uid",
            url_setting="DATABASE_URL",
            backend_setting="FIXED_DB_BACKEND",
            embedded_by_backend={"sqlite": None, "postgres": "postgres"},
        ),
        App(
            "fixed_cache",
            5003,
            "a Redis-protocol server",
            "valkey",
            True,
            "increment",
            "uid",
            url_setting="REDIS_URL",
        ),
    )
}
