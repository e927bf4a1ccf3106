"""Plumbing shared by all four apps, written once because it is not the lesson.

create_base_app() (app.py) returns a Flask app that already answers JSON
errors, limits body size, stamps X-Worker on every response, knows the
user-id cookie, has its secret key and serves GET /healthz. Each app folder
adds its state strategy and the six routes of the HTTP contract in README.md,
and the page for people at GET / (plumbing/page.py). Imported by the apps;
never starts processes.

The names below load their module on first use (PEP 562): the launchers and
the harness import plumbing.config alone, and would otherwise import Flask
for nothing, most of a launcher's start-up CPU.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plumbing.app import create_base_app, do_some_work
    from plumbing.config import setting
    from plumbing.http import article_from_body, name_from_query, unavailable_when
    from plumbing.idempotency import idempotent
    from plumbing.page import visits_page
    from plumbing.users import current_user_id

__all__ = [
    "article_from_body",
    "create_base_app",
    "current_user_id",
    "do_some_work",
    "idempotent",
    "name_from_query",
    "setting",
    "unavailable_when",
    "visits_page",
]
MODULES = {
    "article_from_body": "http",
    "create_base_app": "app",
    "current_user_id": "users",
    "do_some_work": "app",
    "idempotent": "idempotency",
    "name_from_query": "http",
    "setting": "config",
    "unavailable_when": "http",
    "visits_page": "page",
}


def __getattr__(name: str) -> Any:
    if name not in MODULES:
        raise AttributeError(f"module 'plumbing' has no attribute {name!r}")
    return getattr(importlib.import_module(f"plumbing.{MODULES[name]}"), name)
