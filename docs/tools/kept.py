"""Runs too slow or too disruptive for every `make docs-results`, kept once with
their date, machine and command, and rendered into the pages' blocks.

    python -m docs.tools.kept NAME    # run it for real, keep its output, rewrite the blocks

Each NAME below is one command. Its whole output goes to
docs/results/kept/NAME.txt and what ran to NAME.json (when, on what machine,
with which packages, the exit code); a block `results kept-NAME` shows the
output with that stamp. Nothing here is typed by hand: a page's figure comes
from such a file, or from the results run (docs/tools/results.py).
"""

import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

from docs.tools import DOCS_DIR, REPO_ROOT, results

KEPT_DIR = DOCS_DIR / "results" / "kept"
SHOP_CHECK = ["python", "-m", "loadtests.check", "--spec", "examples/shop/shop.toml"]
SHOP_CHECK += ["--shapes", "gthread,sync,gevent,uwsgi,flask", "--chdir"]  # then the shop's folder
# NAME: (environment settings, command), the command as a reader would type it.
RUNS: dict[str, tuple[dict[str, str], list[str]]] = {
    "faults-postgres": ({"FIXED_DB_BACKEND": "postgres"}, ["python", "-m", "loadtests.faults.run"]),
    "stall-cache": ({}, ["python", "-m", "loadtests.faults.stall", "fixed_cache"]),
    "stall-postgres": ({}, ["python", "-m", "loadtests.faults.stall", "fixed_db"]),
    "durability": ({}, ["python", "-m", "pytest", "-s", "-q", "tests/test_durability.py"]),
    "examples": ({}, ["python", "-m", "examples"]),
    "bench": ({}, ["python", "-m", "loadtests.runs.bench", "--wrk"]),
    "bench-postgres": (
        {"FIXED_DB_BACKEND": "postgres"},
        ["python", "-m", "loadtests.runs.bench", "fixed_db", "--wrk"],
    ),
    "in-process": ({}, ["python", "-m", "loadtests.runs.in_process"]),
    "in-process-postgres": (
        {"FIXED_DB_BACKEND": "postgres"},
        ["python", "-m", "loadtests.runs.in_process", "fixed_db"],
    ),
    "hot-row": ({}, ["python", "-m", "loadtests.runs.hot_row"]),
    "check-shop-broken": ({}, [*SHOP_CHECK, "examples/shop/broken"]),
    "check-shop-fixed": ({}, [*SHOP_CHECK, "examples/shop/fixed"]),
    "grades": ({}, ["python", "-m", "exercises.bench"]),
}
# A run that met its expectations exits 0, but for a check that must find
# anomalies (exit 1: the broken shop fails its check).
EXPECTED_EXIT = {"check-shop-broken": 1}
# The lines a page shows, where not the whole output (pytest's own lines go).
TABLE = re.compile(r"^(model |[a-z_]+ \([a-z_]+\) |\d+ of \d+ cells|no anomaly found)")
SHOWN = {
    "durability": re.compile(r" acknowledged, \d+ lost$|^\d+ passed"),
    "check-shop-broken": TABLE,  # the table; the witnesses are in the kept file
    "check-shop-fixed": TABLE,
}


def command_line(name: str) -> str:
    env, argv = RUNS[name]
    return " ".join([*(f"{k}={v}" for k, v in env.items()), *argv])


def keep(name: str) -> int:
    """Run NAME for real and keep its output and record."""
    env, argv = RUNS[name]
    started = datetime.now(UTC)
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, *argv[1:]],
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    KEPT_DIR.mkdir(parents=True, exist_ok=True)
    output = done.stdout.replace(f"{REPO_ROOT}/", "")
    (KEPT_DIR / f"{name}.txt").write_text(output)
    record = {
        "started": started.isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - began, 1),
        "command": command_line(name),
        "exit_code": done.returncode,
        "machine": results.machine(),
        "packages": results.packages(),
    }
    (KEPT_DIR / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    print(output, end="")
    print(f"kept: docs/results/kept/{name}.txt (then make docs-blocks)")
    return done.returncode


def load(name: str) -> tuple[dict[str, Any], str] | None:
    record, output = KEPT_DIR / f"{name}.json", KEPT_DIR / f"{name}.txt"
    if not record.exists() or not output.exists():
        return None
    return json.loads(record.read_text()), output.read_text()


def render(name: str) -> str:
    """The kept output of NAME, under a line saying when, where and how it ran."""
    if name not in RUNS:
        raise ValueError(f"no kept run named {name!r}: one of {', '.join(RUNS)}")
    kept = load(name)
    if kept is None:
        return f"_Not kept yet: `python -m docs.tools.kept {name}` runs it._"
    record, output = kept
    machine = record["machine"]
    shown = SHOWN.get(name)
    lines = [
        line
        for line in output.splitlines()
        if line.strip()
        and not line.startswith(("results:", "kept:"))
        and (shown is None or shown.search(line))
    ]
    stamp = (
        f"Kept run of {record['started'][:10]} ({record['started'][11:16]} UTC, "
        f"{record['seconds']:.0f} s, exit code {record['exit_code']}) on {machine['cores']} "
        f"cores, {machine['python']}: `{record['command']}`, kept by "
        f"`python -m docs.tools.kept {name}`, not rerun by `make docs-results`."
    )
    return f"<small>{stamp}</small>\n\n```text\n" + "\n".join(lines) + "\n```"


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in RUNS:
        print(__doc__)
        print("NAME: " + " | ".join(f"{n} ({command_line(n)})" for n in RUNS))
        return 2
    return keep(argv[0])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
