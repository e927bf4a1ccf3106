"""fixed_cache under real gunicorn with its own Valkey: over 5,000 concurrent
operations with no anomaly, and 503s while its server is down, then 200s
again once it is back, losing nothing acknowledged. Its contract is in
test_contract.py; its store's faults in test_cache_faults.py, its Valkey's
supervision in test_supervision.py.
"""

import threading
import time

import pytest
import requests

from loadtests.clients.client import Client
from loadtests.judge.checker import check
from loadtests.runs.hammer import run_scenarios
from serve.valkey import EmbeddedValkey
from tests.conftest import serve

pytestmark = pytest.mark.gunicorn


def test_fixed_cache_loses_nothing_over_5000_operations(isolated_var_dir):
    with serve("fixed_cache", isolated_var_dir) as server:  # with its own embedded server
        history = run_scenarios(server.url, users=40, ops=42, workers=server.workers())
        final = requests.get(server.url + "/counter", timeout=5).json()["value"]
    assert server.backing.process.poll() is not None  # stopped with the app
    verdict = check(history)
    assert verdict.operations >= 5000
    assert verdict.errors == 0
    assert verdict.workers == 2
    assert verdict.anomalies == 0, verdict.examples  # tabs included: none lost
    assert final == 40 * 42


def test_fixed_cache_answers_503_while_its_server_is_down_then_recovers(isolated_var_dir):
    """SIGKILL the server mid-load: 503s (never a 500, never a hang), then,
    once it is back, 200s again without restarting the app; and with the
    append-only file, no acknowledged increment is lost."""
    valkey = EmbeddedValkey(isolated_var_dir / "valkey").start()
    history, stop = [], threading.Event()
    try:
        with serve("fixed_cache", isolated_var_dir, REDIS_URL=valkey.url) as server:

            def load(n: int) -> None:
                client = Client(server.url, user=f"u{n}")
                while not stop.is_set():
                    history.append(client.increment())
                client.close()

            threads = [threading.Thread(target=load, args=(n,)) for n in range(8)]
            for thread in threads:
                thread.start()
            time.sleep(0.5)
            valkey.kill()
            killed = time.monotonic()
            time.sleep(1.5)
            restarting = time.monotonic()
            valkey = EmbeddedValkey(isolated_var_dir / "valkey").start()  # same files
            restarted = time.monotonic()
            time.sleep(1.0)
            stop.set()
            for thread in threads:
                thread.join()
            final = requests.get(server.url + "/counter", timeout=5).json()["value"]
    finally:
        valkey.stop()

    statuses = {e.status for e in history}
    assert statuses <= {200, 503}, statuses  # no 500, no dropped request
    assert max(e.end - e.start for e in history) < 1.5  # no hang: 503 within ~1 s
    down = [e for e in history if e.start > killed + 0.1 and e.end < restarting]
    assert down and all(e.status == 503 for e in down)
    assert any(e.status == 200 for e in history if e.start > restarted + 0.2)
    acknowledged = sum(e.status == 200 for e in history)
    assert acknowledged <= final <= len(history)  # none acknowledged was lost
