"""Several hosts behind a load balancer: sticky sessions hide the bug, until
a restart or a scale event.

Two instances of an app stand for two hosts, behind Caddy (serve/balancer.py),
a real reverse proxy started without root. A browser (a cookie jar) sends
its requests through it:

- round-robin: each request goes to the next host. broken_global's counter
  answers 1, 1, 2, 2, 3, 3: each host counts on its own, at once visible;
- sticky (a cookie pins the browser to one host): the counter answers 1, 2,
  3, 4, 5 and looks fixed, until its host restarts (a deploy) and the next
  increment answers 1; a browser pinned to the other host never saw any of it;
- a secret key made at import (half_fix_secret_per_worker) is one key per
  host: logged in on one host, logged out on the next under round-robin.

fixed_db, on the same two hosts sharing one database, counts 1..6 under
either policy, and a restart changes nothing; one SECRET_KEY for every host
keeps the user logged in wherever the balancer sends them. Stickiness is a
performance tool (warm caches), never a correctness one.

A run: round-robin [1, 1, 2, 2, 3, 3]; sticky [1, 2, 3, 4, 5], after its
host restarts 1; a key per host, round-robin, logged in as 'ann': [None,
'ann', None, 'ann']; fixed_db round-robin [1, 2, 3, 4, 5, 6], sticky [1, 2,
3, 4, 5], after a restart 6; one SECRET_KEY: ['ann', 'ann', 'ann', 'ann'].

One key for every host comes from the environment (SECRET_KEY, see the
README's configuration). To change it without logging everyone out, put the
old one in SECRET_KEY_FALLBACKS (Flask 3.1+): cookies signed with it are
still read, and new ones are signed with the new key.
"""

import secrets
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from examples.servers import Gunicorn
from serve.balancer import Balancer

LABEL = "proven"
USER = "ann"
PER_HOST_KEY = "examples.half_fix_secret_per_worker:app"  # a key made at import
SHARED_KEY = "examples.preload_secret_until_restart:create_app()"  # SECRET_KEY from env


@contextmanager
def two_hosts(target: str, policy: str, env: dict[str, str]) -> Iterator[tuple]:
    """Two single-worker instances of `target` behind Caddy with `policy`."""
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        env = {"VAR_DIR": str(folder / "var"), **env}  # one database for both hosts
        hosts = [stack.enter_context(Gunicorn(target, workers=1, env=env)) for _ in range(2)]
        balancer = Balancer([h.url for h in hosts], folder / "caddy", policy)
        yield hosts, stack.enter_context(balancer), stack


def increments(browser: requests.Session, url: str, times: int) -> list[int]:
    return [
        browser.post(url + "/counter/increment", timeout=5).json()["value"] for _ in range(times)
    ]


def restart_the_host_of(
    browser: requests.Session, url: str, hosts: list[Gunicorn], stack: ExitStack
) -> None:
    """A deploy: the host this browser is pinned to stops, and a new one starts
    on its address."""
    pid = int(browser.get(url + "/healthz", timeout=5).headers["X-Worker"].partition("-")[0])
    host = next(h for h in hosts if pid in h.worker_pids)
    host.stop()
    stack.enter_context(Gunicorn(host.target, workers=1, env=host.env, port=host.port))


@dataclass
class Counting:
    round_robin: list[int]
    sticky: list[int]
    after_restart: int


def count(target: str, env: dict[str, str]) -> Counting:
    with two_hosts(target, "round_robin", env) as (_, balancer, _):
        round_robin = increments(requests.Session(), balancer.url, 6)
    with two_hosts(target, "cookie", env) as (hosts, balancer, stack):
        browser = requests.Session()
        sticky = increments(browser, balancer.url, 5)
        restart_the_host_of(browser, balancer.url, hosts, stack)
        [after_restart] = increments(browser, balancer.url, 1)
    return Counting(round_robin, sticky, after_restart)


def logged_in_as(target: str, env: dict[str, str]) -> list[str | None]:
    """Log in once, then ask who we are four times, round-robin over two hosts."""
    with two_hosts(target, "round_robin", env) as (_, balancer, _):
        browser = requests.Session()
        browser.post(balancer.url + "/login", json={"name": USER}, timeout=5)
        return [browser.get(balancer.url + "/me", timeout=5).json()["user"] for _ in range(4)]


@dataclass
class Finding:
    broken: Counting
    fixed: Counting
    key_per_host: list[str | None]
    shared_key: list[str | None]

    @property
    def holds(self) -> bool:
        broken, fixed = self.broken, self.fixed
        return (
            broken.round_robin == [1, 1, 2, 2, 3, 3]  # each host its own counter
            and broken.sticky == [1, 2, 3, 4, 5]  # looks fixed...
            and broken.after_restart == 1  # ...until its host restarts
            and fixed.round_robin == list(range(1, 7))
            and fixed.sticky == list(range(1, 6))
            and fixed.after_restart == 6
            and None in self.key_per_host
            and USER in self.key_per_host
            and self.shared_key == [USER] * 4
        )

    def summary(self) -> str:
        return (
            f"broken_global on 2 hosts behind Caddy: round-robin {self.broken.round_robin}; "
            f"sticky {self.broken.sticky}, after its host restarts "
            f"{self.broken.after_restart}; a key per host, round-robin, logged in as {USER!r}: "
            f"{self.key_per_host}; fixed_db round-robin {self.fixed.round_robin}, sticky "
            f"{self.fixed.sticky}, after a restart {self.fixed.after_restart}; one "
            f"SECRET_KEY: {self.shared_key}"
        )


def prove() -> Finding:
    return Finding(
        broken=count("broken_global.app:create_app()", {}),
        fixed=count("fixed_db.app:create_app()", {}),
        key_per_host=logged_in_as(PER_HOST_KEY, {}),
        shared_key=logged_in_as(SHARED_KEY, {"SECRET_KEY": secrets.token_hex(32)}),
    )
