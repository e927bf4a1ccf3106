"""What the correctness checks look like to a person: the rows of the web UI's
Correctness tab and of its CSV, the line a run prints every 10 s, and the
summary it prints when it ends.

The rows come from one merged Verdict (loadtests/judge/tally.py). The first is the
verdict on the run as a whole, by the rules of the app it judges
(loadtests.judge.checker.unexpected); then one row per kind of anomaly the checker
knows (loadtests.judge.verdict.KINDS) with its latest witness, "n/a" where a check
could not run; then the run's figures. Requests that got no answer are
counted apart: their outcome is unknown, the transport's doing and not the
app's, so they fail nothing (their writes are judged as ambiguous).
"""

import csv
import io
import time
from typing import Any

from loadtests.judge.tally import app_errors, gate
from loadtests.judge.verdict import CHART_SCOPES, KIND, KINDS, SCOPES, Verdict
from loadtests.runs import report
from loadtests.swarm.relay import RUN
from registry import APPS

COLUMNS = (("scope", "Scope"), ("anomaly", "Anomaly"), ("count", "Count"))
COLUMNS += (("example", "Latest example"), ("witness", "Witness (the requests that prove it)"))
FINAL_READ = ("final_reads_wrong", "acknowledged_lost")  # judged only from a final read

# The verdict's status, for its colour: the tab's banner and the HTML report.
OK, LESSON, UNEXPECTED, NONE = "ok", "lesson", "unexpected", "none"


def problems(verdict: Verdict) -> list[str]:
    """What fails the run, by the rules of the app it judges (tally.gate)."""
    app = APPS.get(RUN.app)
    return gate(RUN.app, verdict, app.tolerated if app else None)


def status(verdict: Verdict) -> tuple[str, str]:
    """(status, the verdict in words)."""
    if not verdict.operations:
        started = RUN.epoch > 0
        return NONE, "no operation recorded yet" if started else "no test yet: press Start"
    if found := problems(verdict):
        return UNEXPECTED, "UNEXPECTED: " + "; ".join(found)
    app = APPS.get(RUN.app)
    if app is None:
        return NONE, f"{verdict.anomalies} anomalies; no rule for an app /healthz does not name"
    if app.is_fixed:
        limits = ", ".join(sorted(app.known_limits))
        allowed = f" beyond its known limits ({limits})" if limits else ""
        return OK, f"as expected: {RUN.app} shows no anomaly{allowed}"
    if verdict.anomalies:
        return LESSON, f"as expected: {RUN.app} shows {verdict.anomalies} anomalies, the lesson"
    return LESSON, f"{RUN.app}: no anomaly yet (it takes concurrent users)"


def not_judged(name: str, verdict: Verdict) -> str:
    """Why a check could not run, or "" when it did."""
    if KIND[name].scope == "counter":
        if not verdict.counter_served:
            return "the app does not serve the counter (501)"
        if name in FINAL_READ and not RUN.tally.final_read_judged:
            if not RUN.tally.counter.reset_seen:
                return "no final read to judge: no reset since Reset Stats"
            return "judged from the final read, when the test stops"
    return ""


def rows(verdict: Verdict) -> list[dict[str, Any]]:
    origin = RUN.tally.origin or 0.0
    examples = {anomaly.kind: anomaly for anomaly in verdict.examples}
    _, words = status(verdict)
    table = [
        {"scope": "run", "anomaly": "verdict", "count": RUN.app, "example": words, "witness": ""}
    ]
    for kind in KINDS:
        count: Any = getattr(verdict, kind.field)
        example, witness = not_judged(kind.field, verdict), ""
        if example:
            count = "n/a"
        elif anomaly := examples.get(kind.witness):
            lines = report.format_anomaly(anomaly, origin).splitlines()
            example = lines[0]
            witness = " | ".join(line.strip() for line in lines[1:])
        elif kind.field == "divergence":
            example = f"none across {verdict.workers} app processes"
        table.append(
            {"scope": kind.scope, "anomaly": kind.title, "count": count, "example": example}
            | {"witness": witness}
        )
    sources = ", ".join(f"{name}: {n}" for name, n in sorted(RUN.tally.sources.items()))
    error = RUN.tally.last_error
    last_error = error and f"latest: {error.op} -> {error.status or 'no answer'} {error.error}"
    run = (
        ("operations", verdict.operations, f"by load generator: {sources}"),
        ("app processes seen", verdict.workers, "distinct pids in X-Worker"),
        ("app errors", app_errors(verdict), error and error.status and last_error),
        ("no answer (unknown outcome)", verdict.no_answer, "not the app's: they fail nothing"),
        ("not served (501)", verdict.not_served, ""),
    )
    for title, count, example in run:
        row = {"scope": "run", "anomaly": title, "count": count, "example": example or ""}
        table.append({**row, "witness": ""})
    return table


def format_line(verdict: Verdict) -> str:
    """One line a run prints every 10 s."""
    at = time.monotonic() - RUN.tally.began
    found = " | ".join(
        f"{scope} {sum(getattr(verdict, name) for name in names)}"
        for scope, names in CHART_SCOPES.items()
    )
    _, words = status(verdict)
    return (
        f"correctness +{at:.0f}s: {verdict.operations:,} ops | anomalies: {found} | "
        f"no answer {verdict.no_answer} | app errors {app_errors(verdict)} | {words}"
    )


def format_summary(verdict: Verdict) -> str:
    table = rows(verdict)
    widths = {key: max(len(str(row[key])) for row in table) for key in ("scope", "anomaly")}
    judged = f" judged as {RUN.app}" if RUN.app != RUN.served_app else ""
    lines = [f"\nCorrectness of {RUN.served_app}{judged}, checked from the recorded history:"]
    for row in table:
        lines.append(
            f"  {row['scope']:<{widths['scope']}}  {row['anomaly']:<{widths['anomaly']}}  "
            f"{row['count']!s:>6}  {row['example']}"
        )
    if verdict.examples:
        lines.append("witnesses:")
        origin = RUN.tally.origin or 0.0
        for anomaly in verdict.examples:
            lines.append("  " + report.format_anomaly(anomaly, origin).replace("\n", "\n  "))
    return "\n".join(lines)


def to_csv(table: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[key for key, _ in COLUMNS])
    writer.writeheader()
    writer.writerows(table)
    return out.getvalue()


def series_csv() -> str:
    """Anomalies over time, per scope: the chart's points."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["seconds", *SCOPES, "operations"])
    for at, point in RUN.tally.series:
        writer.writerow([at, *(point[scope] for scope in SCOPES), point["operations"]])
    return out.getvalue()
