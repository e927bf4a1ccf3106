"""The learner's commands: practice, grade, watch, hint, solution.

    python -m exercises practice [--reset]   the list, solved or not, and the next to try
    python -m exercises grade [EX]           grade EX (a number or a name) as it is now
    python -m exercises watch [EX]           grade again within a second of every save
    python -m exercises hint [EX]            the next hint for what the last grade found
    python -m exercises solution EX          the reference fix as a diff (stdout only)

Without EX, the next exercise not yet solved. grade and watch take
--app-dir DIR to grade a copy elsewhere (a learner's, for an instructor):
its grades are not kept in the progress. The Makefile's targets of the same
names call these.
"""

import argparse
import sys
import time
from pathlib import Path

from exercises import progress
from exercises.catalog import REPO_ROOT, Exercise, UnknownExercise, exercises, resolve
from exercises.grading import Grade, Interrupted, grade
from exercises.solution import learner_has_edited, solution_diff

POLL_SECONDS = 0.2


def shown(path: Path) -> str:
    return path.relative_to(REPO_ROOT).as_posix() if path.is_relative_to(REPO_ROOT) else str(path)


def next_to_try() -> Exercise:
    done = progress.load()["exercises"]
    every = exercises()
    return next((ex for ex in every if not done.get(ex.slug, {}).get("solved")), every[-1])


def practice(reset: bool) -> int:
    if reset:
        cleared = progress.reset()
        print("Progress cleared." if cleared else "No progress to clear.")
    done = progress.load()["exercises"]
    upcoming = next_to_try()
    print("Practice: fix each app until every server shape passes.\n")
    for ex in exercises():
        entry = done.get(ex.slug, {})
        if entry.get("solved"):
            state = "solved" if entry.get("pattern") == "solved" else "solved, now failing"
        elif entry:
            failed = [s for s, verdict in entry.get("shapes", {}).items() if verdict == "failed"]
            state = f"failing: {', '.join(failed)}" if failed else "not solved"
        else:
            state = "not tried"
        marker = ">" if ex == upcoming else " "
        print(f" {marker} {ex.number}  {ex.title:<48} {state}")
    print(
        f"\nNext: exercise {upcoming.number}, {upcoming.title}. Read "
        f"{shown(upcoming.folder / 'README.md')}, change {shown(upcoming.app_file)}, then "
        f"`make grade EX={upcoming.number}` (or `make watch EX={upcoming.number}`)."
    )
    return 0


def print_grade(result: Grade, keep: bool = True) -> int:
    """Print a grade; `keep` it in the progress (the learner's own folder)."""
    ex = result.exercise
    print(f"Exercise {ex.number}: {ex.title} ({shown(result.app_dir / 'app.py')})")
    if result.problem:
        print(result.problem)
        return 2
    for r in result.results:
        detail = f"  ({r.reason})" if r.verdict == "skipped" else ""
        print(f"  {r.shape:<14} {r.verdict}{detail}")
    shapes = {r.shape: r.verdict for r in result.results}
    entry = (
        progress.record_grade(ex.slug, shapes, result.pattern, result.hints, result.witness)
        if keep
        else {"hints_shown": 1}
    )
    if result.witness:
        print("The smallest witness of what is still wrong " + result.witness)
    number = entry["hints_shown"]
    if result.pattern == "solved":
        print(result.hints[0])
    else:
        print(f"Hint {number} of {len(result.hints)}: {result.hints[number - 1]}")
        if number < len(result.hints):
            print(f"`make hint EX={ex.number}` for the next one.")
    if result.report_dir:
        print(f"The check's whole report: {shown(result.report_dir / 'check.txt')}")
    return 0 if result.pattern == "solved" else 1


def watch(ex: Exercise, app_dir: Path) -> int:
    def stamps() -> dict[Path, int]:
        found = {}
        for path in app_dir.glob("*.py"):
            try:
                found[path] = path.stat().st_mtime_ns
            except FileNotFoundError:  # an editor saving by replacing the file
                continue
        return found

    print(f"Watching {app_dir}: every save grades again. Ctrl-C stops.", flush=True)
    try:
        while True:
            seen = stamps()
            print(f"\n--- {time.strftime('%H:%M:%S')} grading exercise {ex.number}", flush=True)
            try:
                changed = lambda seen=seen: stamps() != seen  # noqa: E731
                print_grade(grade(ex, app_dir, changed), keep=app_dir == ex.folder)
                sys.stdout.flush()
            except Interrupted:
                print("Saved again while the check ran: grading the new version.")
                continue
            while stamps() == seen:
                time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        print("\nStopped watching.")
        return 0


def hint(ex: Exercise) -> int:
    found = progress.next_hint(ex.slug)
    if found is None:
        print(f"Exercise {ex.number} has not been graded yet: `make grade EX={ex.number}` first.")
        return 1
    text, number, total = found
    print(f"Hint {number} of {total} for exercise {ex.number}: {text}")
    if number == total and progress.entry(ex.slug).get("pattern") != "solved":
        print(f"That is the last one for what the check found; `make solution EX={ex.number}`.")
    return 0


def solution(ex: Exercise) -> int:
    sys.stdout.write(solution_diff(ex))
    if learner_has_edited(ex):
        print(
            f"(The diff is against the starting {shown(ex.app_file)}; yours has changed. "
            f"To apply it: git checkout -- {shown(ex.app_file)}, then git apply.)",
            file=sys.stderr,
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exercises", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("practice", help="the list, and the next to try")
    listing.add_argument("--reset", action="store_true", help="forget all progress first")
    for name in ("grade", "watch", "hint", "solution"):
        command = commands.add_parser(name)
        command.add_argument("exercise", nargs="?", default="")
        if name in ("grade", "watch"):
            command.add_argument("--app-dir", type=Path, help="grade this folder's app.py")
    args = parser.parse_args(argv)
    if args.command == "practice":
        return practice(args.reset)
    try:
        ex = resolve(args.exercise) if args.exercise else next_to_try()
    except UnknownExercise as error:
        print(error, file=sys.stderr)
        return 2
    app_dir = getattr(args, "app_dir", None)
    app_dir = app_dir.resolve() if app_dir else ex.folder
    if args.command == "grade":
        try:
            return print_grade(grade(ex, app_dir), keep=app_dir == ex.folder)
        except KeyboardInterrupt:
            print("\nStopped: the check stopped the servers it started.", file=sys.stderr)
            return 130
    if args.command == "watch":
        return watch(ex, app_dir)
    if args.command == "hint":
        return hint(ex)
    return solution(ex)


if __name__ == "__main__":
    sys.exit(main())
