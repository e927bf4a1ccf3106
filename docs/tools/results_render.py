"""The results blocks of the docs' pages, rendered from the files a real run
kept under docs/results/ (docs/tools/results.py runs and keeps them): the
run's stamp, the compare, matrix and bench tables, the charts and the soak's
summary. Nothing here is typed by hand: a number on a page is one of these
files' own.
"""

import csv
import json
import posixpath
import re
from typing import Any

from docs.tools import DOCS_DIR
from loadtests.runs import matrix, report

RESULTS_DIR = DOCS_DIR / "results"
RUN_FILE = RESULTS_DIR / "run.json"
SOAK_FILE = RESULTS_DIR / "soak.json"


# -- rendering ----------------------------------------------------------------


def load_run() -> dict[str, Any] | None:
    return json.loads(RUN_FILE.read_text()) if RUN_FILE.exists() else None


def read_csv(name: str) -> list[dict[str, str]]:
    with (RESULTS_DIR / name).open(newline="") as f:
        return list(csv.DictReader(f))


def is_number(cell: str) -> bool:
    return bool(re.fullmatch(r"[\d,.]+( s|x)?|n/a|", cell))  # blank: nothing measured


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table: numbers right-aligned, text left-aligned."""
    cells = [[str(cell) for cell in row] for row in rows]
    align = [
        "---:" if cells and all(is_number(row[i]) for row in cells) else ":---"
        for i in range(len(headers))
    ]
    lines = [headers, align, *cells]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def number(value: str) -> str:
    """Whole numbers with thousands separators; "n/a" and text as they are."""
    try:
        return f"{round(float(value)):,}"
    except ValueError:
        return value


def day(run: dict[str, Any]) -> str:
    return run["started"][:10]


def image(name: str, page: str, alt: str) -> str:
    """The chart, linked to itself at full size."""
    target = posixpath.relpath(f"docs/results/{name}", posixpath.dirname(f"docs/{page}"))
    return f"[![{alt}]({target})]({target})"


# -- redrawing ----------------------------------------------------------------


def numbers(row: dict[str, str]) -> dict[str, Any]:
    """A CSV row with its whole numbers as ints ("n/a" and text as they are)."""
    return {k: int(v) if v.lstrip("-").isdigit() else v for k, v in row.items()}


def results_page(page: str) -> str:
    return posixpath.relpath("docs/results.md", posixpath.dirname(f"docs/{page}"))


def render_run(run: dict[str, Any]) -> str:
    m = run["machine"]
    cpu = f", {m['cpu']}" if "cpu" in m else ""
    memory = f", {m['memory_gib']} GiB of memory" if "memory_gib" in m else ""
    versions = ", ".join(f"{name} {version}" for name, version in run["packages"].items())
    rows = [
        [f"`{c['target']}`", f"`{c['command']}`", f"{c['seconds']:.0f} s", c["exit_code"]]
        for c in run["commands"]
    ]
    return (
        f"Produced by `{run['produced_by']}` on **{day(run)}**, from {run['started'][11:19]} "
        f"to {run['finished'][11:19]} UTC, on a machine with {m['cores']} cores{cpu}{memory}; "
        f"{m['platform']}; {m['python']}; {versions}.\n\n"
        + table(["make target", "command", "took", "exit code"], rows)
    )


def render_stamp(run: dict[str, Any], page: str) -> str:
    return (
        f"<small>Numbers from the [results run]({results_page(page)}) of {day(run)} "
        f"({run['machine']['cores']} cores), made by `{run['produced_by']}`.</small>"
    )


# The hammer's own table, without the processes seen and the speed (shown apart).
COMPARE_ANOMALIES = tuple(
    (key, title)
    for key, title in report.COLUMNS
    if key not in {"workers", "requests_per_second", "p50_ms", "p99_ms"}
)


COMPARE_SPEED = (
    ("app", "app"),
    ("requests_per_second", "req/s in the run"),
    ("p50_ms", "p50 ms"),
    ("p99_ms", "p99 ms"),
    ("ceiling_rps", "GET /healthz ceiling, req/s"),
)


def render_columns(rows: list[dict[str, str]], columns: tuple[tuple[str, str], ...]) -> str:
    def cell(row: dict[str, str], key: str) -> str:
        value = row[key]
        if key == "app":
            return f"`{value}`"
        if key.endswith("_ms"):
            return value
        return number(value)

    return table([title for _, title in columns], [[cell(r, k) for k, _ in columns] for r in rows])


def render_compare_output(run: dict[str, Any]) -> str:
    text = (RESULTS_DIR / "compare.txt").read_text()
    kept = [
        line
        for line in text.splitlines()
        if line.strip() and not line.startswith((".venv/", "results:"))
    ]
    return "```text\n" + "\n".join(kept) + "\n```"


# The witnesses the README's sample keeps: one of each kind the globals cause,
# and the one limit of a fixed app.
SAMPLE_WITNESSES = ("lost update", "divergence", "greet leak", "lost tab")


def render_compare_sample(run: dict[str, Any]) -> str:
    """The compare run's output, trimmed to a few witnesses and the table."""
    kept, keep = [], False
    for line in (RESULTS_DIR / "compare.txt").read_text().splitlines():
        if not line.strip() or line.startswith((".venv/", "results:", "hammering ")):
            continue
        if line.startswith("  ") and not line.startswith("    "):  # a witness's first line
            keep = line.strip().startswith(tuple(f"{w}:" for w in SAMPLE_WITNESSES))
        elif not line.startswith("    "):  # an app's name, or the table
            keep = True
        if keep:
            kept.append(line)
    return "```text\n" + "\n".join(kept) + "\n```"


