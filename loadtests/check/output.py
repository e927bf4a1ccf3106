"""What a check shows and writes: the table, the witnesses, JSON, JUnit, HTML, replay.

The table has a row per model and a column per shape, a verdict in each
cell; under it, each anomaly's smallest witness in the words of `make demo`
(loadtests/report.py format_anomaly). JUnit XML has one testcase per model x
shape, named "<model name> [<shape>]", failed where an anomaly was found,
skipped where the shape could not run. The replay file names the failed
cells, for `--replay`.
"""

import importlib.util
import json
from pathlib import Path
from xml.etree import ElementTree

from loadtests.check.run import Cell, Result
from loadtests.check.servers import DESCRIPTIONS
from loadtests.report import format_anomaly


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
    if shown := witnesses(result):
        text += f"\n{shown}\n"
    return text + f"\n{verdict} ({result.seconds:.1f}s)"


def cell_payload(cell: Cell) -> dict:
    payload = {"model": cell.model, "kind": cell.kind, "shape": cell.shape}
    if cell.skipped:
        return {**payload, "verdict": "skipped", "reason": cell.skipped}
    origin = min((e.start for e in cell.history), default=0.0)
    return {
        **payload,
        "verdict": "failed" if cell.failed else "n/a" if cell.verdict.not_served else "ok",
        "operations": cell.verdict.operations,
        "workers": cell.verdict.workers,
        "anomalies": cell.verdict.counts,
        "witnesses": [
            {"kind": a.kind, "summary": a.summary, "text": format_anomaly(a, origin)}
            for a in cell.verdict.examples
        ],
        "seconds": round(cell.seconds, 2),
        "history": [e.to_dict() for e in cell.history],
    }


def write_json(result: Result, path: Path) -> Path:
    payload = {
        "target": result.target,
        "spec": str(result.spec),
        "shapes": result.shapes,
        "ok": result.ok,
        "seconds": round(result.seconds, 2),
        "cells": [cell_payload(cell) for cell in result.cells],
    }
    return write(path, json.dumps(payload, indent=2, default=str) + "\n")


def write_junit(result: Result, path: Path) -> Path:
    suite = ElementTree.Element(
        "testsuite",
        name=f"check {result.target}",
        tests=str(len(result.cells)),
        failures=str(len(result.failed)),
        skipped=str(sum(bool(c.skipped) for c in result.cells)),
        time=f"{result.seconds:.2f}",
    )
    for cell in result.cells:
        case = ElementTree.SubElement(
            suite,
            "testcase",
            classname=f"check.{cell.kind}",
            name=f"{cell.model} [{cell.shape}]",
            time=f"{cell.seconds:.2f}",
        )
        if cell.skipped:
            ElementTree.SubElement(case, "skipped", message=cell.skipped)
        elif cell.failed:
            origin = min(e.start for e in cell.history)
            failure = ElementTree.SubElement(case, "failure", message=cell.text())
            failure.text = "\n".join(format_anomaly(a, origin) for a in cell.verdict.examples)
    ElementTree.indent(suite)
    text = ElementTree.tostring(suite, encoding="unicode", xml_declaration=True)
    return write(path, text + "\n")


def write_html(result: Result, path: Path) -> tuple[Path | None, str]:
    """The timeline, when loadtests.timeline exists; else why not."""
    if importlib.util.find_spec("loadtests.timeline") is None:
        return None, "--html: the timeline view is not available yet (no loadtests.timeline)"
    import loadtests.timeline as timeline

    events = {f"{c.model} [{c.shape}]": c.history for c in result.cells if c.history}
    try:
        return timeline.write_html(events, path), ""
    except (AttributeError, TypeError) as error:
        return None, f"--html: loadtests.timeline could not draw this check: {error}"


def write_replay(result: Result, path: Path) -> Path:
    payload = {
        "target": result.target,
        "spec": str(result.spec.resolve()),
        "chdir": str(result.chdir.resolve()),
        "failed": [[cell.model, cell.shape] for cell in result.failed],
    }
    return write(path, json.dumps(payload, indent=2) + "\n")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
