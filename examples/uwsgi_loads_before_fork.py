"""uWSGI loads the app before it forks, by default: --preload without asking for it.

gunicorn imports the app in each worker unless told --preload. uWSGI does
the opposite: its master imports the app once, then forks the workers from
it (its log says "WSGI app 0 ... ready ... pid: <the master's>"). Everything
made at import is therefore made once and copied into every worker: a
connection opened at import is one socket shared by all of them. Its
--lazy-apps option makes each worker load the app itself, after the fork.

The proof runs connection_before_fork's app (a Redis client with a single
connection and a random.Random(), both made at import) under uWSGI with 2
worker processes, and makes the same observations as connection_before_fork
under gunicorn:

    uwsgi --master --processes 2 --module examples.connection_before_fork_app:app ...

A run:

    default:      one connection (5); B's GET 'b' answered ['jobs:ann', "ann's job"];
                  196 of 400 answers carried another key's value; the same invite code
    --lazy-apps:  connections [7, 8]; B's GET 'b' answered 'b'; 0 of 400; different codes

The fix is the one for gunicorn --preload: make connections (and anything
else that must belong to one process) after the fork, on first use with a
pid check or in a post-fork hook (uWSGI's: uwsgidecorators.postfork); or
--lazy-apps. uWSGI is built from source (`.venv/bin/pip install uwsgi`: a C
compiler and Python's headers); without it, this proof says so and fails.
"""

from dataclasses import dataclass

from examples.connection_before_fork import BROKEN, Run, observe_each
from examples.servers import Uwsgi

LABEL = "proven"


@dataclass
class Finding:
    preforked: Run  # uWSGI's default
    lazy_apps: Run

    @property
    def holds(self) -> bool:
        broken = self.preforked
        return (
            broken.shared
            and broken.crossing.crossed
            and broken.same_invite
            and self.lazy_apps.separate_and_right
        )

    def summary(self) -> str:
        return (
            f"uWSGI, 2 workers, by default: {self.preforked.describe()}; with --lazy-apps: "
            f"{self.lazy_apps.describe()}"
        )


def prove() -> Finding:
    return Finding(
        **observe_each(
            lambda env: {
                "preforked": Uwsgi(BROKEN, env=env),  # --module takes gunicorn's "module:app"
                "lazy_apps": Uwsgi(BROKEN, options=["--lazy-apps"], env=env),
            }
        )
    )
