"""Grade one exercise: import the learner's app first, then run the own-app
check on it under the exercise's shapes, and read back its JUnit report.

The check is `python -m loadtests.check` run as a program, through its
command line and files only (exit 0 no anomaly, 1 an anomaly, 2 a bad spec
or an app that does not start; one JUnit testcase per model and shape,
named "<model> [<shape>]", failed where an anomaly was found). Its whole
report is kept under var/practice/<exercise>/ for the learner to read.
"""

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from exercises.catalog import CHECK_SHAPES, REPO_ROOT, Exercise
from exercises.hints import ShapeResult, hints
from plumbing.config import var_dir
from serve.pids import cleanup_shielded, free_port, reaped, stop_process

PRECHECK = Path(__file__).resolve().parent / "precheck.py"
PRECHECK_SECONDS = 20
CHECK_SECONDS = 300  # the check bounds its own runs; this only ends one that hangs
STOP_SECONDS = 30
STOP_GRACE_SECONDS = 1.0  # after Ctrl-C, before the check is sent one of its own
TESTCASE = re.compile(r"^(?P<model>.+) \[(?P<shape>[^\]]+)\]$")
EVENT_LINE = re.compile(r"^\s+[+-]?\d+(\.\d+)?s\b")  # "  +0.1441s..+0.1503s  u26 ..."
WITNESS_LINES = 8


class Interrupted(Exception):
    """The learner saved again while the check ran: its verdict is moot."""


@dataclass
class Grade:
    exercise: Exercise
    app_dir: Path
    results: list[ShapeResult] = field(default_factory=list)
    pattern: str = ""
    hints: list[str] = field(default_factory=list)
    witness: str = ""  # the smallest witness, as the check wrote it
    problem: str = ""  # one paragraph when nothing could be graded
    report_dir: Path | None = None
    seconds: float = 0.0


def spec_env(exercise: Exercise, data_dir: Path, store_url: str = "") -> dict[str, str]:
    env = exercise.spec().get("app", {}).get("env", {})
    return {
        key: str(value).replace("{data}", str(data_dir)).replace("{store_url}", store_url)
        for key, value in env.items()
    }


@contextmanager
def spec_store(exercise: Exercise, data_dir: Path) -> Iterator[str]:
    """The store the spec's [app].store names, running for the precheck, as
    the check runs one for each shape: its URL, or "" for a spec without."""
    if exercise.spec().get("app", {}).get("store") != "valkey":
        yield ""
        return
    from serve.valkey import EmbeddedValkey  # redis: for the exercises with a store only

    with EmbeddedValkey(data_dir / "valkey", port=free_port()) as store:
        yield store.url


def precheck(exercise: Exercise, app_dir: Path) -> str:
    """ "" if the app imports and its factory makes an app; else one paragraph."""
    target = exercise.spec()["app"]["target"]
    shown = app_dir / "app.py"
    shown = shown.relative_to(REPO_ROOT) if shown.is_relative_to(REPO_ROOT) else shown
    with tempfile.TemporaryDirectory(prefix="precheck-") as data, ExitStack() as running:
        try:
            store_url = running.enter_context(spec_store(exercise, Path(data)))
        except (OSError, RuntimeError) as error:
            return f"The store the spec names did not start, so {shown} was not imported: {error}"
        env = {**os.environ, **spec_env(exercise, Path(data), store_url)}
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        try:
            done = subprocess.run(
                [sys.executable, str(PRECHECK), target],
                cwd=app_dir,
                env=env,
                capture_output=True,
                text=True,
                timeout=PRECHECK_SECONDS,
            )
        except subprocess.TimeoutExpired:
            return (
                f"Importing {shown} and making its app did not finish within "
                f"{PRECHECK_SECONDS} s: something at import or in create_app() waits forever."
            )
    lines = done.stdout.strip().splitlines()
    try:
        found = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"Importing {shown} ended the Python process ({last}): nothing could be graded."
    if found["ok"]:
        return ""
    where = f"{found['file'] or shown}, line {found['line']}"
    code = f": `{found['text']}`" if found["text"] else ""
    what = {
        "syntax": "is not valid Python",
        "import": "fails when it is imported",
        "create": f"is imported, but making its app ({target}) fails",
    }[found["stage"]]
    return (
        f"{shown} {what}: {found['error']}, at {where}{code}. "
        "Fix that line and grade again; no server was started."
    )


def check_is_present() -> bool:
    return importlib.util.find_spec("loadtests.check") is not None


def check_command(exercise: Exercise, app_dir: Path, report_dir: Path) -> list[str]:
    shapes = ",".join(CHECK_SHAPES[shape] for shape in exercise.shapes)
    return [
        sys.executable,
        "-m",
        "loadtests.check",
        exercise.spec()["app"]["target"],
        "--spec",
        str(exercise.spec_file),
        "--chdir",
        str(app_dir),
        "--shapes",
        shapes,
        "--junit",
        str(report_dir / "junit.xml"),
        "--json",
        str(report_dir / "check.json"),
    ]


def stop(check: subprocess.Popen) -> None:
    """As Ctrl-C would: the check stops the servers it started, then exits."""
    stop_process(check, STOP_SECONDS, signal.SIGINT)


