"""`make bench` on a reduced size: /healthz and the main write measured, nothing
failed, written, with the CPU time each request cost the app's processes and its
store's."""

import csv
import sys

import pytest

from loadtests.runs import bench


@pytest.mark.parametrize("app", ["fixed_db", "fixed_cache"])
def test_bench_measures_the_main_write_against_the_ceiling(app, isolated_var_dir, tmp_path):
    assert bench.main([app, "--seconds", "0.6", "--rounds", "2", "--out", str(tmp_path)]) == 0
    with (tmp_path / "bench.csv").open() as f:
        rows = {r["route"]: r for r in csv.DictReader(f)}
    assert list(rows) == ["GET /healthz", "POST /counter/increment"]
    assert rows["GET /healthz"]["vs_healthz"] == "1.0"
    for row in rows.values():
        assert int(row["req_per_s"]) > 0
        assert row["failed"] == "0"
        if sys.platform == "linux":  # CPU time comes from /proc
            assert int(row["app_cpu_us"]) > 0
    if sys.platform == "linux":
        # Only fixed_cache has a store process of ours; every INCR costs it CPU.
        increment = rows["POST /counter/increment"]
        assert (increment["store_cpu_us"] != "") == (app == "fixed_cache")
        if app == "fixed_cache":
            assert int(increment["store_cpu_us"]) > 0
