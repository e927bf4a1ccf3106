"""Caddy in front of the apps (serve/balancer.py): it shields gunicorn from
slow clients, and spreads requests over instances round-robin or sticky."""

import pytest

from loadtests.runs.slow_clients import compare
from serve.balancer import Balancer
from serve.processes import AppServer, free_port
from tests.raw import request, send

pytestmark = pytest.mark.gunicorn


def test_slow_clients_stall_gunicorn_alone_and_not_behind_caddy():
    # One worker of 4 threads: 12 half-sent requests hold all of them for certain.
    rows = compare("broken_global", sockets=12, attempts=3, env={"GUNICORN_WORKERS": "1"})
    alone, behind = ({"answered": r["answered"], "timed_out": r["timed_out"]} for r in rows)
    assert alone == {"answered": "0", "timed_out": "3"}
    assert behind == {"answered": "3", "timed_out": "0"}


@pytest.fixture
def two_instances(isolated_var_dir):
    servers = [AppServer("broken_global", free_port()) for _ in range(2)]
    try:
        yield [server.start() for server in servers]
    finally:
        for server in servers:
            server.stop()


def masters_reached(port: int, cookie: str = "", requests: int = 8) -> list[str]:
    headers = {"Cookie": cookie} if cookie else {}
    answers = [send(port, request("GET", "/healthz", headers=headers)) for _ in range(requests)]
    return [answer.headers["x-worker"].partition("-")[0] for answer in answers]


def test_round_robin_takes_the_instances_in_turn(two_instances, isolated_var_dir):
    workers = [set(server.worker_pids) for server in two_instances]
    with Balancer([s.url for s in two_instances], isolated_var_dir / "caddy") as lb:
        reached = masters_reached(lb.port)
    instance = [next(i for i, pids in enumerate(workers) if int(pid) in pids) for pid in reached]
    assert instance in ([0, 1] * 4, [1, 0] * 4)


def test_a_sticky_cookie_pins_a_browser_to_one_instance(two_instances, isolated_var_dir):
    workers = [set(server.worker_pids) for server in two_instances]
    with Balancer([s.url for s in two_instances], isolated_var_dir / "caddy", "cookie") as lb:
        first = send(lb.port, request("GET", "/healthz"))
        cookie = first.headers["set-cookie"].split(";")[0]
        reached = masters_reached(lb.port, cookie)
    assert cookie.startswith("lb=")
    instances = {next(i for i, pids in enumerate(workers) if int(pid) in pids) for pid in reached}
    assert len(instances) == 1
