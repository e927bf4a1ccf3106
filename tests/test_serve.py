"""The launchers: the server shape the environment asks for is the one that runs."""

import pytest

from serve.processes import AppServer, free_port
from serve.valkey import EmbeddedValkey

pytestmark = pytest.mark.gunicorn


def test_the_environment_sets_the_number_of_workers(monkeypatch):
    # The README tells users to set GUNICORN_WORKERS; the launcher must not
    # override it with the shared config's default of 2.
    monkeypatch.setenv("GUNICORN_WORKERS", "3")
    monkeypatch.setenv("GUNICORN_THREADS", "1")
    with AppServer("broken_global", free_port()) as server:
        assert len(server.worker_pids) == 3
        assert server.shape() == "gunicorn gthread 3 workers x 1 threads"


def test_the_embedded_valkey_fsyncs_before_it_replies_unless_told_otherwise(tmp_path, monkeypatch):
    # "everysec" loses acknowledged writes to a badly timed kill (test_durability.py).
    command = EmbeddedValkey(tmp_path).command()
    assert command[command.index("--appendfsync") + 1] == "always"
    monkeypatch.setenv("VALKEY_APPENDFSYNC", "everysec")
    assert EmbeddedValkey(tmp_path).appendfsync == "everysec"
    monkeypatch.setenv("VALKEY_APPENDFSYNC", "sometimes")
    with pytest.raises(ValueError, match="VALKEY_APPENDFSYNC"):
        EmbeddedValkey(tmp_path)
