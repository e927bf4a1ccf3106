"""The correctness checks in Locust's web UI and in its reports.

- The Correctness tab, through Locust's extension hooks (extended_tabs,
  extended_tables, extended_csv_files): its rows ride on the statistics the
  UI polls every 2 s. A small script (correctness_tab.js) puts the verdict
  above them in its colour, and the chart of anomalies over time.
- /correctness/timeline: the witnesses found so far, drawn (loadtests/timeline/),
  one link per witness in the tab.
- /correctness (JSON), /correctness/csv, /correctness/history.csv and
  /correctness/chart.svg.
- Locust's HTML report (Download Report, or --html): a section with the
  verdict, the chart and the rows, after Locust's own.
- --csv PREFIX: PREFIX_correctness.csv and PREFIX_correctness_history.csv.
"""

import json
import time
from html import escape
from pathlib import Path
from typing import Any

from flask import Response, jsonify, request
from locust.env import Environment

from loadtests.swarm.correctness_chart import chart_svg
from loadtests.swarm.correctness_tab import COLUMNS, rows, series_csv, status, to_csv
from loadtests.swarm.relay import RUN
from loadtests.timeline import render as timeline

SCRIPT = Path(__file__).with_name("correctness_tab.js")
COLOURS = {"ok": "#2e7d32", "lesson": "#b26a00", "unexpected": "#c62828", "none": "#616161"}


def chart() -> str:
    verdict = RUN.tally.verdict()
    return chart_svg(RUN.tally.series, skip=() if verdict.counter_served else ("counter",))


def report_section() -> str:
    """The correctness as HTML, for Locust's report."""
    verdict = RUN.tally.verdict()
    state, words = status(verdict)
    judged = f" judged as {RUN.app}" if RUN.app != RUN.served_app else ""
    head = "".join(f"<th>{escape(title)}</th>" for _, title in COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(str(row[key]))}</td>" for key, _ in COLUMNS) + "</tr>"
        for row in rows(verdict)
    )
    return (
        '<section id="correctness" style="font-family:sans-serif;margin:24px">'
        f"<h2>Correctness of {escape(RUN.served_app)}{escape(judged)}</h2>"
        f'<p style="background:{COLOURS[state]};color:white;padding:12px 16px;'
        f'font-size:20px;font-weight:bold">{escape(words)}</p>'
        f"{chart()}"
        '<table border="1" cellpadding="4" style="border-collapse:collapse;font-size:13px">'
        f"<tr>{head}</tr>{body}</table></section>"
    )


def with_section(html: str) -> str:
    at = html.rfind("</body>")
    return html[:at] + report_section() + html[at:] if at >= 0 else html + report_section()


def write_reports(environment: Environment) -> list[str]:
    """At the end of a run: the section into --html's report, the CSVs beside --csv's."""
    options = environment.parsed_options
    written = []
    html_file = getattr(options, "html_file", None)
    if html_file and Path(html_file).exists():
        Path(html_file).write_text(with_section(Path(html_file).read_text(encoding="utf-8")))
        written.append(html_file)
    if prefix := getattr(options, "csv_prefix", None):
        table = Path(f"{prefix}_correctness.csv")
        table.write_text(to_csv(rows(RUN.tally.verdict())))
        history = Path(f"{prefix}_correctness_history.csv")
        history.write_text(series_csv())
        written += [str(table), str(history)]
    return written


def add_correctness_tab(environment: Environment) -> None:
    """Locust's web UI extension hooks, the script, and the routes."""
    web_ui = environment.web_ui
    base = (getattr(environment.parsed_options, "web_base_path", "") or "").rstrip("/")
    web_ui.template_args["extended_tabs"] = [{"title": "Correctness", "key": "correctness"}]
    web_ui.template_args["extended_tables"] = [
        {"key": "correctness", "structure": [{"key": k, "title": t} for k, t in COLUMNS]}
    ]
    web_ui.template_args["extended_csv_files"] = [
        {"href": "./correctness/csv", "title": "Download correctness CSV"},
        {"href": "./correctness/history.csv", "title": "Download anomalies over time CSV"},
    ]

    @web_ui.app.after_request
    def add_correctness(response: Response) -> Response:
        if response.status_code != 200:
            return response
        if request.path == f"{base}/stats/requests":
            stats = response.get_json()
            table = rows(RUN.tally.verdict())
            stats["extended_stats"] = [{"key": "correctness", "data": table}]
            response.set_data(json.dumps(stats))
        elif request.path == f"{base}/stats/report":
            response.set_data(with_section(response.get_data(as_text=True)))
        elif request.path in (f"{base}/", base) and response.mimetype == "text/html":
            script = f'<script src="{base}/correctness/tab.js" defer></script></head>'
            response.set_data(response.get_data(as_text=True).replace("</head>", script, 1))
        return response

    @web_ui.app.route(f"{base}/correctness")
    def correctness_json() -> Response:
        verdict = RUN.tally.verdict()
        state, words = status(verdict)
        answer: dict[str, Any] = {"app": RUN.app, "status": state, "verdict": words}
        answer |= {"colour": COLOURS[state], "counts": verdict.counts()}
        answer["timelines"] = [
            {"kind": a.kind, "href": f"{base}/correctness/timeline#anomaly-{n}"}
            for n, a in enumerate(verdict.examples)
        ]
        return jsonify(answer | {"sources": RUN.tally.sources, "rows": rows(verdict)})

    @web_ui.app.route(f"{base}/correctness/timeline")
    def correctness_timeline() -> Response:
        verdict = RUN.tally.verdict()
        witnesses = list({id(e): e for a in verdict.examples for e in a.witness}.values())
        title = f"{RUN.served_app}: the witnesses found so far"
        return Response(timeline(title, witnesses, verdict), mimetype="text/html")

    @web_ui.app.route(f"{base}/correctness/csv")
    def correctness_csv() -> Response:
        return download(to_csv(rows(RUN.tally.verdict())), "correctness")

    @web_ui.app.route(f"{base}/correctness/history.csv")
    def correctness_history() -> Response:
        return download(series_csv(), "correctness_history")

    @web_ui.app.route(f"{base}/correctness/chart.svg")
    def correctness_chart() -> Response:
        return Response(chart(), mimetype="image/svg+xml", headers={"Cache-Control": "no-store"})

    @web_ui.app.route(f"{base}/correctness/tab.js")
    def correctness_script() -> Response:
        return Response(SCRIPT.read_text(), mimetype="text/javascript")


def download(text: str, name: str) -> Response:
    filename = f"{name}_{RUN.app}_{time.strftime('%Y%m%d-%H%M%S')}.csv"
    return Response(
        text,
        mimetype="text/csv",
        headers={"Content-Disposition": f"attachment; filename={filename}"},
    )