def shape_name(shape: str) -> str:
    from serve.shapes import SHAPES, GunicornShape
    from serve.uwsgi import UwsgiShape

    spec = SHAPES.get(shape)
    if isinstance(spec, UwsgiShape):
        return f"uWSGI {spec.processes} x {spec.threads}, app loaded before fork"
    if isinstance(spec, GunicornShape):
        if spec.worker_class == "gevent":  # greenlets, not threads
            return f"gunicorn gevent {spec.workers} x {spec.connections} greenlets"
        return f"gunicorn {spec.worker_class} {spec.workers} x {spec.threads}"
    return "`flask run` (threaded)"


MATRIX_GROUPS = tuple(matrix.GROUPS)


def render_matrix_table(app: str | None = None) -> str:
    """Every cell of the matrix, or only one app's rows."""
    rows = [r for r in read_csv("matrix.csv") if app in (None, r["app"])]
    return table(
        ["app", "server", *MATRIX_GROUPS, "req/s"],
        [
            [
                f"`{r['app']}`",
                f"{shape_name(r['shape'])} (`{r['shape']}`)",
                *(number(r[g]) for g in MATRIX_GROUPS),
                number(r["requests_per_second"]),
            ]
            for r in rows
        ],
    )


def render_bench_table() -> str:
    rows = read_csv("bench.csv")
    # A run that measured each write's floor and best case (bench.py) shows them too.
    extra = [c for c in BENCH_EXTRA if rows and c[0] in rows[0]]
    body = table(
        [
            *["app", "route", "req/s", "p50 ms", "p99 ms", "failed", "vs /healthz"],
            *["app CPU µs/req", "store CPU µs/req"],
            *(title for _, title, _ in extra),
        ],
        [
            [
                f"`{r['app']}`",
                f"`{r['route']}`",
                number(r["req_per_s"]),
                r["p50_ms"],
                r["p99_ms"],
                r["failed"],
                f"{float(r['vs_healthz']):.2f}x",
                number(r.get("app_cpu_us") or ""),
                number(r.get("store_cpu_us") or ""),
                *(show(r[key]) for key, _, show in extra),
            ]
            for r in rows
            if "(" not in r["route"]  # wrk's and the hammer's own rows are below
        ],
    )
    others = [r for r in rows if "(" in r["route"]]
    if others:
        clients = table(
            ["app", "client", "GET /healthz req/s"],
            [
                [f"`{r['app']}`", r["route"].split("(")[1].rstrip(")"), number(r["req_per_s"])]
                for r in others
            ],
        )
        body += "\n\nThe same `/healthz` driven by other clients, to check the bench's own:\n\n"
        body += clients
    setups = [
        line.strip()
        for line in (RESULTS_DIR / "bench.txt").read_text().splitlines()
        if " connections, " in line and line.split(" ", 1)[0] in {r["app"] for r in rows}
    ]
    if setups:
        body += "\n\nSetups, as the bench printed them:\n\n" + "\n".join(f"- {s}" for s in setups)
    return body


