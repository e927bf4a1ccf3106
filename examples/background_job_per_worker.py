"""A background job only its worker knows, and that dies with it.

`POST /jobs` starts the work in a ThreadPoolExecutor of the worker that took
the request and answers 202 with an id; `GET /jobs/<id>` reads a status dict.
Both live in that worker process. Under gunicorn with 2 sync workers, the
other worker answers 404 for a job that finished: "job not found" half the
time. And a worker does not live as long as its jobs: with `--max-requests`
(or a deploy, or a crash) it retires, and the status goes with it. When it
retires, Python waits for the executor's thread before the process ends,
but gunicorn's arbiter kills a worker silent for longer than `--timeout`:
the job is cut off and its work never done.

    python -m gunicorn --workers 2 --max-requests 8 --timeout 2 \\
        examples.background_job_per_worker:app

A run, job by job:

    in the worker:  finished on A, 404 on B; with --max-requests, 404 on every
                    worker after A retired, and the report never written
    RQ on Valkey:   finished on A and on B; with --max-requests, finished, the
                    report written by the RQ worker

The fix: the status in the store and the work in a job queue with its own
worker process: RQ on Valkey, the smallest real one (a queue and a status
per job in the Redis-protocol server the app already has, `rq worker` to run
them). Its default Worker forks a work horse per job, so a job that crashes
or hangs past its timeout is killed without taking the worker down; web
workers can come and go meanwhile.
"""

import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import redis
import requests
import rq
from flask import Flask, request
from rq.exceptions import NoSuchJobError
from rq.job import Job

from examples.servers import Gunicorn, at_once, stamp_worker, worker_of
from plumbing.config import REPO_ROOT
from serve.pids import Service, spawn, stop_process
from serve.valkey import EmbeddedValkey

LABEL = "proven"
SHORT_JOB_SECONDS = 0.2
LONG_JOB_SECONDS = 5.0  # longer than the --timeout of the recycled worker
WORKER_TIMEOUT = "2"  # gunicorn --timeout: a worker silent this long is killed
MAX_REQUESTS = "8"  # a few after start-up, whatever the start-up check cost
WEEKLY_RESULT = "report weekly ready"
WAIT_SECONDS = 10.0


def build_report(name: str, seconds: float, done_dir: str) -> str:
    """The work: slow, and with an effect (a file written, standing in for an email sent)."""
    time.sleep(seconds)
    Path(done_dir, name).write_text("done")
    return f"report {name} ready"


# In the worker process: its threads and what it knows of its jobs.
executor = ThreadPoolExecutor(max_workers=2)
jobs: dict[str, dict] = {}
# The job started last: its id and name, at GET /jobs/latest, which
# python -m loadtests.check reads (loadtests/check/specs/background_job.toml).
latest: dict[str, str] = {}
app = stamp_worker(Flask(__name__))
NO_JOB = {"id": None, "name": None, "status": None}


def run_job(job_id: str, name: str, seconds: float) -> None:
    jobs[job_id]["status"] = "started"
    result = build_report(name, seconds, os.environ["JOBS_DONE_DIR"])
    jobs[job_id].update(status="finished", result=result)


@app.post("/jobs")
def start_job():
    job_id = uuid.uuid4().hex
    jobs[job_id] = {"status": "queued"}
    latest.update(id=job_id, name=request.json["name"])
    executor.submit(run_job, job_id, request.json["name"], float(request.json["seconds"]))
    return {"id": job_id}, 202


@app.get("/jobs/latest")
def latest_job():
    return {**latest, "status": jobs[latest["id"]]["status"]} if latest else NO_JOB


@app.get("/jobs/<job_id>")
def job_status(job_id: str):
    if job_id not in jobs:
        return {"error": "not found", "id": job_id}, 404
    return jobs[job_id]


