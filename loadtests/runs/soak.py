"""A long headless Locust run per app, side by side, with the memory of every
process sampled from /proc: does the load generator's memory stay flat?

    python -m loadtests.runs.soak                    # broken_global and fixed_db, 10 min
    python -m loadtests.runs.soak broken_global --minutes 60 --users 24

Each app runs under `python -m loadtests.swarm.locust_run APP --headless` (its own
gunicorn on a free port, its data in a folder of its own), all apps at once. Every
SAMPLE_SECONDS the resident memory (VmRSS in /proc/PID/status) of Locust's
processes and of the app's gunicorn processes goes into soak.csv, with the
operations the run's correctness line last reported. At the end it prints,
per app, the Locust memory's slope after the first minute (least squares,
MB per minute), the app's, the verdict and the exit code, and writes
soak.json. Bounded: --minutes, plus a grace period after which a run that
has not finished is stopped by PID.
"""

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from plumbing.config import REPO_ROOT, var_dir
from serve.pids import stop_process
from serve.processes import available_apps

SAMPLE_SECONDS = 10.0
WARM_UP_SECONDS = 60.0  # the slope is taken after this: imports, pools and users settle
GRACE_SECONDS = 120.0  # a run that has not quit this long after its run time is stopped
DEFAULT_APPS = ("broken_global", "fixed_db")


