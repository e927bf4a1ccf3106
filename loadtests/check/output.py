"""What a check shows and writes: the table, the witnesses, JSON, JUnit, HTML, replay.

The table has a row per model and a column per shape, a verdict in each
cell; under it, each anomaly's smallest witness in the words of `make demo`
(loadtests/runs/report.py format_anomaly). JUnit XML has one testcase per model x
shape, named "<model name> [<shape>]", failed where an anomaly was found,
skipped where the shape could not run; a passed cell whose requests reached
one worker of several has the table's note as its system-out. The
replay file names the failed cells, for `--replay`.
"""

import json
from pathlib import Path
from xml.etree import ElementTree

from loadtests.check.judge import ModelVerdict
from loadtests.check.result import Cell, Result
from loadtests.judge.verdict import Anomaly
from loadtests.runs.report import format_anomaly
from loadtests.timeline import write_timeline


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
        "shape_workers": cell.shape_workers,
        "runs": cell.runs,
        **({"note": note} if (note := cell.note()) else {}),
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
        elif note := cell.note():  # passed, but say so where a CI shows a test's output
            ElementTree.SubElement(case, "system-out").text = note
    ElementTree.indent(suite)
    text = ElementTree.tostring(suite, encoding="unicode", xml_declaration=True)
    return write(path, text + "\n")


def write_html(result: Result, path: Path) -> tuple[Path | None, str]:
    """The whole check as one timeline (loadtests/timeline/): every cell's
    history, the shapes one after another, each witness listed with its cell."""
    history = [e for c in result.cells if c.history for e in c.history]
    if not history:
        return None, "--html: no request was recorded, so there is nothing to draw"
    shown = [
        Anomaly(a.kind, f"{c.model} [{c.shape}]: {a.summary}", a.witness)
        for c in result.cells
        if c.verdict is not None
        for a in c.verdict.examples
    ]
    title = f"check of {result.target}"
    return write_timeline(path, title, history, ModelVerdict(), shown=shown), ""


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
