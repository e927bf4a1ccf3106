"""The timeline (loadtests/timeline/): one HTML file per run, drawn from a real
recorded history of broken_global under gunicorn, holds every operation and
every witness; a longer history is cut to the windows around its witnesses;
in real Chromium both views draw bars and a click on an anomaly outlines its
witness; a real run of more than LIMIT operations draws exactly LIMIT bars
(`make bench-timeline` times that page's opening: no time is checked here).

Chromium and Selenium: see loadtests/clients/browser.py; without them the browser
tests are skipped and say how to get them, with CI=true they fail instead.
"""

import json
from html.parser import HTMLParser

import pytest

from loadtests.clients import browser
from loadtests.runs import timeline_bench
from loadtests.runs.hammer import hammer_app
from loadtests.timeline import LIMIT, render, write_timeline
from loadtests.timeline.render import label
from tests.conftest import need_a_browser

pytestmark = pytest.mark.gunicorn

VOID = {"meta", "br", "img", "input", "link", "hr"}


class Parsed(HTMLParser):
    """Checks that every element is closed in order, and keeps the data blob."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.blob = ""
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1:]}>"
        self.open.pop()

    def handle_data(self, data):
        if (
            self.open
            and self.open[-1] == "script"
            and self.tags[-1][1].get("id") == "timeline-data"
        ):
            self.blob += data


def parse(page: str) -> tuple[Parsed, dict]:
    parsed = Parsed()
    parsed.feed(page)
    parsed.close()
    assert parsed.open == [], f"unclosed: {parsed.open}"
    return parsed, json.loads(parsed.blob)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    verdict, history, _ = hammer_app("broken_global", users=8, ops=10, max_seconds=30)
    assert verdict.examples, "broken_global showed no anomaly: nothing to draw"
    return verdict, history


def drawn_witnesses(data: dict) -> list[list[str]]:
    return [sorted(data["ops"][i][4] for i in a["ops"]) for a in data["anomalies"]]


def test_a_real_run_is_one_well_formed_file_with_every_operation_and_witness(run):
    verdict, history = run
    parsed, data = parse(render("broken_global", history, verdict))
    assert len(data["ops"]) == data["total"] == len(history)
    assert data["note"] == ""  # nothing cut
    assert [a["kind"] for a in data["anomalies"]] == [a.kind for a in verdict.examples]
    for anomaly, drawn in zip(verdict.examples, drawn_witnesses(data), strict=True):
        assert drawn == sorted(label(e) for e in anomaly.witness), anomaly.kind
    # Self-contained: no script, style or image fetched from anywhere.
    assert not [attrs for tag, attrs in parsed.tags if "src" in attrs or "href" in attrs]
    assert {tag for tag, _ in parsed.tags} >= {"svg", "script", "style"}


def test_a_long_history_is_cut_to_windows_around_the_witnesses_and_says_so(run):
    verdict, history = run
    limit = len(history) // 4
    _, data = parse(render("broken_global", history, verdict, limit=limit))
    assert len(data["ops"]) < len(history)
    assert f"{len(history):,} operations" in data["note"]
    assert sum(n for _, _, n in data["gaps"]) == len(history) - len(data["ops"])
    for anomaly, drawn in zip(verdict.examples, drawn_witnesses(data), strict=True):
        assert drawn == sorted(label(e) for e in anomaly.witness), anomaly.kind


def test_fault_bands_are_drawn_from_the_fault_records(run):
    verdict, history = run
    fault = {"name": "kill worker", "at": 0.05, "seconds": 0.02, "detail": "SIGKILL worker 1"}
    _, data = parse(render("broken_global", history, verdict, [fault], origin=history[0].start))
    assert data["faults"] == [
        {"name": "kill worker", "from": 50.0, "to": 70.0, "detail": "SIGKILL worker 1"}
    ]


def test_in_chromium_both_views_draw_bars_and_a_click_outlines_the_witness(run, tmp_path):
    need_a_browser()
    verdict, history = run
    path = write_timeline(tmp_path / "timeline.html", "broken_global", history, verdict)
    with browser.browser(1200, 800) as driver:
        timeline_bench.opened(driver, path)  # until the page's `rendered` mark
        find = lambda css: driver.find_elements("css selector", css)  # noqa: E731
        assert len(find("#bars rect.op")) == len(history)
        users = {e.text for e in find("#names text")}
        assert {e.user for e in history} == users

        find("#by-worker")[0].click()
        assert len(find("#bars rect.op")) == len(history)
        assert all(e.text.startswith("pid ") for e in find("#names text")), "lanes per worker"

        second = find("#anomalies li")[1]
        second.click()
        assert "current" in second.get_attribute("class")
        outlined = find("#bars rect.op.current")
        assert len(outlined) == len(verdict.examples[1].witness)
        assert find("#bars polyline.link.current") or len(outlined) == 1
        # The witness is scrolled into the visible part of the chart.
        chart = find("#chart")[0].rect
        box = outlined[0].rect
        assert chart["x"] <= box["x"] <= chart["x"] + chart["width"]
        assert chart["y"] <= box["y"] <= chart["y"] + chart["height"]

        find("#next")[0].click()
        assert "current" in find("#anomalies li")[2 % len(verdict.examples)].get_attribute("class")


def test_a_history_over_the_limit_draws_exactly_limit_bars_in_chromium(tmp_path):
    """The benchmark's page (make bench-timeline, which times its opening):
    a real run of more than LIMIT operations, cut to LIMIT, opened from disk."""
    need_a_browser()
    path, operations = timeline_bench.long_timeline(tmp_path)
    assert operations > LIMIT
    with browser.browser(1400, 900) as driver:
        _, bars = timeline_bench.opened(driver, path)
    assert bars == LIMIT
