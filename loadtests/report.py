"""Print the side-by-side table and witnesses; write results as JSON."""

import json
import statistics
from pathlib import Path
from typing import Any

from loadtests.checker import Anomaly, Verdict
from loadtests.client import Event

COLUMNS = (
    ("app", "app"),
    ("ops", "operations"),
    ("lost updates", "lost_updates"),
    ("divergence", "divergence"),
    ("workers", "workers"),
    ("final read wrong", "final_reads_wrong"),
    ("visits lost", "visits_lost"),
    ("tabs lost", "tabs_lost"),
    ("visits leaked", "visits_leaked"),
    ("greet leaks", "greet_leaks"),
    ("errors", "errors"),
    ("req/s", "requests_per_second"),
    ("p50 ms", "p50_ms"),
    ("p99 ms", "p99_ms"),
)


def timing(history: list[Event]) -> dict[str, float]:
    """Throughput over the whole run, and latency percentiles in milliseconds."""
    if not history:
        return {"requests_per_second": 0.0, "p50_ms": 0.0, "p99_ms": 0.0}
    latencies = sorted((e.end - e.start) * 1000 for e in history)
    wall = max(e.end for e in history) - min(e.start for e in history)
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return {
        "requests_per_second": round(len(history) / wall, 1) if wall > 0 else 0.0,
        "p50_ms": round(cuts[49], 2),
        "p99_ms": round(cuts[98], 2),
    }


COUNTER_COLUMNS = ("lost_updates", "divergence", "final_reads_wrong")


def row(app: str, verdict: Verdict, history: list[Event]) -> dict[str, Any]:
    counts = verdict.counts()
    if not verdict.counter_served:  # the app answered 501: nothing to judge
        counts.update(dict.fromkeys(COUNTER_COLUMNS, "n/a"))
    return {"app": app, **counts, **timing(history)}


def format_table(rows: list[dict[str, Any]]) -> str:
    cells = [[title for title, _ in COLUMNS]]
    for r in rows:
        cells.append(
            [f"{r[key]:.0f}" if isinstance(r[key], float) else str(r[key]) for _, key in COLUMNS]
        )
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        )
        for line in cells
    ]
    return "\n".join(lines)


def format_anomaly(anomaly: Anomaly, origin: float) -> str:
    lines = [f"{anomaly.kind}: {anomaly.summary}"]
    for e in anomaly.witness:
        shown = f"[{len(e.value)} visits]" if isinstance(e.value, list) else e.value
        what = e.op if e.arg is None else f"{e.op}({e.arg!r})"
        lines.append(
            f"  +{e.start - origin:.4f}s..+{e.end - origin:.4f}s  {e.user}  {what} -> {shown}"
            f"  ({e.worker or 'no worker'})"
        )
    return "\n".join(lines)


def format_witnesses(app: str, verdict: Verdict, history: list[Event]) -> str:
    if not verdict.examples:
        return f"{app}: no anomaly in {verdict.operations} operations"
    origin = min(e.start for e in history)
    return f"{app}:\n" + "\n".join(
        "  " + format_anomaly(a, origin).replace("\n", "\n  ") for a in verdict.examples
    )


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path
