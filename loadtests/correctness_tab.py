"""What the correctness checks look like to a person: the web UI's Correctness
tab, its CSV download, and the summary a run prints when it ends.

The rows come from one merged Verdict (loadtests.tally) and name every kind
of anomaly the checker knows (loadtests.checker.KINDS), with its latest
witness; the last row is the verdict on the run as a whole, by the rules of
the app it judges (loadtests.checker.unexpected).
"""

import csv
import io
import json
import time
from typing import Any

from flask import Response, jsonify, request
from locust.env import Environment

from loadtests import report
from loadtests.checker import KINDS, Verdict, unexpected
from loadtests.relay import RUN
from serve.registry import APPS

COLUMNS = (("scope", "Scope"), ("anomaly", "Anomaly"), ("count", "Count"))
COLUMNS += (("example", "Latest example"), ("witness", "Witness (the requests that prove it)"))


def problems(verdict: Verdict) -> list[str]:
    found = unexpected(RUN.app, verdict)
    if not verdict.operations:
        found.append("no operation was recorded")
    return found


def verdict_line(verdict: Verdict) -> str:
    if found := problems(verdict):
        return "UNEXPECTED: " + "; ".join(found)
    app = APPS.get(RUN.app)
    if app is None:
        return f"{verdict.anomalies} anomalies; no rule for an app that /healthz does not name"
    if app.is_fixed:
        limits = ", ".join(sorted(app.known_limits))
        allowed = f" beyond its known limits ({limits})" if limits else ""
        return f"as expected: {RUN.app} shows no anomaly{allowed}"
    if verdict.anomalies:
        return f"as expected: {RUN.app} shows {verdict.anomalies} anomalies, the lesson"
    return f"{RUN.app}: no anomaly yet (it takes concurrent users)"


def rows(verdict: Verdict) -> list[dict[str, Any]]:
    origin = RUN.tally.origin or 0.0
    examples = {anomaly.kind: anomaly for anomaly in verdict.examples}
    table = []
    for kind in KINDS:
        scope, title, name = kind.scope, kind.title, kind.field
        count: Any = getattr(verdict, name)
        if scope == "counter" and not verdict.counter_served:
            count = "n/a"  # the app answers 501: nothing to judge
        anomaly = examples.get(kind.witness)
        example, witness = "", ""
        if anomaly:
            lines = report.format_anomaly(anomaly, origin).splitlines()
            example = lines[0]
            witness = " | ".join(line.strip() for line in lines[1:])
        if name == "divergence" and verdict.counter_served:
            example = example or f"none across {verdict.workers} app processes"
        table.append(
            {
                "scope": scope,
                "anomaly": title,
                "count": count,
                "example": example,
                "witness": witness,
            }
        )
    sources = ", ".join(f"{name}: {n}" for name, n in sorted(RUN.tally.sources.items()))
    error = RUN.tally.last_error
    run = (
        ("operations", verdict.operations, f"by load generator: {sources}"),
        ("app processes seen", verdict.workers, "distinct pids in X-Worker"),
        ("errors", verdict.errors, error and f"{error.op} -> {error.status} {error.error}"),
        ("not served (501)", verdict.not_served, ""),
        ("verdict", RUN.app, verdict_line(verdict)),
    )
    for title, count, example in run:
        row = {"scope": "run", "anomaly": title, "count": count, "example": example or ""}
        table.append({**row, "witness": ""})
    return table


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


def add_correctness_tab(environment: Environment) -> None:
    """Locust's web UI extension hooks: an extra tab and table fed from the stats
    the UI polls, a JSON view, and a CSV among the downloads."""
    web_ui = environment.web_ui
    base = (getattr(environment.parsed_options, "web_base_path", "") or "").rstrip("/")
    web_ui.template_args["extended_tabs"] = [{"title": "Correctness", "key": "correctness"}]
    web_ui.template_args["extended_tables"] = [
        {"key": "correctness", "structure": [{"key": k, "title": t} for k, t in COLUMNS]}
    ]
    web_ui.template_args["extended_csv_files"] = [
        {"href": "./correctness/csv", "title": "Download correctness CSV"}
    ]

    @web_ui.app.after_request
    def add_correctness_rows(response: Response) -> Response:
        if request.path != f"{base}/stats/requests" or response.status_code != 200:
            return response
        table = rows(RUN.tally.verdict(live=True))
        stats = response.get_json()
        stats["extended_stats"] = [{"key": "correctness", "data": table}]
        response.set_data(json.dumps(stats))
        return response

    @web_ui.app.route(f"{base}/correctness")
    def correctness_json() -> Response:
        verdict = RUN.tally.verdict(live=True)
        return jsonify(
            {
                "app": RUN.app,
                "counts": verdict.counts(),
                "sources": RUN.tally.sources,
                "rows": rows(verdict),
            }
        )

    @web_ui.app.route(f"{base}/correctness/csv")
    def correctness_csv() -> Response:
        name = f"correctness_{RUN.app}_{time.strftime('%Y%m%d-%H%M%S')}.csv"
        return Response(
            to_csv(rows(RUN.tally.verdict(live=True))),
            mimetype="text/csv",
            headers={"Content-Disposition": f"attachment; filename={name}"},
        )
