"""python -m loadtests.check TARGET --spec F: check an app under every server shape.

Exit code 0 when no anomaly was found, 1 when one was, 2 for a bad spec, an
app that does not start or a port taken (one paragraph on stderr, naming the
spec's line or the app's log). A failing check writes a replay file;
`--replay FILE` runs only its failed cells again, REPEATS times each.
"""

import argparse
import json
import sys
from pathlib import Path

from loadtests.check import output
from loadtests.check.run import DEFAULT_SHAPES, STORE_SHAPES, progress_line, run_check
from loadtests.check.servers import SHAPES
from loadtests.check.spec import SpecError, load_spec
from plumbing.config import var_dir
from serve.processes import launch_failed, launcher

REPEATS = 3


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtests.check", description=__doc__)
    parser.add_argument("target", nargs="?", help="module:create_app or module:app")
    parser.add_argument("--spec", type=Path, help="the TOML spec")
    parser.add_argument(
        "--chdir", type=Path, default=Path("."), help="where the app is imported from"
    )
    parser.add_argument("--shapes", default="",
                        help=f"comma-separated, of {','.join(SHAPES)} (default: "
                        f"{','.join(DEFAULT_SHAPES)}, and {','.join(STORE_SHAPES)} "
                        "for a spec with a store)")  # fmt: skip
    parser.add_argument("--json", type=Path, metavar="F")
    parser.add_argument("--junit", type=Path, metavar="F")
    parser.add_argument("--html", type=Path, metavar="F")
    parser.add_argument("--replay", type=Path, metavar="FILE",
                        help="run again only the failed cells a check wrote to FILE")  # fmt: skip
    parser.add_argument("--replay-file", type=Path, metavar="F",
                        default=var_dir() / "results" / "check-replay.json",
                        help="where a failing check writes its replay file")  # fmt: skip
    args = parser.parse_args(argv)
    args.shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    if unknown := [s for s in args.shapes if s not in SHAPES]:
        parser.error(f"unknown shape {unknown[0]!r}; the shapes are {', '.join(SHAPES)}")
    if not args.replay and not args.spec:
        parser.error("--spec is needed (or --replay FILE)")
    for flag in ("json", "junit", "html"):  # before the check, not after minutes of it
        if (path := getattr(args, flag)) is None:
            continue
        if path.is_dir():
            parser.error(f"--{flag} {path} is a folder; give the file to write")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            parser.error(f"--{flag} {path}: cannot make its folder {path.parent}: {error.strerror}")
    if not args.replay and not args.chdir.is_dir():
        parser.error(
            f"--chdir {args.chdir} is not a folder: give the one your app is imported from"
        )
    return args


@launcher  # an app that does not start, a port taken: one paragraph, exit code 2
def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        if args.replay:
            return replay(args.replay)
        return check(args)
    except SpecError as error:
        return launch_failed(error)


def check(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec, args.target)
    result = run_check(spec, spec.app.target, args.chdir.resolve(), args.shapes or None,
                       progress=progress_line)  # fmt: skip
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(result.report())
    written = []
    if args.json:
        written.append(output.write_json(result, args.json))
    if args.junit:
        written.append(output.write_junit(result, args.junit))
    if args.html:
        path, why = output.write_html(result, args.html)
        written += [path] if path else []
        if why:
            print(why)
    if result.failed:
        written.append(output.write_replay(result, args.replay_file))
        print(f"replay the failed cells: python -m loadtests.check --replay {args.replay_file}")
    if written:
        print("wrote: " + ", ".join(str(p) for p in written))
    return result.exit_code


def replay(path: Path) -> int:
    """Each failed cell again, REPEATS times: does it still fail, and how often?"""
    try:
        saved = json.loads(path.read_text())
        failed = [(str(model), str(shape)) for model, shape in saved["failed"]]
        spec = load_spec(Path(saved["spec"]), saved["target"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SpecError(f"{path} is not a replay file a check wrote: {error}") from None
    if not failed:
        print(f"{path}: no failed cell to replay")
        return 0
    by_shape: dict[str, list[str]] = {}
    for model, shape in failed:
        by_shape.setdefault(shape, []).append(model)
    fails = dict.fromkeys(failed, 0)
    for shape, models in by_shape.items():  # one server per run, all its failed models
        for n in range(1, REPEATS + 1):
            progress_line(f"replaying {', '.join(models)} [{shape}]: run {n}/{REPEATS}")
            result = run_check(spec, saved["target"], Path(saved["chdir"]), [shape], models)
            for cell in result.failed:
                fails[(cell.model, shape)] += 1
    if sys.stderr.isatty():
        print(file=sys.stderr)
    for (model, shape), n in fails.items():
        word = "still fails" if n else "passes now"
        print(f"{model} [{shape}]: {word}, {n} of {REPEATS} runs failed")
    return 1 if any(fails.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
