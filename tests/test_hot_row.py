"""PostgreSQL's hot row (loadtests/runs/hot_row.py), briefly: every variant
measured at each connection count, and the remedies correct: a sequence's
values all distinct, sharded rows summing to the increments made."""

from loadtests.runs import hot_row


def test_hot_row_and_its_remedies_are_measured_and_correct(isolated_var_dir, capsys):
    cells = hot_row.run([1, 4], seconds=0.6, rounds=1)
    assert [(c.variant, c.connections) for c in cells] == [
        (v, n) for n in (1, 4) for v in hot_row.VARIANTS
    ]
    for cell in cells:
        assert cell.increments > 0 and cell.correct, cell
        if cell.variant == "batched":
            assert cell.increments == cell.commits * hot_row.BATCH
        else:
            assert cell.increments == cell.commits
    sequence = [c for c in cells if c.variant == "sequence"]
    for cell in sequence:
        assert len(set(cell.values)) == len(cell.values) > 0
    rows = hot_row.rows(cells)
    assert all(r["vs_hot_row"] == 1.0 for r in rows if r["variant"] == "hot row")
    assert hot_row.main(["--connections", "2", "--seconds", "0.4", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "increments/s" in out and "commits/s" in out
    assert [line.split()[0] for line in out.splitlines() if line.endswith(" yes")] == [
        "hot",
        "sequence",
        "sharded",
        "batched",
    ]
