"""One check: every model of a spec under every shape asked for, judged.

For each shape: the app started on a fresh data folder (servers.deployed),
every model's driver run through its phases together (first requests alone,
burst, the restart if the shape has one, burst, last reads), each history
judged, the servers stopped. A shape that cannot run here gives "skipped"
cells with the reason. The Result holds a Cell per model x shape.
"""

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from loadtests.check.drive import Tokens, spread
from loadtests.check.judge import ModelVerdict, judge
from loadtests.check.models import DRIVERS
from loadtests.check.servers import SHAPES, Setting, deployed, skip_reason
from loadtests.check.spec import Spec
from loadtests.history import Event

DEFAULT_SHAPES = tuple(SHAPES)


@dataclass
class Cell:
    model: str  # the model's name in the spec
    kind: str  # counter, per_user_list, ...
    shape: str
    verdict: ModelVerdict | None = None
    history: list[Event] = field(default_factory=list)
    skipped: str = ""  # why the shape could not run here
    seconds: float = 0.0

    @property
    def failed(self) -> bool:
        return self.verdict is not None and self.verdict.anomalies > 0

    def text(self) -> str:
        if self.skipped:
            return "skipped"
        if not self.failed:
            return "n/a (501)" if self.verdict.not_served else "ok"
        first, *more = self.verdict.summary().split(", ")
        return f"FAIL {first}" + (f" +{len(more)} more" if more else "")


@dataclass
class Result:
    """Every cell of a check, and where it ran."""

    target: str
    spec: Path
    chdir: Path
    shapes: list[str]
    cells: list[Cell] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[Cell]:
        return [cell for cell in self.cells if cell.failed]

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def report(self) -> str:
        """The table and the witnesses, as the command line prints them."""
        from loadtests.check.output import report  # output.py reads this module's Result

        return report(self)

    def cell(self, model: str, shape: str) -> Cell:
        return next(c for c in self.cells if c.model == model and c.shape == shape)


def quiet(_line: str) -> None:
    pass


def progress_line(line: str) -> None:
    """One line, rewritten in place on a terminal, else a line each."""
    if sys.stderr.isatty():
        print(f"\r\033[K{line}", end="", file=sys.stderr, flush=True)
    else:
        print(line, file=sys.stderr, flush=True)


def run_check(
    spec: Spec,
    target: str,
    chdir: Path,
    shapes: list[str],
    models: list[str] | None = None,
    progress: Callable[[str], None] = quiet,
) -> Result:
    """Run the spec's models (all, or those named) under each shape."""
    chosen = [m for m in spec.models if models is None or m.name in models]
    result = Result(target, spec.path, chdir, list(shapes))
    setting = Setting(target, chdir, spec.app)
    began = time.monotonic()
    for n, shape in enumerate(shapes, start=1):
        progress(f"[{n}/{len(shapes)}] {shape}: starting {target} ...")
        if reason := skip_reason(shape):
            result.cells += [Cell(m.name, m.kind, shape, skipped=reason) for m in chosen]
            continue
        started = time.monotonic()
        cells = run_shape(setting, shape, chosen, lambda line, s=shape, k=n: progress(
            f"[{k}/{len(shapes)}] {s}: {line}"))  # fmt: skip
        for cell in cells:
            cell.seconds = time.monotonic() - started
        result.cells += cells
    result.seconds = time.monotonic() - began
    return result


def run_shape(setting: Setting, shape: str, models: list, progress: Callable) -> list[Cell]:
    tokens = Tokens()
    with deployed(setting, shape) as deployment:
        drivers = [DRIVERS[m.kind](m, tokens, deployment.urls) for m in models]
        try:
            for driver in drivers:
                spread(driver.users, deployment.workers)
            progress("first requests, one user at a time")
            for driver in drivers:
                driver.first()
            progress("burst 1")
            for driver in drivers:
                driver.burst()
            if SHAPES[shape].restart:
                progress("restarting the server")
                deployment.restart()
            progress("burst 2")
            for driver in drivers:
                driver.burst()
            progress("last reads")
            for driver in drivers:
                driver.last()
        finally:
            for driver in drivers:
                driver.close()
    return [
        Cell(d.model.name, d.model.kind, shape, judge(d.model.kind, d.history, tokens), d.history)
        for d in drivers
    ]
