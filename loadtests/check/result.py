"""A check's result: a cell per model and shape, and the text the command
line prints of it (the table, a note for each cell whose requests reached
one worker of a shape that runs several, then each anomaly's smallest
witness, in the words of `make demo`). output.py writes the same result to files."""

from dataclasses import dataclass, field
from pathlib import Path

from loadtests.check.judge import ONE_PROCESS_SHOWS, ModelVerdict
from loadtests.check.servers import DESCRIPTIONS
from loadtests.judge.history import Event
from loadtests.runs.report import format_anomaly


@dataclass
class Cell:
    model: str  # the model's name in the spec
    kind: str  # counter, per_user_list, ...
    shape: str
    verdict: ModelVerdict | None = None
    history: list[Event] = field(default_factory=list)
    skipped: str = ""  # why the shape could not run here
    seconds: float = 0.0
    shape_workers: int = 0  # the worker processes the shape runs
    runs: int = 1  # the shape's runs this cell took (run.py)

    @property
    def failed(self) -> bool:
        return self.verdict is not None and self.verdict.anomalies > 0

    @property
    def short_of_workers(self) -> bool:
        """No anomaly found, but its requests reached one worker process of a
        shape that runs several: a copy kept per process takes two to show."""
        return (
            self.verdict is not None
            and not self.failed
            and not self.verdict.not_served
            and self.kind not in ONE_PROCESS_SHOWS
            and self.verdict.workers < min(2, self.shape_workers)
        )

    def note(self) -> str:
        """The line under the table for a cell short of workers, else ''."""
        if not self.short_of_workers:
            return ""
        runs = "1 run" if self.runs == 1 else f"{self.runs} runs"
        return (
            f"note: {self.model} under {self.shape} reached {self.verdict.workers} of "
            f"{self.shape_workers} workers in {runs}; a per-process bug could pass it unseen"
        )

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
        return report(self)

    def cell(self, model: str, shape: str) -> Cell:
        return next(c for c in self.cells if c.model == model and c.shape == shape)


def table(result: Result) -> str:
    models = list(dict.fromkeys((c.model, c.kind) for c in result.cells))
    header = ["model", *result.shapes]
    rows = [
        [f"{name} ({kind})", *(result.cell(name, shape).text() for shape in result.shapes)]
        for name, kind in models
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in [header, *rows]]  # fmt: skip
    return "\n".join(lines)


def witnesses(result: Result) -> str:
    parts = []
    for cell in result.failed:
        origin = min(e.start for e in cell.history)
        shown = "\n".join(
            "  " + format_anomaly(a, origin).replace("\n", "\n  ") for a in cell.verdict.examples
        )
        parts.append(f"{cell.model} [{cell.shape}], {DESCRIPTIONS[cell.shape]}:\n{shown}")
    skipped = {c.shape: c.skipped for c in result.cells if c.skipped}
    parts += [f"{shape}: skipped: {reason}" for shape, reason in skipped.items()]
    return "\n\n".join(parts)


def report(result: Result) -> str:
    verdict = (
        f"{len(result.failed)} of {len(result.cells)} cells show anomalies"
        if result.failed
        else "no anomaly found"
    )
    text = f"{table(result)}\n"
    if notes := [note for cell in result.cells if (note := cell.note())]:
        text += "\n" + "\n".join(notes) + "\n"
    if shown := witnesses(result):
        text += f"\n{shown}\n"
    return text + f"\n{verdict} ({result.seconds:.1f}s)"
