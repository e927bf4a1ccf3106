"""Every fact about the four apps that code outside them needs, in one place.

The launchers, the hammer, the bench, the locustfile, the tests and the docs
read these; none of them spells out an app's port, store or limits again.

    >>> APPS["fixed_db"].port
    5002
    >>> [app.name for app in APPS.values() if not app.serves_counter]
    ['fixed_session']
"""

from dataclasses import dataclass


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

    @property
    def is_fixed(self) -> bool:
        return self.name.startswith("fixed_")


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
        App("fixed_db", 5002, "SQLite", None, True, "increment", "uid"),
        App("fixed_cache", 5003, "a Redis-protocol server", "valkey", True, "increment", "uid"),
    )
}