def run(command: list[str], out: Path, interrupted: Callable[[], bool] | None) -> int:
    """Run the check, its output into `out`; on `interrupted`, stop it as
    Ctrl-C would (SIGINT, so that it stops the servers it started)."""
    with out.open("w") as sink:
        check = subprocess.Popen(command, cwd=REPO_ROOT, stdout=sink, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + CHECK_SECONDS
        try:
            while check.poll() is None:
                if interrupted and interrupted():
                    stop(check)
                    raise Interrupted
                if time.monotonic() > deadline:
                    stop(check)
                    return -1
                time.sleep(0.1)
        except KeyboardInterrupt:
            # Ctrl-C: the check stops its servers (and resumes a paused store)
            # first. A second Ctrl-C must not cut that wait short: the kill in
            # `finally` would leave the servers it has not stopped yet.
            with cleanup_shielded((signal.SIGINT,)):
                if not reaped(check, STOP_GRACE_SECONDS):  # it had the terminal's SIGINT too
                    stop(check)
            raise
        finally:
            if not reaped(check, 0):
                check.kill()
                reaped(check, None)
    return check.returncode


def read_junit(path: Path, exercise: Exercise) -> list[ShapeResult]:
    """Each of the exercise's shapes: failed if any model failed under it,
    skipped if every model was skipped, passed otherwise."""
    kinds = exercise.models()
    by_check_name = {check: mine for mine, check in CHECK_SHAPES.items()}
    cases: dict[str, list[tuple[str, str, str]]] = {}  # shape -> (model, verdict, text)
    for case in ET.parse(path).getroot().iter("testcase"):
        match = TESTCASE.match(case.get("name", ""))
        if not match or match["shape"] not in by_check_name:
            continue
        verdict, text = "passed", ""
        for tag, name in (("failure", "failed"), ("error", "failed"), ("skipped", "skipped")):
            found = case.find(tag)
            if found is not None:
                verdict = name
                text = "\n".join(filter(None, (found.get("message"), found.text)))
                break
        cases.setdefault(by_check_name[match["shape"]], []).append((match["model"], verdict, text))
    results = []
    for shape in exercise.shapes:
        found = cases.get(shape)
        if not found:
            results.append(ShapeResult(shape, "skipped", reason="not in the check's report"))
            continue
        failed = [(model, text) for model, verdict, text in found if verdict == "failed"]
        if failed:
            results.append(
                ShapeResult(
                    shape,
                    "failed",
                    failed_kinds=tuple(kinds.get(model, "") for model, _ in failed),
                    witness="\n".join(text for _, text in failed),
                )
            )
        elif all(verdict == "skipped" for _, verdict, _ in found):
            results.append(ShapeResult(shape, "skipped", reason=found[0][2] or "skipped"))
        else:
            results.append(ShapeResult(shape, "passed"))
    return results


def witness_blocks(text: str) -> list[str]:
    """Each witness in the check's words: a line saying what was found, then
    the requests that prove it, one per more-indented line."""
    lines = text.splitlines()
    blocks = []
    for number, line in enumerate(lines):
        if not line.strip() or EVENT_LINE.match(line):
            continue
        events = []
        for following in lines[number + 1 :]:
            if not EVENT_LINE.match(following):
                break
            events.append(following)
        if events:
            blocks.append("\n".join([line, *events[:WITNESS_LINES]]))
    return blocks


def smallest_witness(results: list[ShapeResult], output: str) -> tuple[str, str]:
    """(shape, witness): the shortest witness of the first shape that failed
    with one; else the shortest in the check's whole output."""
    for result in results:
        if result.verdict == "failed" and (blocks := witness_blocks(result.witness)):
            return result.shape, min(blocks, key=lambda block: block.count("\n"))
    blocks = witness_blocks(output)
    return "", min(blocks, key=lambda block: block.count("\n")) if blocks else ""


def grade(
    exercise: Exercise,
    app_dir: Path | None = None,
    interrupted: Callable[[], bool] | None = None,
) -> Grade:
    """Grade the app in `app_dir` (the learner's folder unless told)."""
    app_dir = app_dir or exercise.folder
    started = time.monotonic()
    result = Grade(exercise, app_dir)
    if problem := precheck(exercise, app_dir):
        result.problem = problem
        return result
    if not check_is_present():
        result.problem = (
            "The own-app check (loadtests.check) is not in this checkout, and grading is that "
            "check: your app imports and starts, but nothing could be run against it."
        )
        return result
    report_dir = var_dir() / "practice" / exercise.slug
    report_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("junit.xml", "check.json"):
        (report_dir / stale).unlink(missing_ok=True)
    output_file = report_dir / "check.txt"
    code = run(check_command(exercise, app_dir, report_dir), output_file, interrupted)
    output = output_file.read_text()
    result.report_dir = report_dir
    result.seconds = time.monotonic() - started
    if code not in (0, 1) or not (report_dir / "junit.xml").is_file():
        said = " ".join(output.strip().splitlines()[-6:]) or "nothing"
        why = "did not finish in time" if code == -1 else f"exited with {code}"
        result.problem = (
            f"The check could not grade {app_dir.name}/app.py: it {why} and said: {said}"
        )
        return result
    result.results = read_junit(report_dir / "junit.xml", exercise)
    if code == 1 and not any(r.verdict == "failed" for r in result.results):
        # An anomaly the report does not tie to a shape: count every shape as failed.
        result.results = [
            ShapeResult(r.shape, "failed", witness=output) if r.verdict == "passed" else r
            for r in result.results
        ]
    result.pattern, result.hints = hints(result.results, exercise.number)
    shape, result.witness = smallest_witness(result.results, output)
    if shape:
        result.witness = f"({shape})\n{result.witness}"
    return result
