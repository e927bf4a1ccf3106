"""The launchers: the server shape the environment asks for is the one that runs."""

import pytest

from serve.processes import AppServer, free_port

pytestmark = pytest.mark.gunicorn


def test_the_environment_sets_the_number_of_workers(monkeypatch):
    # The README tells users to set GUNICORN_WORKERS; the launcher must not
    # override it with the shared config's default of 2.
    monkeypatch.setenv("GUNICORN_WORKERS", "3")
    monkeypatch.setenv("GUNICORN_THREADS", "1")
    with AppServer("broken_global", free_port()) as server:
        assert len(server.worker_pids) == 3
        assert server.shape() == "gunicorn gthread 3 workers x 1 threads"