def create_queued_app() -> Flask:
    """The fix: the same routes, the job in RQ on Valkey (REDIS_URL)."""
    queued = stamp_worker(Flask(__name__))
    valkey = redis.Redis.from_url(os.environ["REDIS_URL"])
    reports = rq.Queue("reports", connection=valkey)

    @queued.post("/jobs")
    def start_job():
        name, seconds = request.json["name"], float(request.json["seconds"])
        job = reports.enqueue(build_report, name, seconds, os.environ["JOBS_DONE_DIR"])
        valkey.hset("jobs:latest", mapping={"id": job.id, "name": name})
        return {"id": job.id}, 202

    @queued.get("/jobs/latest")
    def latest_job():
        found = {k.decode(): v.decode() for k, v in valkey.hgetall("jobs:latest").items()}
        if not found:
            return NO_JOB
        try:
            status = Job.fetch(found["id"], connection=valkey).get_status().value
        except NoSuchJobError:  # expired with its result
            status = None
        return {**found, "status": status}

    @queued.get("/jobs/<job_id>")
    def job_status(job_id: str):
        try:
            job = Job.fetch(job_id, connection=valkey)
        except NoSuchJobError:
            return {"error": "not found", "id": job_id}, 404
        status = job.get_status()
        body = {"status": status.value}
        if status == rq.job.JobStatus.FINISHED:
            body["result"] = job.return_value()
        return body

    return queued


class RqWorker(Service):
    """`rq worker` in a process of its own, stopped by PID (SIGTERM: it
    finishes the job in hand, then exits)."""

    def __init__(self, redis_url: str, log: Path) -> None:
        self.redis_url, self.log = redis_url, log
        self.process: subprocess.Popen | None = None

    def start(self) -> Self:
        command = [
            sys.executable, "-m", "rq.cli", "worker", "reports",
            "--url", self.redis_url, "--path", str(REPO_ROOT), "--quiet",
        ]  # fmt: skip
        with self.log.open("ab") as log:
            self.process = spawn(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
        connection = redis.Redis.from_url(self.redis_url)
        deadline = time.monotonic() + WAIT_SECONDS
        while not rq.Worker.all(connection=connection):  # registered: it takes jobs now
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"rq worker did not start:\n{self.log.read_text()}")
            time.sleep(0.05)
        connection.close()
        return self

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


@dataclass
class Recycled:
    known_on_a: list  # what A answered for the long job, until it retired
    retired: bool  # A exited
    killed_by_timeout: bool  # gunicorn logged "WORKER TIMEOUT" for A
    last: tuple[int, dict]  # then, from the other workers
    last_by: int
    report_written: bool  # the long job's work was done


@dataclass
class Run:
    on_a: dict  # the status A answered once the short job was done
    on_b: tuple[int, dict]  # B's status code and answer for the same job
    recycled: Recycled

    def describe(self) -> str:
        recycled, (code, answer) = self.recycled, self.on_b
        last_code, last = recycled.last
        killed = ", killed by WORKER TIMEOUT" if recycled.killed_by_timeout else ""
        return (
            f"finished on A, {answer.get('status', code)} on B; with --max-requests, A "
            f"answered {'/'.join(dict.fromkeys(map(str, recycled.known_on_a)))}, "
            f"{'retired' if recycled.retired else 'did not retire'}{killed}, then "
            f"{last.get('status', last_code)} on another worker, report "
            f"{'written' if recycled.report_written else 'never written'}"
        )


def post_job(url: str, name: str, seconds: float) -> requests.Response:
    response = requests.post(url + "/jobs", json={"name": name, "seconds": seconds}, timeout=5)
    response.raise_for_status()
    return response


def status(url: str, job_id: str) -> requests.Response:
    return requests.get(f"{url}/jobs/{job_id}", timeout=5)


def wait_until_finished(url: str, job_id: str) -> dict:
    deadline = time.monotonic() + WAIT_SECONDS
    while (answer := status(url, job_id).json()).get("status") != "finished":
        if time.monotonic() > deadline:
            return answer
        time.sleep(0.05)
    return answer


def jobs_on_two_workers(target: str, env: dict[str, str]) -> tuple[dict, tuple[int, dict]]:
    """A short job started on A, read on A once done, then on B."""
    with Gunicorn(target, workers=2, env=env) as server:
        a, b = server.worker_pids
        with server.only(a):
            job_id = post_job(server.url, "daily", SHORT_JOB_SECONDS).json()["id"]
            on_a = wait_until_finished(server.url, job_id)
        with server.only(b):
            answer = status(server.url, job_id)
        return on_a, (answer.status_code, answer.json())


