"""The reference fix of an exercise, as a unified diff against its starting
app.py that `git apply` takes from the repository root.

The starting file is the one the repository holds (git's HEAD), so the diff
stays the same while the learner edits theirs; outside a git checkout it is
the file as it is.
"""

import difflib
import subprocess

from exercises.catalog import REPO_ROOT, Exercise


def starting_source(exercise: Exercise) -> str:
    path = exercise.app_file.relative_to(REPO_ROOT).as_posix()
    try:
        shown = subprocess.run(
            ["git", "show", f"HEAD:{path}"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return exercise.app_file.read_text()
    return shown.stdout if shown.returncode == 0 else exercise.app_file.read_text()


def solution_diff(exercise: Exercise) -> str:
    path = exercise.app_file.relative_to(REPO_ROOT).as_posix()
    start = starting_source(exercise).splitlines(keepends=True)
    fixed = (exercise.solution_dir / "app.py").read_text().splitlines(keepends=True)
    return "".join(difflib.unified_diff(start, fixed, f"a/{path}", f"b/{path}"))


def learner_has_edited(exercise: Exercise) -> bool:
    return exercise.app_file.read_text() != starting_source(exercise)
