"""The correctness matrix on a reduced size: the shape of server decides what
breaks in broken_global (gevent's greenlets as surely as threads), and
nothing breaks in fixed_db."""

import csv

from loadtests import matrix

SHAPES = ["sync-1", "sync-4", "gthread-1x8", "gevent-1x50"]


def test_the_matrix_tells_threads_from_processes(isolated_var_dir, tmp_path, capsys):
    apps = ["--apps", "broken_global", "fixed_db", "--shapes", *SHAPES]
    exit_code = matrix.main([*apps, "--users", "8", "--ops", "6", "--out", str(tmp_path)])
    assert exit_code == 0  # no anomaly in the fixed app
    with (tmp_path / "matrix.csv").open() as f:
        cell = {(r["app"], r["shape"]): r for r in csv.DictReader(f)}
    assert (tmp_path / "matrix.png").stat().st_size > 10_000
    assert "results:" in capsys.readouterr().out

    one_sync_worker = cell["broken_global", "sync-1"]
    assert one_sync_worker["lost updates"] == one_sync_worker["divergence"] == "0"
    assert one_sync_worker["greet"] == "0"  # one request at a time: exact...
    assert int(one_sync_worker["visits"]) > 0  # ...except one list for every user

    processes = cell["broken_global", "sync-4"]
    assert processes["lost updates"] == "0"
    assert int(processes["divergence"]) > 0

    threads = cell["broken_global", "gthread-1x8"]
    assert int(threads["lost updates"]) > 0
    assert threads["divergence"] == "0"
    assert int(threads["greet"]) > 0

    greenlets = cell["broken_global", "gevent-1x50"]  # one thread, yet globals break
    assert int(greenlets["lost updates"]) > 0
    assert greenlets["divergence"] == "0"
    assert int(greenlets["greet"]) > 0

    for shape in SHAPES:
        row = cell["fixed_db", shape]
        assert [row[g] for g in matrix.GROUPS] == ["0"] * len(matrix.GROUPS)