def job_outlived_by_its_worker(target: str, env: dict[str, str], done_dir: Path) -> Recycled:
    """A long job started on A; A is asked until it retires (--max-requests),
    then any worker is asked until the answer settles."""
    options = ["--max-requests", MAX_REQUESTS, "--timeout", WORKER_TIMEOUT]
    with Gunicorn(target, workers=2, env=env, options=options) as server:
        a = server.worker_pids[0]
        known_on_a = []
        with server.only(a):
            job_id = post_job(server.url, "weekly", LONG_JOB_SECONDS).json()["id"]
            posted_at = time.monotonic()
            # Each answer counts towards A's --max-requests; gunicorn logs the
            # last one as it takes it, and A accepts no more after it.
            retiring = f"[{a}] [INFO] Autorestarting worker after current request"
            while retiring not in server.log_tail(lines=200):
                if time.monotonic() > posted_at + WAIT_SECONDS:
                    break
                answer = status(server.url, job_id)
                known_on_a.append(answer.json().get("status", answer.status_code))
        deadline = time.monotonic() + WAIT_SECONDS
        while time.monotonic() < deadline:
            answer = status(server.url, job_id)
            settled = answer.status_code == 404 or answer.json().get("status") == "finished"
            if settled and not server.is_my_worker(a):
                break
            time.sleep(0.1)
        retired = not server.is_my_worker(a)
        # Had the job gone on, its report would be written by now.
        time.sleep(max(0.0, posted_at + LONG_JOB_SECONDS + 0.5 - time.monotonic()))
        killed = f"WORKER TIMEOUT (pid:{a})" in server.log_tail(lines=200)
        return Recycled(
            known_on_a,
            retired,
            killed,
            (answer.status_code, answer.json()),
            worker_of(answer),
            (done_dir / "weekly").exists(),
        )


@dataclass
class Finding:
    in_worker: Run
    queued: Run

    @property
    def holds(self) -> bool:
        broken, fixed = self.in_worker, self.queued
        return (
            broken.on_a.get("status") == "finished"
            and broken.on_b[0] == 404
            and broken.recycled.retired
            and broken.recycled.last[0] == 404
            and not broken.recycled.report_written
            and fixed.on_a.get("status") == "finished"
            and fixed.on_b == (200, fixed.on_a)
            and fixed.recycled.retired
            and fixed.recycled.last == (200, {"status": "finished", "result": WEEKLY_RESULT})
            and fixed.recycled.report_written
        )

    def summary(self) -> str:
        return (
            f"in a ThreadPoolExecutor and a dict: {self.in_worker.describe()}; "
            f"in RQ on Valkey: {self.queued.describe()}"
        )


def prove() -> Finding:
    this = "examples.background_job_per_worker"

    def run(target: str, env: dict[str, str], done_dir: Path) -> Run:
        (on_a, on_b), recycled = at_once(
            lambda: jobs_on_two_workers(target, env),
            lambda: job_outlived_by_its_worker(target, env, done_dir),
        )
        return Run(on_a, on_b, recycled)

    def in_worker() -> Run:
        with tempfile.TemporaryDirectory() as directory:
            return run(f"{this}:app", {"JOBS_DONE_DIR": directory}, Path(directory))

    def queued() -> Run:
        with tempfile.TemporaryDirectory() as directory, contextlib.ExitStack() as stack:
            folder = Path(directory)
            (folder / "done").mkdir()
            valkey = stack.enter_context(EmbeddedValkey(folder / "valkey"))
            stack.enter_context(RqWorker(valkey.url, folder / "rq.log"))
            env = {"JOBS_DONE_DIR": str(folder / "done"), "REDIS_URL": valkey.url}
            return run(f"{this}:create_queued_app()", env, folder / "done")

    return Finding(*at_once(in_worker, queued))
