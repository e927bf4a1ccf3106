"""`make bench` on a reduced size: /healthz and the main write measured, nothing
failed, written, with the CPU time each request cost the app's processes and its
store's, the store's own floor, the best case the model gives, and the split of
the app's CPU between web stack, store client and this project's code."""

import csv
import sys

import pytest

from loadtests.runs import bench, in_process

SHORT = ["--seconds", "0.6", "--rounds", "1", "--profile-seconds", "0.3"]
SHARES = ("web_cpu_share", "store_client_cpu_share", "project_cpu_share")
# Each app's references beside it (loadtests/runs/bare/), on the same store:
# fixed_session's are the bare file write, and Flask-Session over that write.
BARE = {
    "fixed_db": ("bare_sqlite",),
    "fixed_cache": ("bare_valkey",),
    "fixed_session": ("bare_session", "bare_flask_session"),
}
MAIN_WRITE = {app: "POST /counter/increment" for app in BARE} | {"fixed_session": "POST /visits"}


def run_bench(app: str, out) -> dict[str, dict[str, str]]:
    """The app's rows by route; its bare references' rows are checked here."""
    assert bench.main([app, *SHORT, "--out", str(out)]) == 0
    with (out / "bench.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["app"] for r in rows] == [app, app] + [b for b in BARE[app] for _ in (1, 2)]
    for name in BARE[app]:
        bare = {r["route"]: r for r in rows if r["app"] == name}
        assert list(bare) == ["GET /healthz", MAIN_WRITE[app]]
        for row in bare.values():
            assert int(row["req_per_s"]) > 0 and row["failed"] == "0"
        if sys.platform == "linux":  # the same model, from the bare app's own /healthz
            assert int(bare[MAIN_WRITE[app]]["best_case_req_s"]) > 0
    return {r["route"]: r for r in rows if r["app"] == app}


@pytest.mark.parametrize("app", ["fixed_db", "fixed_cache"])
def test_bench_measures_the_main_write_against_the_ceiling(app, isolated_var_dir, tmp_path):
    rows = run_bench(app, tmp_path)
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
        check_floor_and_best_case(rows, "POST /counter/increment")


@pytest.mark.skipif(sys.platform != "linux", reason="CPU time comes from /proc")
def test_the_session_store_has_a_floor_too(isolated_var_dir, tmp_path):
    check_floor_and_best_case(run_bench("fixed_session", tmp_path), "POST /visits")


def check_floor_and_best_case(rows: dict[str, dict[str, str]], write: str) -> None:
    """The floor, the best case and the split, on the write's row only; the
    best case is the model bench.py names, recomputed from the row's figures."""
    healthz, row = rows["GET /healthz"], rows[write]
    assert healthz["floor_req_s"] == healthz["best_case_req_s"] == healthz["vs_best_case"] == ""
    floor, best = int(row["floor_req_s"]), int(row["best_case_req_s"])
    assert floor > 0 and int(row["floor_cpu_us"]) > 0
    healthz_cpu = int(healthz["app_cpu_us"]) + int(healthz["store_cpu_us"] or 0)
    model = int(healthz["req_per_s"]) * healthz_cpu / (healthz_cpu + int(row["floor_cpu_us"]))
    assert best == pytest.approx(min(model, floor), rel=0.03)  # the CSV's figures are rounded
    assert float(row["vs_best_case"]) == pytest.approx(int(row["req_per_s"]) / best, abs=0.011)
    for r in (healthz, row):
        assert 0 < int(r["kernel_cpu_us"]) < int(r["app_cpu_us"])
        shares = [float(r[name]) for name in SHARES]
        assert all(0 <= s <= 1 for s in shares) and sum(shares) == pytest.approx(1, abs=0.005)
        assert float(r["web_cpu_share"]) > 0
        assert float(r["cores_busy"]) > 0
        assert float(r["switches_per_req"]) > 0  # a request wakes a thread at least
    # The write runs this project's code and its store's client; /healthz hardly any.
    assert float(row["project_cpu_share"]) > float(healthz["project_cpu_share"])
    assert float(row["store_client_cpu_share"]) > 0


def test_in_process_measures_the_write_and_its_bare_app_in_one_thread(isolated_var_dir):
    """loadtests/runs/in_process.py: the app's row, then its bare app's, each
    write costing more of the thread's CPU than its /healthz."""
    args = in_process.argparse.Namespace(requests=50, rounds=2)
    app, bare = in_process.measure_app("fixed_db", args)
    assert (app["app"], bare["app"]) == ("fixed_db (SQLite)", "bare_sqlite")
    for row in (app, bare):
        assert 0 < row["healthz_us"] < row["write_us"]


def test_in_process_measures_fixed_session_beside_flask_session_alone(isolated_var_dir):
    """fixed_session has two references: the bare file write, and Flask-Session
    over that write, which reads and writes the session as any app of it does."""
    args = in_process.argparse.Namespace(requests=50, rounds=2)
    rows = in_process.measure_app("fixed_session", args)
    assert [r["app"] for r in rows] == ["fixed_session", "bare_session", "bare_flask_session"]
    for row in rows:
        assert 0 < row["healthz_us"] < row["write_us"]


def test_the_flask_session_reference_keeps_each_users_visits_in_one_file(tmp_path, monkeypatch):
    """The reference does the write it stands for: a session read and saved
    per append, one file per user, rewritten in place."""
    from loadtests.runs.bare import flask_session

    monkeypatch.setenv("BARE_SESSION_DIR", str(tmp_path))
    app = flask_session.create_app()
    ann, bob = app.test_client(), app.test_client()
    for client, articles in ((ann, "abc"), (bob, "xy")):
        for article in articles:
            assert client.post("/visits", json={"article": article}).status_code == 201
    assert ann.post("/visits", json={"article": "d"}).json == {"visits": list("abcd")}
    assert bob.post("/visits", json={"article": "z"}).json == {"visits": list("xyz")}
    assert len(list(tmp_path.iterdir())) == 2