def render_tabs(run: dict[str, Any]) -> str:
    rows = [
        [f"`{app}`", number(str(t["sent"])), number(str(t["lost"]))]
        for app, t in run["tabs"].items()
        if app != "broken_global"
    ]
    return table(["app", "appends sent at once by one user", "lost"], rows)


def render(key: str, page: str) -> str:
    """One block's Markdown, for the page (relative to docs/) it is on."""
    if key == "soak":
        return render_soak(page)
    run = load_run()
    if run is None:
        return "_No results run yet: `make docs-results` makes one._"
    match key:
        case "run":
            return render_run(run)
        case "stamp":
            return render_stamp(run, page)
        case "compare-anomalies":
            return render_columns(read_csv("compare.csv"), COMPARE_ANOMALIES)
        case "compare-speed":
            return render_columns(read_csv("compare.csv"), COMPARE_SPEED)
        case "compare-output":
            return render_compare_output(run)
        case "compare-sample":
            return render_compare_sample(run)
        case "compare-charts":
            return "\n\n".join(
                [
                    image("anomalies.png", page, "Anomalies per app and scope"),
                    image("counter.png", page, "Counter values over time, per worker process"),
                    image("speed.png", page, "Throughput and latency per app"),
                ]
            )
        case "counter-chart":
            return image("counter.png", page, "Counter values over time, per worker process")
        case "matrix-table":
            return render_matrix_table()
        case "matrix-chart":
            return image("matrix.png", page, "Anomalies per app and server shape")
        case "bench-table":
            return render_bench_table()
        case "tabs":
            return render_tabs(run)
        case _ if key.startswith("matrix-") and key != "matrix-chart":
            return render_matrix_table(key.removeprefix("matrix-"))
    raise ValueError(f"unknown results block {key!r}")


def render_soak(page: str) -> str:
    if not SOAK_FILE.exists():
        return "_No soak run kept yet: `make soak`, then `python -m docs.tools.results soak DIR`._"
    soak = json.loads(SOAK_FILE.read_text())
    rows = []
    for app, r in soak["apps"].items():
        locust, served = r["locust"], r["app"]
        rows.append(
            [
                f"`{app}`",
                number(str(r["operations"])),
                f"{locust['first_mb']} → {locust['last_mb']} (max {locust['max_mb']})",
                f"{locust['slope_mb_per_min_after_1_min']:+.2f}",
                f"{served['first_mb']} → {served['last_mb']}",
                f"{served['slope_mb_per_min_after_1_min']:+.2f}",
                r["exit_code"],
                r["verdict"],
            ]
        )
    headers = ["app", "operations", "Locust MB", "Locust MB/min after 1 min", "app MB"]
    headers += ["app MB/min", "exit code", "verdict"]
    when = soak["started"].replace("T", " ")[:16]
    return (
        f"`{soak['command']}`, from {when} to {soak['finished'][11:16]} UTC "
        f"on {soak['cores']} cores, both apps at once:\n\n"
        + table(headers, rows)
        + "\n\n"
        + image("soak.png", page, "Resident memory over the soak run, Locust's and the app's")
    )


def ratio(value: str) -> str:
    return f"{float(value):.2f}x" if value else ""


def share(value: str) -> str:
    return f"{float(value):.2f}" if value else ""


# bench.csv's columns since the floor and the best case: (key, title, shown as).
BENCH_EXTRA = (
    ("floor_req_s", "store's floor, ops/s", number),
    ("best_case_req_s", "best case req/s", number),
    ("vs_best_case", "vs best case", ratio),
    ("project_cpu_share", "project's share of app CPU", share),
)
