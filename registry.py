"""Every fact about the four apps that code outside them needs, in one place.

The launchers, the harness, the tests and the docs read these; none of them
spells out an app's port, store or limits again. It is a fact about the apps,
not about launching them, so it sits at the top of the repository and imports
only the standard library and the settings table (plumbing/config.py: fixed_db's
backends and SQLite file): reading it starts nothing.

    >>> APPS["fixed_db"].port
    5002
    >>> [app.name for app in APPS.values() if not app.serves_counter]
    ['fixed_session']
    >>> APPS["fixed_db"].embedded_server({"FIXED_DB_BACKEND": "postgres"})
    'postgres'
    >>> [APPS["fixed_db"].label(env) for env in ({}, {"FIXED_DB_BACKEND": "postgres"})]
    ['fixed_db (SQLite)', 'fixed_db (PostgreSQL)']
    >>> try:
    ...     APPS["fixed_db"].embedded_server({"FIXED_DB_BACKEND": "mysql"})
    ... except SettingError as error:
    ...     print(error)
    FIXED_DB_BACKEND must be sqlite or postgres, got 'mysql'
"""

from collections.abc import Mapping
from dataclasses import dataclass, field

from plumbing.config import FIXED_DB_BACKENDS, FIXED_DB_SQLITE_FILE, url_backend

# How tables and charts name a backend: "fixed_db (PostgreSQL)".
BACKEND_TITLES = {"sqlite": "SQLite", "postgres": "PostgreSQL"}
# How the harness names a store server a launcher starts: "Valkey paused".
SERVER_TITLES = {"valkey": "Valkey", "postgres": "PostgreSQL"}


def titled(app: str, backend: str | None) -> str:
    """The app and its backend, as the harness prints them: "fixed_db (PostgreSQL)"."""
    return f"{app} ({BACKEND_TITLES.get(backend, backend)})" if backend else app


class SettingError(ValueError):
    """A setting with a value no launcher can use, e.g. FIXED_DB_BACKEND=mysql:
    the launchers print it as an error, not a traceback."""


@dataclass(frozen=True)
class App:
    name: str  # the folder, which /healthz calls the "strategy"
    port: int  # where `make run*` serves it on 127.0.0.1
    store: str  # what holds its state
    embedded: str | None  # the server the launcher starts when the app's URL is unset
    serves_counter: bool  # False: the shared counter answers 501
    main_write: str  # the client operation the bench measures (loadtests/clients/client.py ROUTES)
    user_cookie: str  # the cookie that says who the user is
    # Anomalies its tool shows by nature, documented in its README; checker field names.
    known_limits: frozenset[str] = frozenset()
    url_setting: str | None = None  # the variable that names its store's server, when set
    # A store chosen by a variable: its name, and the server the launcher starts
    # for each of its values (None: a file, nothing to start); the first is the default.
    backend_setting: str | None = None
    embedded_by_backend: Mapping[str, str | None] = field(default_factory=dict, hash=False)
    sqlite_file: str | None = None  # its SQLite file under VAR_DIR, when its URL is unset

    @property
    def is_fixed(self) -> bool:
        return self.name.startswith("fixed_")

    @property
    def tolerated(self) -> frozenset[str] | None:
        """The anomalies a run of it may show and still pass, for the judge
        (loadtests/judge/checker.py unexpected()): a fixed app's known limits;
        None, any: broken_global's anomalies are the lesson."""
        return self.known_limits if self.is_fixed else None

    def embedded_server(self, env: Mapping[str, str]) -> str | None:
        """The server a launcher starts for this app in this environment
        ("valkey", "postgres"), or None: none is needed, or its URL is set."""
        backend = self.chosen_backend(env)
        if self.url_setting and env.get(self.url_setting):
            return None
        if backend:
            return self.embedded_by_backend[backend]
        return self.embedded

    def chosen_backend(self, env: Mapping[str, str]) -> str | None:
        """The backend setting's value, if set; SettingError if no backend has that name."""
        if not self.backend_setting or not (backend := env.get(self.backend_setting)):
            return None
        if backend not in self.embedded_by_backend:
            choices = " or ".join(self.embedded_by_backend)
            raise SettingError(f"{self.backend_setting} must be {choices}, got {backend!r}")
        return backend

    def backend(self, env: Mapping[str, str]) -> str | None:
        """The backend this app runs on in this environment ("sqlite", "postgres"),
        for an app whose store a setting chooses; else None. A URL of one
        backend's kind decides; then the setting; then the default."""
        if not self.backend_setting:
            return None
        if backend := url_backend(env.get(self.url_setting or "", "")):
            return backend  # sqlite:///..., postgresql://...
        return self.chosen_backend(env) or next(iter(self.embedded_by_backend))

    def own_server_settings(self) -> dict[str, str] | None:
        """The settings under which a launcher starts a store server of this
        app's own: its URL unset, and the backend that needs one; None when
        no setting gives it one."""
        unset = {self.url_setting: ""} if self.url_setting else {}
        if self.embedded:
            return unset
        for backend, server in self.embedded_by_backend.items():
            if server and self.backend_setting:
                return {self.backend_setting: backend, **unset}
        return None

    def label(self, env: Mapping[str, str]) -> str:
        """The app as the harness prints it: with its backend, where a setting chooses it."""
        return titled(self.name, self.backend(env))


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
            embedded_by_backend=dict(zip(FIXED_DB_BACKENDS, (None, "postgres"), strict=True)),
            sqlite_file=FIXED_DB_SQLITE_FILE,
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
