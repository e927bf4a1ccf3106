"""Running the apps: the shared gunicorn config, and processes started and
stopped by PID (used by `make run-*`, the demo, the load tests and the tests)."""
