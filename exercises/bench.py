"""How long a learner waits for a grade: each exercise graded by the command
`make grade` runs, its starting app and its reference fix, wall time each.

    python -m exercises.bench          # every exercise
    python -m exercises.bench 3 8      # some (a number or a name)

Each grade is `python -m exercises grade N --app-dir DIR`, in a process of
its own, timed from its start to its exit: what a learner waits, the
interpreter's start included. VAR_DIR is a scratch folder, so the learner's
progress and reports are left alone. Exit 1 if a starting app passed or a
reference fix failed. The kept run (`python -m docs.tools.kept grades`) is
what the Practice page shows.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from exercises.catalog import REPO_ROOT, Exercise, UnknownExercise, exercises, resolve


def timed_grade(exercise: Exercise, app_dir: Path, var: Path) -> tuple[float, int]:
    """Seconds the grade took, and its exit code (0 solved, 1 not yet)."""
    command = [sys.executable, "-m", "exercises", "grade", exercise.slug, "--app-dir", str(app_dir)]
    began = time.monotonic()
    done = subprocess.run(
        command,
        cwd=REPO_ROOT,
        env={**os.environ, "VAR_DIR": str(var)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.monotonic() - began, done.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m exercises.bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("exercise", nargs="*", help="numbers or names (default: all)")
    args = parser.parse_args(argv)
    try:
        chosen = [resolve(name) for name in args.exercise] or list(exercises())
    except UnknownExercise as error:
        print(error, file=sys.stderr)
        return 2
    print(f"{'exercise':<22} {'shapes':<44} {'starting app':>14} {'reference fix':>14}")
    wrong = []
    with tempfile.TemporaryDirectory(prefix="grade-bench-") as scratch:
        for ex in chosen:
            start, start_code = timed_grade(ex, ex.folder, Path(scratch) / f"{ex.slug}-start")
            fix, fix_code = timed_grade(ex, ex.solution_dir, Path(scratch) / f"{ex.slug}-fix")
            if start_code != 1 or fix_code != 0:
                wrong.append(f"{ex.slug}: starting app exit {start_code}, fix exit {fix_code}")
            shapes = ", ".join(ex.shapes)
            print(
                f"{ex.slug:<22} {shapes:<44} {start:>12.1f} s {fix:>12.1f} s",
                flush=True,
            )
    for line in wrong:
        print(f"unexpected: {line} (a starting app exits 1, a fix 0)")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
