""" "Working outside of application context": where it is raised, and the fix.

`current_app` and `g` exist only while an application context is pushed:
during a request, or inside `with app.app_context():`. Two places people
reach for them without one:

- at start-up, in the app factory or at import (reading `current_app.config`
  to set up a client): gunicorn's worker fails to boot, and gunicorn stops;
- in a thread started by a view to do the work later (send a report): the
  request has ended, its context is gone, and the thread gets the error
  while the request has already answered 202.

    python -m gunicorn --workers 1 'examples.outside_app_context:create_app()'

A run: the factory that reads current_app at start-up makes gunicorn exit
with "Working outside of application context"; the thread started by a view
records the same error; with `with app.app_context():` around the start-up
code, and the app itself (not the proxy) handed to the thread, which pushes
its own context, both work.

The fix is not to push a context at import and leave it (half-fixes.md #3).
"""

import threading
import time
from dataclasses import dataclass

import requests
from flask import Flask, current_app

from examples.servers import Gunicorn, at_once, stamp_worker

LABEL = "proven"
RECIPIENT = "ops@example.com"
WAIT_SECONDS = 5.0
SENT_IN_CONTEXT = f"report weekly-send-in-context sent to {RECIPIENT}"

outcomes: dict[str, str] = {}  # report id -> what its thread did (one worker: one dict)


def send_report(report_id: str) -> str:
    """Needs an application context: it reads the configuration of the current app."""
    return f"report {report_id} sent to {current_app.config['REPORT_RECIPIENT']}"


def record(report_id: str, work) -> None:
    try:
        outcomes[report_id] = work()
    except RuntimeError as error:
        outcomes[report_id] = f"RuntimeError: {str(error).splitlines()[0]}"


def recipient_from_config() -> str:
    """Start-up code that reads the app's configuration through current_app."""
    return current_app.config["REPORT_RECIPIENT"]


def create_app(context_at_start_up: bool = True) -> Flask:
    app = stamp_worker(Flask(__name__))
    app.config["REPORT_RECIPIENT"] = RECIPIENT
    if context_at_start_up:
        with app.app_context():  # the fix for start-up code
            app.extensions["report_recipient"] = recipient_from_config()
    else:
        app.extensions["report_recipient"] = recipient_from_config()  # no context: raises

    @app.post("/reports/<report_id>/send")
    def send_later(report_id: str):
        thread = threading.Thread(target=record, args=(report_id, lambda: send_report(report_id)))
        thread.start()  # the request ends, and its context with it
        return {"id": report_id}, 202

    @app.post("/reports/<report_id>/send-in-context")
    def send_later_in_context(report_id: str):
        the_app = current_app._get_current_object()  # the app itself, not the proxy

        def work() -> str:
            with the_app.app_context():  # the fix for a thread: push its own
                return send_report(report_id)

        threading.Thread(target=record, args=(report_id, work)).start()
        return {"id": report_id}, 202

    @app.get("/reports/<report_id>")
    def outcome(report_id: str):
        return {"id": report_id, "outcome": outcomes.get(report_id)}

    return app


@dataclass
class Boot:
    booted: bool
    log: str

    @property
    def error(self) -> str | None:
        marker = "RuntimeError: Working outside of application context"
        return marker if marker in self.log else None


def boot(target: str) -> Boot:
    try:
        with Gunicorn(target, workers=1) as server:
            return Boot(True, server.log_tail(lines=60))
    except RuntimeError as error:  # gunicorn exited at start-up: its log says why
        return Boot(False, str(error))


def send_reports() -> dict[str, str]:
    """One report through each route; what each thread did."""
    found = {}
    with Gunicorn("examples.outside_app_context:create_app()", workers=1) as server:
        for route in ("send", "send-in-context"):
            report_id = f"weekly-{route}"
            answer = requests.post(f"{server.url}/reports/{report_id}/{route}", timeout=5)
            answer.raise_for_status()
            deadline = time.monotonic() + WAIT_SECONDS
            while time.monotonic() < deadline:
                outcome = requests.get(f"{server.url}/reports/{report_id}", timeout=5).json()
                if outcome["outcome"] is not None:
                    break
                time.sleep(0.05)
            found[route] = outcome["outcome"]
    return found


@dataclass
class Finding:
    without_context: Boot
    with_context: Boot
    threads: dict[str, str | None]  # route -> what its thread did

    @property
    def holds(self) -> bool:
        return (
            not self.without_context.booted
            and self.without_context.error is not None
            and self.with_context.booted
            and (self.threads["send"] or "").startswith(
                "RuntimeError: Working outside of application context"
            )
            and self.threads["send-in-context"]
            == f"report weekly-send-in-context sent to {RECIPIENT}"
        )

    def summary(self) -> str:
        return (
            f"current_app at start-up: gunicorn "
            f"{'booted' if self.without_context.booted else 'exited'}"
            f"{' (' + self.without_context.error + ')' if self.without_context.error else ''}; "
            f"inside with app.app_context(): {'booted' if self.with_context.booted else 'exited'}; "
            f"a thread started by a view: {self.threads['send']!r}; the app handed to the "
            f"thread, which pushes its context: {self.threads['send-in-context']!r}"
        )


def prove() -> Finding:
    this = "examples.outside_app_context"
    without_context, with_context, threads = at_once(
        lambda: boot(f"{this}:create_app(context_at_start_up=False)"),
        lambda: boot(f"{this}:create_app()"),
        send_reports,
    )
    return Finding(without_context, with_context, threads)
