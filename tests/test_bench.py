"""`make bench` on a reduced size: every route measured, nothing failed, written."""

import csv

from loadtests import bench


def test_bench_measures_the_main_write_against_the_ceiling(isolated_var_dir, tmp_path):
    assert (
        bench.main(["fixed_db", "--seconds", "0.6", "--rounds", "2", "--out", str(tmp_path)]) == 0
    )
    with (tmp_path / "bench.csv").open() as f:
        rows = {r["route"]: r for r in csv.DictReader(f)}
    assert list(rows) == ["GET /healthz", "POST /counter/increment"]
    assert rows["GET /healthz"]["vs_healthz"] == "1.0"
    for row in rows.values():
        assert int(row["req_per_s"]) > 0
        assert row["failed"] == "0"
