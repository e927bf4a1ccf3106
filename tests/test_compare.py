"""`make compare` on a reduced size: the table, the JSON, the CSV and charts."""

import csv
import json

from loadtests.runs import hammer


def test_compare_writes_its_table_and_charts(isolated_var_dir, tmp_path, capsys):
    apps = ["broken_global", "fixed_session", "fixed_db"]
    args = [*apps, "--users", "4", "--ops", "3", "--charts", "--out", str(tmp_path)]
    assert hammer.main(args) == 0  # the fixed apps showed nothing unexpected
    out = capsys.readouterr().out
    assert "lost updates" in out
    assert "results: " in out

    with (tmp_path / "compare.csv").open() as f:
        rows = {r["app"]: r for r in csv.DictReader(f)}
    assert list(rows) == apps
    assert rows["fixed_session"]["lost_updates"] == "n/a"  # a 501: not judged
    assert all(float(r["ceiling_rps"]) > 0 for r in rows.values())
    history = json.loads((tmp_path / "hammer.json").read_text())["apps"]["fixed_db"]["history"]
    assert {e["op"] for e in history} >= {"increment", "add_visit", "greet"}
    for chart in ("anomalies.png", "counter.png", "speed.png"):
        assert (tmp_path / chart).stat().st_size > 10_000
