"""Locust's hooks for the correctness checks (loadtests/swarm/locustfile.py imports
this module, which registers them).

The master, or a Locust process on its own:
    test start   a new history (Reset Stats too); the counter reset and read
                 on every app process it reaches (relay.Recorder.sweep): the
                 baseline each process's values are judged from
    every second a point of the anomalies-over-time chart; every 10 s a line
                 of the correctness on the console
    test stop    every worker's last events, then the final reads
    quitting     the summary; the section in --html's report and the CSVs
                 beside --csv's; the exit code of a headless run
A worker (distributed): sends what its users record (relay.py).
"""

import logging
import time
from pathlib import Path
from typing import Any

import gevent
import requests
from locust import events
from locust.env import Environment
from locust.runners import (
    STATE_CLEANUP,
    STATE_RUNNING,
    STATE_SPAWNING,
    MasterRunner,
    WorkerRunner,
)

from loadtests.swarm.correctness_tab import format_line, format_summary, problems
from loadtests.swarm.correctness_web import add_correctness_tab, write_reports
from loadtests.swarm.relay import EPOCH, EVENTS, GRACEFUL_STOP_SECONDS, HELLO, RUN, SYNC
from registry import APPS

log = logging.getLogger(__name__)

HARNESS = "master: resets and reads"  # the load generator the master's own requests count under
LINE_SECONDS = 10.0  # how often a running test prints a line of its correctness


@events.init_command_line_parser.add_listener
def add_options(parser: Any) -> None:
    parser.add_argument(
        "--more-hosts",
        default="",
        include_in_web_ui=False,
        help="comma-separated base URLs of further instances of the same app",
    )
    parser.add_argument(
        "--judge-as",
        choices=list(APPS),
        default=None,
        include_in_web_ui=False,
        help="judge the run by this app's rules instead of those of the app /healthz names",
    )
    parser.add_argument(
        "--app-workers",
        type=int,
        default=0,
        include_in_web_ui=False,
        help="the app's worker processes, for the reset and reads to reach each (0: unknown)",
    )
    parser.add_argument(
        "--correctness-history",
        default="",
        include_in_web_ui=False,
        help="also write every recorded event to this file, as JSON lines (for tests)",
    )


@events.init.add_listener
def on_init(environment: Environment, **_kwargs: Any) -> None:
    RUN.environment = environment
    if not environment.stop_timeout:
        # Killed mid-request, an increment would be counted by the app and not
        # by us, and the final read would look wrong.
        environment.stop_timeout = GRACEFUL_STOP_SECONDS
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        runner.register_message(EPOCH, on_epoch)
        runner.register_message(SYNC, on_sync, concurrent=True)
        runner.greenlet.spawn(RUN.keep_flushing)
        runner.send_message(HELLO)  # connected before this file's hooks were in place
        return
    if isinstance(runner, MasterRunner):
        runner.register_message(EVENTS, lambda msg, **_: RUN.receive(msg.node_id, msg.data))
        runner.register_message(HELLO, lambda msg, **_: on_hello(msg.node_id))
    if path := getattr(environment.parsed_options, "correctness_history", ""):
        RUN.history = Path(path).open("w", buffering=1)  # noqa: SIM115  (closed when quitting)
    if runner is not None:
        runner.greenlet.spawn(keep_reporting, environment)
    if environment.web_ui:
        add_correctness_tab(environment)


def keep_reporting(environment: Environment) -> None:
    printed = time.monotonic()
    while True:
        gevent.sleep(1.0)
        if environment.runner.state not in (STATE_RUNNING, STATE_SPAWNING):
            continue
        RUN.tally.sample()
        if time.monotonic() - printed >= LINE_SECONDS:
            print(format_line(RUN.tally.verdict()), flush=True)
            printed = time.monotonic()


def on_hello(worker: str) -> None:
    RUN.workers.add(worker)
    RUN.tell_epoch(worker)  # a worker that joins late records for the current test


def on_epoch(environment: Environment, msg: Any, **_kwargs: Any) -> None:
    RUN.epoch = msg.data["epoch"]
    RUN.outbox.clear()


def on_sync(environment: Environment, msg: Any, **_kwargs: Any) -> None:
    runner = environment.runner
    if runner.state in (STATE_RUNNING, STATE_SPAWNING):
        runner.stop()  # gracefully: each user finishes the request it is in
    while runner.state == STATE_CLEANUP:  # a stop the master asked for, still under way
        gevent.sleep(0.05)
    RUN.flush(sync_round=msg.data["sync_round"])


def app_workers(environment: Environment) -> int:
    return getattr(environment.parsed_options, "app_workers", 0) or 0


@events.test_start.add_listener
def on_test_start(environment: Environment, **_kwargs: Any) -> None:
    if RUN.is_worker:
        RUN.outbox.clear()
        return
    RUN.new_epoch()  # a new test, a new history (Locust clears its statistics too)
    app = RUN.app_client()
    try:
        served = app.app_name()
    except (requests.RequestException, ValueError, KeyError) as error:
        log.error("%s/healthz did not say which app it is: %s", app.base_urls[0], error)
        served = "unknown"
    finally:
        app.close()
    RUN.served_app = served
    RUN.app = getattr(environment.parsed_options, "judge_as", None) or served
    # Each process's counter from 0, as far as the resets reach; the reads say
    # where each process starts from, reached or not (writes.baselines).
    workers = app_workers(environment)
    RUN.judge([RUN.sweep("reset", workers), RUN.sweep("read", workers)], HARNESS)


@events.test_stop.add_listener
def on_test_stop(environment: Environment, **_kwargs: Any) -> None:
    if RUN.is_worker:
        RUN.flush()
        return
    if RUN.is_master:
        RUN.gather_from_workers()
    # Every user has stopped and everything is in: the counter's final value.
    RUN.judge([RUN.sweep("read", app_workers(environment))], HARNESS)
    RUN.tally.sample(force=True)


@events.reset_stats.add_listener
def on_reset_stats(**_kwargs: Any) -> None:
    # Tasks under way when the button is pressed are dropped whole (see Recorder).
    # Users keep running, so there is no baseline: the final read is not judged.
    RUN.new_epoch()


@events.quitting.add_listener
def on_quitting(environment: Environment, **_kwargs: Any) -> None:
    if RUN.is_worker:
        return
    if environment.runner.state in (STATE_RUNNING, STATE_SPAWNING):
        environment.runner.stop()  # Ctrl-C mid-test: stop cleanly, then sum it up
    verdict = RUN.tally.verdict()
    headless = bool(environment.parsed_options and environment.parsed_options.headless)
    if verdict.operations or headless:
        print(format_summary(verdict), flush=True)
    if environment.parsed_options:
        for path in write_reports(environment):
            print(f"correctness written to {path}", flush=True)
    if headless:
        environment.process_exit_code = 1 if problems(verdict) else 0
    if RUN.history:
        RUN.history.close()
