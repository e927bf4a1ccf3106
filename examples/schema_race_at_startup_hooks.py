"""gunicorn's config for schema_race_at_startup's fix: the schema made once, in the master.

    python -m gunicorn --config python:examples.schema_race_at_startup_hooks \\
        --workers 2 "examples.schema_race_at_startup:create_app('migrated')"

on_starting runs in gunicorn's master before it forks any worker, once per
start, so no two processes race; the workers find the table made. A deploy
step or a CLI command run before the server (`flask --app ... init-db`) does
the same job, once.
"""

import os

from examples.schema_race_at_startup import create_schema


def on_starting(server) -> None:
    create_schema(os.environ["DATABASE"])
