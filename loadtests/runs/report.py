"""Print the side-by-side table and witnesses; write results as JSON and CSV; draw
the charts (matplotlib, imported only to draw)."""

import csv
import json
import statistics
from pathlib import Path
from typing import Any

from loadtests.judge.history import Event, answer
from loadtests.judge.verdict import CHART_SCOPES, KINDS, SCOPES, Anomaly, Verdict
from loadtests.judge.writes import NOT_SERVED
from registry import titled

# The fault run's table (loadtests/faults/run.py): write requests by fate, the
# attempts that met a fault, and each write's exactly-once verdict over both
# write routes (checker.APPLIED_TWICE, checker.ACKNOWLEDGED_LOST).
FAULT_COLUMNS = (
    ("app", "app"),
    ("keys", "keys"),
    ("requests", "requests"),
    ("acknowledged", "acknowledged"),
    ("ambiguous", "ambiguous"),
    ("not_applied", "not applied"),
    ("unavailable", "503s"),
    ("no_answer", "no answer"),
    ("writes_applied_twice", "applied twice"),
    ("writes_lost", "acknowledged lost"),
    ("anomalies", "anomalies"),
)
# (key in a row, column title), as every table in loadtests/ and docs/ takes them.
# The hammer's table: the kinds its runs judge (a write's fate under faults is
# in the fault run's table, loadtests/faults/run.py).
COLUMNS = (
    ("app", "app"),
    ("operations", "ops"),
    *((kind.field, kind.title) for kind in KINDS if not kind.faults),
    ("workers", "workers"),
    ("errors", "errors"),
    ("requests_per_second", "req/s"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
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


def row(app: str, verdict: Verdict, history: list[Event], backend: str = "") -> dict[str, Any]:
    """One app's results; backend: its store where a setting picks it (fixed_db's)."""
    counts = verdict.counts()
    if not verdict.counter_served:  # the app answered 501: nothing to judge
        counts.update(dict.fromkeys(SCOPES["counter"], "n/a"))
    return {"app": app, "backend": backend, **counts, **timing(history)}


def labelled(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows as tables and charts show them: "fixed_db (PostgreSQL)" where a row has a backend."""
    return [{**r, "app": titled(r["app"], r.get("backend"))} for r in rows]


def format_table(rows: list[dict[str, Any]], columns: tuple[tuple[str, str], ...] = COLUMNS) -> str:
    """Aligned text: the first column left, numbers right."""
    cells = [[title for _, title in columns]]
    for r in rows:
        cells.append(
            [f"{r[key]:.0f}" if isinstance(r[key], float) else str(r[key]) for key, _ in columns]
        )
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        )
        for line in cells
    ]
    return "\n".join(lines)


def first_failure(history: list[Event]) -> str:
    """The first request counted in a verdict's errors (not a 501, a scope the
    app says is not its job), as a witness line with the app's own words; or ""."""
    failed = [e for e in history if not e.ok and e.status != NOT_SERVED]
    if not failed:
        return ""
    e, origin = min(failed, key=lambda e: e.start), min(e.start for e in history)
    what = e.op if e.arg is None else f"{e.op}({e.arg!r})"
    why = f": {e.error}" if e.error else ""
    where = e.worker or "no worker"
    return f"+{e.start - origin:.4f}s  {e.user}  {what} -> {answer(e)}{why}  ({where})"


def format_anomaly(anomaly: Anomaly, origin: float) -> str:
    lines = [f"{anomaly.kind}: {anomaly.summary}"]
    for e in anomaly.witness:
        what = e.op if e.arg is None else f"{e.op}({e.arg!r})"
        lines.append(
            f"  +{e.start - origin:.4f}s..+{e.end - origin:.4f}s  {e.user}  {what} -> {answer(e)}"
            f"  ({e.worker or 'no worker'})"
        )
    return "\n".join(lines)


def size(anomaly: Anomaly) -> tuple[int, float]:
    """How small a witness is: its events, then the seconds they span."""
    events = anomaly.witness
    return len(events), max(e.end for e in events) - min(e.start for e in events)


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


def by_scope(
    counts: dict[str, Any], groups: dict[str, tuple[str, ...]] = CHART_SCOPES
) -> dict[str, int | str]:
    """Anomalies per group of counts; "n/a" where the app does not serve it."""
    return {
        group: "n/a" if any(counts[k] == "n/a" for k in keys) else sum(counts[k] for k in keys)
        for group, keys in groups.items()
    }


def write_csv(path: Path, rows: list[dict[str, Any]], fields: list[str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields or list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def pyplot():
    """matplotlib, imported only when a chart is drawn (it is slow to import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    return path


def chart_anomalies(rows: list[dict[str, Any]], path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 4.5))
    width = 0.8 / len(SCOPES)
    for i, scope in enumerate(SCOPES):
        found = [by_scope(r)[scope] for r in rows]
        xs = [x + i * width for x in range(len(rows))]
        bars = ax.bar(xs, [0 if v == "n/a" else v for v in found], width, label=scope)
        ax.bar_label(bars, labels=[str(v) for v in found], fontsize=8)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(rows))], [r["app"] for r in rows])
    ax.set_ylabel("anomalies found in the history")
    ax.set_title("Anomalies per app and scope of state (one run, same load)")
    ax.legend(title="scope")
    return save(fig, path)


COUNTER_FIELDS = ["app", "pid", "ms", "value"]


def counter_rows(histories: dict[str, list[Event]]) -> list[dict[str, Any]]:
    """Each acknowledged increment as counter.png draws it and counter.csv keeps it."""
    rows = []
    for app, history in histories.items():
        increments = [e for e in history if e.op == "increment" and e.ok]
        origin = min((e.start for e in increments), default=0.0)
        rows += [
            {"app": app, "pid": e.pid, "ms": round((e.end - origin) * 1000, 3), "value": e.value}
            for e in sorted(increments, key=lambda e: e.end)
        ]
    return rows


def chart_counter_timeline(rows: list[dict[str, Any]], apps: list[str], path: Path) -> Path:
    """Each acknowledged increment's value over time, coloured by the worker
    process that returned it, on one scale for every app, with the line a
    correct counter follows: the increments acknowledged so far. One copy
    climbs along it; copies per process each climb their own staircase far
    below it. An app without a counter is there, with a note."""
    plt = pyplot()
    fig, axes = plt.subplots(
        1, len(apps), figsize=(3.3 * len(apps), 4.2), sharey=True, squeeze=False
    )
    for ax, app in zip(axes[0], apps, strict=True):
        mine = [r for r in rows if r["app"] == app]
        ax.set_title(app)
        if not mine:
            note = "no shared counter:\nPOST /counter/increment\nanswers 501"
            ax.text(0.5, 0.5, note, ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            continue
        ms = sorted(float(r["ms"]) for r in mine)
        expected = {"where": "post", "color": "black", "label": "increments acknowledged so far"}
        ax.step(ms, range(1, len(ms) + 1), **expected)
        for n, pid in enumerate(sorted({r["pid"] for r in mine})):
            points = [r for r in mine if r["pid"] == pid]
            ax.scatter(
                [float(r["ms"]) for r in points],
                [int(r["value"]) for r in points],
                s=6,
                color=f"C{n}",
                label=f"worker {pid}",
            )
        ax.set_xlabel("ms since the first increment")
        ax.legend(fontsize=7, markerscale=2, loc="upper left")
    axes[0][0].set_ylabel("value returned by POST /counter/increment")
    fig.suptitle("The counter over time: every app on one scale, against what it should reach")
    return save(fig, path)


def chart_speed(rows: list[dict[str, Any]], path: Path) -> Path:
    """Throughput of the run against each app's /healthz ceiling, and latency,
    with the values on the bars."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    xs = list(range(len(rows)))
    value = {key: [float(r[key]) for r in rows] for key in ("ceiling_rps", "requests_per_second")}
    for key, width, label, fmt in (
        ("ceiling_rps", 0.6, "ceiling: GET /healthz, the same users", "{:,.0f}"),
        ("requests_per_second", 0.4, "the run: every scope", "{:,.0f}"),
        ("p50_ms", -0.4, "p50", "{:.1f}"),
        ("p99_ms", 0.4, "p99", "{:.1f}"),
    ):
        ax = left if key in value else right
        at = xs if key in value else [x + width / 2 for x in xs]
        colour = {"color": "lightgrey"} if key == "ceiling_rps" else {}
        bars = ax.bar(at, [float(r[key]) for r in rows], abs(width), label=label, **colour)
        ax.bar_label(bars, fmt=fmt, fontsize=8)
    for ax, title, unit in (
        (left, "Throughput vs. the app's own ceiling", "requests per second"),
        (right, "Latency of the run", "milliseconds"),
    ):
        ax.set_xticks(xs, [r["app"] for r in rows])
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.set_ylim(top=ax.get_ylim()[1] * 1.08)  # room for the labels
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncols=2, fontsize=8)
    return save(fig, path)


def chart_matrix(rows: list[dict[str, Any]], groups: tuple[str, ...], path: Path) -> Path:
    """One heatmap, narrow enough for a page: a row per app and server shape,
    a column per group of anomalies. Grey: not served; green: none; red: some."""
    plt = pyplot()
    apps = list(dict.fromkeys(r["app"] for r in rows))
    shapes = list(dict.fromkeys(r["shape"] for r in rows))
    lines = [(app, shape) for app in apps for shape in shapes]
    cell = {(r["app"], r["shape"]): r for r in rows}
    grid = [[cell[line][group] for group in groups] for line in lines]
    shown = [
        [0.5 if str(v) == "n/a" else 0 if str(v) in ("0", "0.0") else 1 for v in line]
        for line in grid
    ]
    fig, ax = plt.subplots(figsize=(2.6 + 1.15 * len(groups), 0.34 * len(lines) + 1.5))
    ax.imshow(shown, cmap="RdYlGn_r", vmin=-0.4, vmax=1.3, aspect="auto")
    for i, line in enumerate(grid):
        for j, v in enumerate(line):
            ax.text(j, i, v, ha="center", va="center", fontsize=9)
    ax.set_xticks(range(len(groups)), groups)
    ax.xaxis.tick_top()
    ax.set_yticks(range(len(lines)), [f"{app}   {shape}" for app, shape in lines], fontsize=8)
    for n in range(1, len(apps)):
        ax.axhline(n * len(shapes) - 0.5, color="black", linewidth=1.5)
    ax.set_title("Anomalies by app and server shape, from recorded histories", pad=24)
    return save(fig, path)