def rss_kb(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    return int(found[1]) if found else None


def children(pid: int) -> list[int]:
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        return [int(c) for t in tasks for c in (t / "children").read_text().split()]
    except OSError:
        return []


def slope_mb_per_minute(points: list[tuple[float, int]]) -> float | None:
    """Least-squares slope of (seconds, kB) points, in MB per minute."""
    if len(points) < 3:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_m = sum(m for _, m in points) / n
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    if not spread:
        return None
    per_second = sum((t - mean_t) * (m - mean_m) for t, m in points) / spread
    return per_second * 60 / 1024


class Run:
    """One app's launcher, its output in a log file."""

    def __init__(self, app: str, minutes: float, users: int, out: Path, extra: list[str]) -> None:
        self.app = app
        self.log = out / f"{app}.log"
        command = [sys.executable, "-m", "loadtests.swarm.locust_run", app, "--app-port", "0"]
        command += ["--headless", "--run-time", f"{round(minutes * 60)}s", "--users", str(users)]
        command += ["--", "--only-summary", "--csv", str(out / app), *extra]
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}  # its data: locust_run's own folder
        with self.log.open("w") as log:
            self.launcher = subprocess.Popen(
                command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        self.locust: list[int] = []
        self.gunicorn: int | None = None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def pids(self) -> dict[str, list[int]]:
        text = self.output()
        if self.gunicorn is None and (found := re.search(r"\(gunicorn pid (\d+)\)", text)):
            self.gunicorn = int(found[1])
        if not self.locust and (
            found := re.search(r"^locust pid (\d+)(?:, worker pids ([\d ]+))?", text, re.M)
        ):
            self.locust = [int(found[1]), *map(int, (found[2] or "").split())]
        app = [self.gunicorn, *children(self.gunicorn)] if self.gunicorn else []
        return {"locust": self.locust, "app": app}

    def operations(self) -> int | None:
        lines = re.findall(r"^correctness \+\d+s: ([\d,]+) ops", self.output(), re.M)
        return int(lines[-1].replace(",", "")) if lines else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.runs.soak", description=__doc__.split("\n")[0]
    )
    parser.add_argument("apps", nargs="*", metavar="APP", help=f"default: {' '.join(DEFAULT_APPS)}")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--users", type=int, default=24)
    parser.add_argument("--out", type=Path, default=var_dir() / "results" / "soak")
    parser.add_argument("--locust-args", default="", help="more arguments for Locust, one string")
    args = parser.parse_args(argv)
    apps = args.apps or list(DEFAULT_APPS)
    if unknown := [a for a in apps if a not in available_apps()]:
        parser.error(f"no such app: {unknown[0]}")
    args.out.mkdir(parents=True, exist_ok=True)
    began, started = time.monotonic(), datetime.now(UTC).isoformat(timespec="seconds")
    runs = [Run(app, args.minutes, args.users, args.out, args.locust_args.split()) for app in apps]
    print(
        f"soak: {', '.join(apps)} for {args.minutes:g} min, {args.users} users each; "
        f"samples every {SAMPLE_SECONDS:.0f} s into {args.out / 'soak.csv'}",
        flush=True,
    )
    deadline = began + args.minutes * 60 + GRACE_SECONDS
    samples: list[dict] = []
    with (args.out / "soak.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, ["seconds", "app", "role", "pid", "rss_kb", "operations"])
        writer.writeheader()
        try:
            while any(run.launcher.poll() is None for run in runs):
                at = round(time.monotonic() - began, 1)
                for run in runs:
                    ops = run.operations()
                    for role, pids in run.pids().items():
                        for pid in pids:
                            if (kb := rss_kb(pid)) is not None:
                                row = {"seconds": at, "app": run.app, "role": role, "pid": pid}
                                samples.append(row | {"rss_kb": kb, "operations": ops})
                                writer.writerow(samples[-1])
                f.flush()
                if time.monotonic() > deadline:
                    print("soak: past its time, stopping what is still running", flush=True)
                    break
                time.sleep(SAMPLE_SECONDS)
        finally:
            for run in runs:
                stop_process(run.launcher, 60.0)
    summary = {"minutes": args.minutes, "users": args.users, "started": started, "apps": {}}
    summary |= {
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
    }
    summary["command"] = (
        f"python -m loadtests.runs.soak {' '.join(apps)} --minutes {args.minutes:g}"
    )
    summary["command"] += f" --users {args.users}"
    for run in runs:
        summary["apps"][run.app] = report(run, samples, args.minutes)
    (args.out / "soak.json").write_text(json.dumps(summary, indent=2) + "\n")
    chart(args.out / "soak.csv", args.out / "soak.png", args.minutes * 60)
    print(f"results: {args.out}/soak.csv, soak.json, soak.png; logs {args.out}/APP.log")
    return 0


def chart(samples_csv: Path, path: Path, until: float) -> Path:
    """Resident memory over time, per app: Locust's processes and the app's,
    while the runs ran (`until` seconds)."""
    from loadtests.runs.report import pyplot, save

    with samples_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    apps = list(dict.fromkeys(row["app"] for row in rows))
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    roles = (("locust", "Locust"), ("app", "the app (gunicorn)"))
    for ax, (role, title) in zip(axes, roles, strict=True):
        for n, app in enumerate(apps):
            totals: dict[float, int] = {}
            for row in rows:
                if row["app"] == app and row["role"] == role and float(row["seconds"]) <= until:
                    at = float(row["seconds"])
                    totals[at] = totals.get(at, 0) + int(row["rss_kb"])
            points = sorted(totals.items())
            minutes = [t / 60 for t, _ in points]
            ax.plot(minutes, [kb / 1024 for _, kb in points], color=f"C{n}", label=app)
        ax.set_title(f"Resident memory of {title}, all its processes")
        ax.set_xlabel("minutes")
        ax.legend()
    axes[0].set_ylabel("MB")
    axes[0].set_ylim(bottom=0)
    return save(fig, path)


def memory(samples: list[dict], app: str, role: str, until: float) -> dict:
    """One app's Locust ("locust") or gunicorn ("app") memory, all its processes
    summed, over the run: the samples taken before the run time was up (the
    last ones catch the processes quitting)."""
    totals: dict[float, int] = {}
    for s in samples:
        if s["app"] == app and s["role"] == role and float(s["seconds"]) <= until:
            at = float(s["seconds"])
            totals[at] = totals.get(at, 0) + int(s["rss_kb"])
    points = sorted(totals.items())
    if not points:
        return {}
    slope = slope_mb_per_minute([(t, kb) for t, kb in points if t >= WARM_UP_SECONDS])
    return {
        "first_mb": round(points[0][1] / 1024, 1),
        "last_mb": round(points[-1][1] / 1024, 1),
        "max_mb": round(max(kb for _, kb in points) / 1024, 1),
        "slope_mb_per_min_after_1_min": None if slope is None else round(slope, 3),
    }


def report(run: Run, samples: list[dict], minutes: float) -> dict:
    """What one app's run came to, printed and returned for soak.json."""
    mine = [s for s in samples if s["app"] == run.app]
    result: dict = {"exit_code": run.launcher.returncode}
    for role in ("locust", "app"):
        result[role] = memory(mine, run.app, role, minutes * 60)
    verdict = re.search(r"^  run +verdict +\S+ +(.*)$", run.output(), re.M)
    result["verdict"] = verdict[1] if verdict else None
    result["operations"] = run.operations()
    ops = re.search(r"^  run +operations +(\d+)", run.output(), re.M)
    result["operations"] = int(ops[1]) if ops else result["operations"]
    took = max((s["seconds"] for s in mine), default=0)
    locust, app = result["locust"] or {}, result["app"] or {}
    print(
        f"{run.app}: exit code {result['exit_code']}; "
        f"{result['operations']} operations in ~{took:.0f} s; "
        f"Locust RSS {locust.get('first_mb')} -> {locust.get('last_mb')} MB "
        f"(max {locust.get('max_mb')}), "
        f"slope after 1 min {locust.get('slope_mb_per_min_after_1_min')} MB/min; "
        f"app RSS {app.get('first_mb')} -> {app.get('last_mb')} MB; verdict: {result['verdict']}",
        flush=True,
    )
    return result


if __name__ == "__main__":
    sys.exit(main())
