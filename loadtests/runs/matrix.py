"""The correctness matrix: every app under every server shape, one run each.

    python -m loadtests.runs.matrix                      # make matrix: CSV and heatmap

Which shape of server breaks which app, read from recorded histories: the
shapes are serve/processes.py SHAPES (Flask's development server, gunicorn
sync, gthread and gevent, and uWSGI, which loads the app in its master
before it forks). The expected picture and why each cell is what it is are
in loadtests/README.md (Server shapes); a real run's is in docs/results/.
"""

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from loadtests.judge.checker import check, unexpected
from loadtests.judge.verdict import KIND, SCOPES
from loadtests.runs import report
from loadtests.runs.hammer import run_scenarios
from plumbing.config import var_dir
from registry import APPS
from serve.processes import (
    MATRIX_SHAPES,
    AppServer,
    available_apps,
    free_port,
    launcher,
    missing_server,
    run_folder,
)

DEFAULT_USERS = 16
DEFAULT_OPS = 10
# Lost updates (threads) and divergence (processes) apart: telling them apart
# is the point of the matrix.
GROUPS = {
    **{KIND[name].title: (name,) for name in ("lost_updates", "divergence")},
    **{scope: fields for scope, fields in SCOPES.items() if scope != "counter"},
}
COLUMNS = (("app", "app"), ("shape", "shape"), *((g, g) for g in GROUPS))


def run_matrix(
    apps: list[str], shapes: list[str], users: int, ops: int, var: Path
) -> tuple[list[dict[str, Any]], list[str]]:
    """Run every app under every shape, its data in `var` (a run's own folder);
    return one row per cell, and what was unexpected (an anomaly in a fixed
    app beyond its known limits)."""
    rows, problems, total = [], [], len(apps) * len(shapes)
    width = max(len(APPS[app].label(os.environ)) for app in apps)
    for n, (app, shape) in enumerate(((a, s) for a in apps for s in shapes), start=1):
        began = time.monotonic()
        with AppServer(app, free_port(), shape=shape, env={"VAR_DIR": str(var)}) as server:
            history = run_scenarios(server.url, users, ops, workers=server.workers())
        verdict = check(history)
        row = {"shape": shape, **report.row(app, verdict, history, server.backend or "")}
        row.update(report.by_scope(row, GROUPS))
        rows.append(row)
        problems += [f"{p} (under {shape})" for p in unexpected(app, verdict, APPS[app].tolerated)]
        cells = "  ".join(f"{g} {row[g]!s:<4}" for g in GROUPS)
        seconds = time.monotonic() - began
        line = f"[{n:>2}/{total}] {server.label:<{width}} {shape:<12} {cells} ({seconds:.1f}s)"
        print(line, flush=True)
    return rows, problems


@launcher  # a server that did not start: an error, exit code 2
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.runs.matrix", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--apps", nargs="+", default=available_apps(), choices=available_apps())
    parser.add_argument("--shapes", nargs="+", default=MATRIX_SHAPES, choices=MATRIX_SHAPES)
    parser.add_argument("--users", type=int, default=DEFAULT_USERS)
    parser.add_argument("--ops", type=int, default=DEFAULT_OPS)
    parser.add_argument("--out", type=Path, default=var_dir() / "results", help="folder")
    args = parser.parse_args(argv)
    for shape in args.shapes:  # before any run, not at its turn
        if missing := missing_server(shape):
            parser.error(f"{missing}; or leave {shape} out with --shapes")

    with run_folder("matrix") as var:  # never the data `make run` serves, nor another run's
        rows, problems = run_matrix(args.apps, args.shapes, args.users, args.ops, var)
    print()
    print(report.format_table(report.labelled(rows), COLUMNS))
    csv_path = report.write_csv(args.out / "matrix.csv", rows)
    png_path = report.chart_matrix(report.labelled(rows), tuple(GROUPS), args.out / "matrix.png")
    print(f"\nresults: {csv_path}, {png_path}")
    for problem in problems:
        print(f"UNEXPECTED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
