"""python -m loadtests.check: the spec's errors with their lines, each model's
broken and fixed case on the small shop (examples/shop), the restart and the
two instances, the four apps' contract, JUnit output and the Python function;
the store a spec names, and the store-paused shape on exercise 8's app; a
shape run again when its requests reached one of its workers (exercise 5).

The servers are shared per module: one check of the broken shop and one of
the fixed shop, each under gthread, restart and two-instances."""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from xml.etree import ElementTree

import pytest

from loadtests.check import Result, SpecError, check_app
from loadtests.check.__main__ import main
from loadtests.check.output import write_json, write_junit
from loadtests.check.run import DEFAULT_SHAPES, default_shapes, run_check
from loadtests.check.servers import skip_reason
from loadtests.check.spec import load_spec
from plumbing.config import REPO_ROOT
from serve import uwsgi
from serve.pids import descendants, parent_pid, proc_stat, start_time
from serve.store import Paused
from serve.valkey import EmbeddedValkey

SHOP = REPO_ROOT / "examples" / "shop"
SPEC = SHOP / "shop.toml"
CONTRACT = REPO_ROOT / "loadtests" / "check" / "specs" / "contract.toml"
SHAPES_HERE = ["gthread", "restart", "two-instances"]
MODELS = ["hits", "cart", "hello", "banner", "me"]


@pytest.fixture(scope="module")
def broken():
    return check_app(None, SPEC, chdir=SHOP / "broken", shapes=SHAPES_HERE)


@pytest.fixture(scope="module")
def fixed():
    return check_app(None, SPEC, chdir=SHOP / "fixed", shapes=SHAPES_HERE)


def spec_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spec.toml"
    path.write_text(textwrap.dedent(text))
    return path


def error_of(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


def test_unknown_model_names_its_line(tmp_path, capsys):
    path = spec_file(
        tmp_path,
        """\
        [app]
        target = "shop:create_app"

        [[countr]]
        name = "hits"
        """,
    )
    err = error_of(capsys, ["--spec", str(path)])
    assert "line 4" in err and "unknown model [[countr]]" in err and "Traceback" not in err


def test_missing_key_names_the_table_line(tmp_path, capsys):
    path = spec_file(
        tmp_path,
        """\
        [app]
        target = "shop:create_app"

        [[counter]]
        name = "hits"
        increment = "POST /hits"
        value = "value"
        """,
    )
    err = error_of(capsys, ["--spec", str(path)])
    assert "line 4" in err and "missing the key 'read'" in err


def test_bad_route_names_its_line(tmp_path, capsys):
    path = spec_file(
        tmp_path,
        """\
        [app]
        target = "shop:create_app"
        [[per_request]]
        name = "hello"
        expect = "{token}"
        request = "FETCH hello"
        """,
    )
    err = error_of(capsys, ["--spec", str(path)])
    assert "line 6" in err and "a route is a method and a path" in err


def test_a_route_that_404s_names_its_line(tmp_path, capsys):
    text = SPEC.read_text().replace('read = "GET /hits"', 'read = "GET /hitz"')
    path = tmp_path / "shop.toml"
    path.write_text(text)
    line = text.splitlines().index('read = "GET /hitz"') + 1
    err = error_of(
        capsys, ["--spec", str(path), "--chdir", str(SHOP / "fixed"), "--shapes", "gthread"]
    )
    assert f"line {line}" in err and "404" in err and "Traceback" not in err


def test_a_value_path_not_in_the_answer_names_its_line(tmp_path):
    text = SPEC.read_text().replace('value = "text"', 'value = "banner.text"')
    path = tmp_path / "shop.toml"
    path.write_text(text)
    line = text.splitlines().index('value = "banner.text"') + 1
    with pytest.raises(SpecError, match=rf"line {line} .*'banner.text' is not in the answer"):
        check_app(None, path, chdir=SHOP / "fixed", shapes=["gthread"], models=["banner"])


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("shape", SHAPES_HERE)
def test_the_broken_shop_fails_where_it_breaks(broken, model, shape):
    cell = broken.cell(model, shape)
    assert cell.failed, f"{model} [{shape}]: {cell.text()}"
    assert cell.verdict.examples and all(a.witness for a in cell.verdict.examples)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("shape", SHAPES_HERE)
def test_the_fixed_shop_passes(fixed, model, shape):
    cell = fixed.cell(model, shape)
    assert not cell.failed, cell.verdict.summary()
    assert cell.verdict.operations > 20


def test_two_shapes_run_at_once(fixed):
    # Each shape's own time, from its start to its last read, added up, is
    # more than the whole check took: the shapes overlapped.
    per_shape = {cell.shape: cell.seconds for cell in fixed.cells if not cell.skipped}
    assert len(per_shape) >= 2, fixed.report()
    assert sum(per_shape.values()) > fixed.seconds, (per_shape, fixed.seconds)


def test_shop_as_a_users_own_test_would_check_it():
    """The example of docs/check-your-own-app.md: a user's pytest calls the check."""
    result = check_app(
        "shop:create_app",
        REPO_ROOT / "examples/shop/shop.toml",
        chdir=REPO_ROOT / "examples/shop/fixed",
        shapes=["gthread"],
    )
    assert result.ok, result.report()


def test_the_witnesses_use_the_demo_words(broken):
    kinds = {a.kind for c in broken.failed for a in c.verdict.examples}
    assert {"lost update", "divergence", "lost visit", "request leak", "stale read"} <= kinds
    assert "lost identity" in kinds


def test_junit_has_a_failed_testcase_per_failed_cell(broken, tmp_path):
    root = ElementTree.parse(write_junit(broken, tmp_path / "check.xml")).getroot()
    cases = {case.get("name"): case for case in root.iter("testcase")}
    assert len(cases) == len(MODELS) * len(SHAPES_HERE)
    assert cases["hits [gthread]"].find("failure") is not None
    assert "lost update" in cases["hits [gthread]"].find("failure").text


def test_junit_passes_the_fixed_app(fixed, tmp_path):
    root = ElementTree.parse(write_junit(fixed, tmp_path / "check.xml")).getroot()
    assert root.get("failures") == "0" and not list(root.iter("failure"))


def test_gevent_and_uwsgi_run_the_shop_and_uwsgi_keeps_its_key(tmp_path):
    """uWSGI loads the app before the fork: one secret key for both workers,
    so the broken shop's login holds there, and not under gevent."""
    shapes = [s for s in ("gevent", "uwsgi") if skip_reason(s) is None]
    assert shapes == ["gevent", "uwsgi"], [skip_reason(s) for s in ("gevent", "uwsgi")]
    result = check_app(None, SPEC, chdir=SHOP / "broken", shapes=shapes, models=["hits", "me"])
    assert result.cell("hits", "gevent").failed and result.cell("hits", "uwsgi").failed
    assert result.cell("me", "gevent").failed and not result.cell("me", "uwsgi").failed


def test_a_shape_that_cannot_run_here_is_skipped_with_its_reason(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(uwsgi, "binary", lambda: tmp_path / "no-uwsgi")  # as if never built
    argv = ["--spec", str(SPEC), "--chdir", str(SHOP / "fixed"), "--shapes", "uwsgi,flask"]
    assert main([*argv, "--junit", str(tmp_path / "j.xml")]) == 0
    out = capsys.readouterr().out
    assert "uwsgi: skipped: uWSGI is not installed" in out
    skipped = [c for c in ElementTree.parse(tmp_path / "j.xml").getroot().iter("testcase")
               if c.find("skipped") is not None]  # fmt: skip
    assert {c.get("name") for c in skipped} == {f"{m} [uwsgi]" for m in MODELS}


def test_the_contract_spec_finds_in_broken_global_what_the_demo_finds():
    result = check_app(
        "broken_global.app:create_app", CONTRACT, chdir=REPO_ROOT, shapes=["gthread"]
    )
    counter = result.cell("counter", "gthread").verdict.counts
    assert {"lost_updates", "divergence", "final_reads_wrong"} <= set(counter)
    assert {"visits_lost", "visits_leaked"} <= set(result.cell("visits", "gthread").verdict.counts)
    assert result.cell("greet", "gthread").verdict.counts.get("request_leaks")


def test_the_contract_spec_passes_fixed_db():
    result = check_app("fixed_db.app:create_app", CONTRACT, chdir=REPO_ROOT, shapes=["gthread"])
    assert result.ok, [c.text() for c in result.cells]


def test_cli_json_and_exit_code(tmp_path, capsys):
    out = tmp_path / "check.json"
    argv = ["--spec", str(SPEC), "--chdir", str(SHOP / "fixed"), "--shapes", "sync,flask"]
    assert main([*argv, "--json", str(out), "--replay-file", str(tmp_path / "r.json")]) == 0
    payload = json.loads(out.read_text())
    assert {c["verdict"] for c in payload["cells"]} == {"ok"}
    assert "no anomaly found" in capsys.readouterr().out


def test_a_spec_parses_with_each_models_lines():
    spec = load_spec(SPEC)
    assert [m.kind for m in spec.models] == [
        "counter",
        "per_user_list",
        "per_request",
        "shared_value",
        "login",
    ]
    lines = SPEC.read_text().splitlines()
    hits = spec.models[0]
    assert lines[hits.routes["increment"].line - 1] == 'increment = "POST /hits"'


def test_the_contract_spec_shows_fixed_sessions_tabs_and_nothing_else():
    result = check_app(
        "fixed_session.app:create_app", CONTRACT, chdir=REPO_ROOT, shapes=["gthread"]
    )
    visits = result.cell("visits", "gthread").verdict.counts
    assert visits.get("tabs_lost", 0) > 0 and set(visits) == {"tabs_lost"}
    assert result.cell("counter", "gthread").text() == "n/a (501)"
    assert not result.cell("greet", "gthread").failed


def test_the_contract_spec_passes_fixed_cache(tmp_path):
    with EmbeddedValkey(tmp_path / "valkey") as valkey:
        spec = tmp_path / "contract.toml"
        spec.write_text(
            CONTRACT.read_text().replace(
                'env = { VAR_DIR = "{data}" }',
                f'env = {{ VAR_DIR = "{{data}}", REDIS_URL = "{valkey.url}" }}',
            )
        )
        result = check_app("fixed_cache.app:create_app", spec, chdir=REPO_ROOT, shapes=["gthread"])
    assert result.ok, [c.text() for c in result.cells]


def test_an_app_that_does_not_import_is_exit_2_with_its_error(capsys):
    argv = ["nowhere:create_app", "--spec", str(SPEC), "--chdir", str(SHOP / "fixed")]
    err = error_of(capsys, [*argv, "--shapes", "gthread"])
    assert "did not start" in err and "ModuleNotFoundError" in err and "Traceback" not in err[:80]
    error = err[err.index("error: ") :]
    assert "HaltServer" not in error and len(error.strip().splitlines()) == 1


def test_a_chdir_that_is_not_a_folder_is_exit_2_naming_it(tmp_path, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["--spec", str(SPEC), "--chdir", str(tmp_path / "nowhere")])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert f"--chdir {tmp_path / 'nowhere'} is not a folder" in err
    assert "PosixPath" not in err and "setup" not in err


def test_an_app_that_raises_while_made_is_one_paragraph_naming_its_line(tmp_path, capsys):
    # The server's own frames (gunicorn's HaltServer) are no help to the user:
    # the paragraph names the error, the line of the app it came from, and the log.
    app = tmp_path / "app"
    app.mkdir()
    source = (SHOP / "broken" / "shop.py").read_text()
    made = "    app = Flask(__name__)\n"
    (app / "shop.py").write_text(source.replace(made, made + "    1 / 0\n", 1))
    line = (app / "shop.py").read_text().splitlines().index("    1 / 0") + 1
    spec = tmp_path / "shop.toml"
    spec.write_text(
        "\n".join(x for x in SPEC.read_text().splitlines() if not x.startswith("setup"))
    )
    err = error_of(capsys, ["--spec", str(spec), "--chdir", str(app), "--shapes", "gthread"])
    error = err[err.index("error: ") :]
    assert "ZeroDivisionError: division by zero" in error
    assert f"shop.py, line {line}: `1 / 0`" in error
    assert "HaltServer" not in error and "site-packages" not in error
    assert "var/logs/check-gthread-" in error and len(error.strip().splitlines()) == 1


def test_replay_runs_the_failed_cells_again(tmp_path, capsys):
    replay = tmp_path / "replay.json"
    failed = [["hello", "gthread"]]
    for folder, word in (("broken", "still fails, 3 of 3"), ("fixed", "passes now, 0 of 3")):
        saved = {"target": "shop:create_app", "spec": str(SPEC), "failed": failed}
        replay.write_text(json.dumps({**saved, "chdir": str(SHOP / folder)}))
        assert main(["--replay", str(replay)]) == (1 if folder == "broken" else 0)
        assert f"hello [gthread]: {word} runs failed" in capsys.readouterr().out


def test_html_draws_every_cell_and_lists_each_witness_with_its_cell(broken, tmp_path):
    from loadtests.check.output import write_html

    path, why = write_html(broken, tmp_path / "check.html")
    page = path.read_text()
    assert why == "" and page.startswith("<!doctype html>")
    failed = [c for c in broken.cells if c.failed]
    assert failed
    for cell in failed:
        for anomaly in cell.verdict.examples:
            summary = f"{cell.model} [{cell.shape}]: {anomaly.summary}"
            assert json.dumps(summary, ensure_ascii=False)[1:-1].replace("</", "<\\/") in page


SPECS = REPO_ROOT / "loadtests" / "check" / "specs"


@pytest.mark.parametrize(
    ("target", "failed"),
    [
        ("examples.half_fix_secret_per_worker:app", True),  # a key made at import
        ("examples.preload_secret_until_restart:create_app", False),  # from the environment
    ],
)
def test_the_secret_key_example_is_caught_by_a_restart(target, failed):
    result = check_app(target, SPECS / "secret_key.toml", chdir=REPO_ROOT, shapes=["restart"])
    cell = result.cell("me", "restart")
    assert cell.failed == failed, cell.text()
    if failed:
        assert "identities_lost" in cell.verdict.counts


def test_the_admin_change_example_diverges_and_its_fix_does_not(tmp_path):
    spec = SPECS / "admin_change.toml"
    broken = check_app("examples.admin_change_reaches_one_worker:app", spec, chdir=REPO_ROOT,
                       shapes=["gthread"])  # fmt: skip
    assert broken.cell("counter", "gthread").verdict.counts.get("divergence")
    with EmbeddedValkey(tmp_path / "valkey") as valkey:
        shared = tmp_path / "admin_change.toml"
        shared.write_text(f'[app]\nenv = {{ REDIS_URL = "{valkey.url}" }}\n' + spec.read_text())
        fixed = check_app("examples.admin_change_reaches_one_worker:create_shared_app", shared,
                          chdir=REPO_ROOT, shapes=["gthread"])  # fmt: skip
    assert fixed.ok, fixed.report()


def test_make_check_app_without_a_spec_says_what_it_needs():
    made = subprocess.run(
        ["make", "-n", "check-app"], cwd=REPO_ROOT, capture_output=True, text=True
    )
    assert made.returncode == 2
    assert "SPEC=" in made.stderr and "expected one argument" not in made.stderr


@pytest.mark.parametrize("flag", ["--json", "--junit", "--html"])
def test_an_output_that_cannot_be_written_is_a_usage_error_before_the_check_runs(
    flag, tmp_path, capsys
):
    # It used to run the whole check, then end in a FileExistsError traceback
    # with exit code 1, the code for "an anomaly was found".
    (tmp_path / "a-file").write_text("")
    for where, why in (
        (tmp_path / "a-file" / "out", "cannot make its folder"),
        (tmp_path, "is a folder"),
    ):
        with pytest.raises(SystemExit) as exited:
            main(["--spec", str(SPEC), "--chdir", str(SHOP / "fixed"), flag, str(where)])
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert f"{flag} {where}" in err and why in err and "Traceback" not in err


RETRY = REPO_ROOT / "exercises" / "08_retry_key"  # an app on Valkey that retries a timeout


def test_an_unknown_store_is_one_paragraph_naming_its_line(tmp_path, capsys):
    path = spec_file(
        tmp_path,
        """\
        [app]
        target = "app:create_app"
        store = "nonsense"
        env = { STORE_URL = "{store_url}" }

        [[per_user_list]]
        name = "orders"
        add = "POST /orders"
        list = "GET /orders"
        items = "orders"
        """,
    )
    err = error_of(capsys, ["--spec", str(path), "--chdir", str(RETRY)])
    error = err[err.index("error: ") :].strip()
    assert f"{path} line 3" in error and "[app] store" in error and "'nonsense'" in error
    assert "'valkey'" in error and len(error.splitlines()) == 1 and "Traceback" not in err


def test_store_url_without_a_store_names_the_env_line(tmp_path):
    path = spec_file(
        tmp_path,
        """\
        [app]
        target = "app:create_app"
        env = { STORE_URL = "{store_url}" }
        [[per_user_list]]
        name = "orders"
        add = "POST /orders"
        list = "GET /orders"
        items = "orders"
        """,
    )
    with pytest.raises(SpecError, match=r"line 3: \[app\] env STORE_URL uses \{store_url\}"):
        load_spec(path)


def test_store_paused_runs_by_default_only_for_a_spec_with_a_store():
    assert default_shapes(load_spec(SPEC)) == list(DEFAULT_SHAPES)
    assert "store-paused" not in DEFAULT_SHAPES and len(DEFAULT_SHAPES) == 7
    assert default_shapes(load_spec(RETRY / "spec.toml")) == [*DEFAULT_SHAPES, "store-paused"]


def test_store_paused_without_a_store_is_skipped_with_its_reason(tmp_path, capsys):
    argv = ["--spec", str(SPEC), "--chdir", str(SHOP / "fixed"), "--shapes", "store-paused"]
    assert main([*argv, "--junit", str(tmp_path / "j.xml")]) == 0
    out = capsys.readouterr().out
    assert "store-paused: skipped: no store to pause" in out
    cases = list(ElementTree.parse(tmp_path / "j.xml").getroot().iter("testcase"))
    assert {c.get("name") for c in cases} == {f"{m} [store-paused]" for m in MODELS}
    assert all(c.find("skipped") is not None for c in cases)


def test_a_blind_retry_is_applied_twice_when_the_store_pauses_and_a_keyed_one_once():
    """The check's own Valkey, stopped as the burst of writes is sent: every
    write of the app that retries a timeout blindly that went out on an open
    connection is pushed twice; the reference fix's key pushes each once."""
    spec = RETRY / "spec.toml"
    blind = check_app(None, spec, chdir=RETRY, shapes=["store-paused", "gthread"])
    assert not blind.cell("orders", "gthread").failed  # while the store answers, it is right
    paused = blind.cell("orders", "store-paused").verdict
    assert set(paused.counts) == {"visits_duplicated"}, paused.counts
    assert re.search(r"append of '\w+' is in its last list [2-9] times", paused.examples[0].summary)
    keyed = check_app(None, spec, chdir=RETRY.parent / "solutions" / RETRY.name,
                      shapes=["store-paused"])  # fmt: skip
    assert keyed.ok, keyed.report()


def test_ctrl_c_while_the_store_is_paused_stops_it_and_its_app_by_pid(tmp_path):
    command = [sys.executable, "-m", "loadtests.check", "--spec", str(RETRY / "spec.toml"),
               "--chdir", str(RETRY), "--shapes", "store-paused"]  # fmt: skip
    check = subprocess.Popen(command, cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True)
    try:
        for line in check.stderr:
            if "the store paused" in line:
                break
        deadline = time.monotonic() + 5  # the line is printed just before the pause
        while not any((proc_stat(pid) or "?")[0] == "T" for pid, _ in descendants(check.pid)):
            assert time.monotonic() < deadline, "no process the check started was stopped"
            time.sleep(0.01)
        started = descendants(check.pid)  # Valkey, gunicorn's master and workers
        check.send_signal(signal.SIGINT)
        assert check.wait(timeout=30) == 130
    finally:
        if check.poll() is None:
            check.kill()
            check.wait()
    assert len(started) >= 4
    assert [pid for pid, began in started if start_time(pid) == began] == []
    assert not list((tmp_path / "var" / "runs").iterdir())  # its {data}, Valkey's files too


EXERCISE_5 = REPO_ROOT / "exercises" / "05_shared_cache"  # a price cached per worker process


class OneWorkerStopped:
    """A check's progress hook: as each of the first `runs` runs of a shape
    sends its first requests, one of the two workers of the server it
    started (found through /proc) is stopped (SIGSTOP), so every request of
    that run reaches the other, as when one sync worker wins every accept.
    It is resumed (SIGCONT) once a signal is pending for it, its master
    stopping it, so the server stops as quickly as ever."""

    def __init__(self, runs: int) -> None:
        self.runs, self.lines, self.stopped = runs, [], []

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        if line.endswith("first requests, one user at a time") and len(self.stopped) < self.runs:
            me = os.getpid()
            below = [pid for pid, _ in descendants(me)]
            masters = {pid for pid in below if parent_pid(pid) == me}
            workers = sorted(pid for pid in below if parent_pid(pid) in masters)
            assert len(workers) == 2, workers
            worker = Paused("sync worker", workers[0], below=False)
            self.stopped.append(worker)  # resume_all() resumes it whatever happens
            worker.stop([(worker.pid, start_time(worker.pid))])  # and waits until it is halted
            threading.Thread(target=self.resume, args=(worker,), daemon=True).start()

    @staticmethod
    def resume(worker: Paused) -> None:
        while start_time(worker.pid) is not None and not signal_pending(worker.pid):
            time.sleep(0.01)
        worker.resume()

    def resume_all(self) -> None:
        for worker in self.stopped:
            worker.resume()


def signal_pending(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return False
    masks = [line.split()[1] for line in status if line.startswith(("SigPnd:", "ShdPnd:"))]
    return any(int(mask, 16) for mask in masks)


def check_with_one_worker_stopped(runs: int) -> tuple[Result, OneWorkerStopped]:
    spec = load_spec(EXERCISE_5 / "spec.toml")
    hook = OneWorkerStopped(runs)
    try:
        result = run_check(spec, spec.app.target, EXERCISE_5, ["sync"], progress=hook)
    finally:
        hook.resume_all()
    return result, hook


def test_a_shape_whose_requests_reached_one_worker_runs_again_and_finds_the_per_process_cache():
    """Exercise 5's starting app under sync, its first run's requests all on
    one worker: that run's "ok" shows nothing, so the shape runs again."""
    result, hook = check_with_one_worker_stopped(runs=1)
    cell = result.cell("price", "sync")
    assert cell.failed and "stale_reads" in cell.verdict.counts, result.report()
    assert (
        "[1/1] sync: its requests reached 1 of 2 workers; running it again (2 of 3)" in hook.lines
    )
    assert cell.runs >= 2 and cell.verdict.workers == 2 and "note:" not in result.report()


def test_a_cell_that_never_reached_every_worker_says_so_and_still_passes(tmp_path):
    result, hook = check_with_one_worker_stopped(runs=3)
    cell = result.cell("price", "sync")
    assert cell.text() == "ok" and result.exit_code == 0, result.report()
    assert (
        "[1/1] sync: its requests reached 1 of 2 workers; running it again (3 of 3)" in hook.lines
    )
    note = (
        "note: price under sync reached 1 of 2 workers in 3 runs; "
        "a per-process bug could pass it unseen"
    )
    assert note in result.report().splitlines()
    [payload] = json.loads(write_json(result, tmp_path / "check.json").read_text())["cells"]
    assert payload["verdict"] == "ok" and payload["note"] == note
    assert (payload["workers"], payload["shape_workers"], payload["runs"]) == (1, 2, 3)
    [case] = ElementTree.parse(write_junit(result, tmp_path / "j.xml")).getroot().iter("testcase")
    assert case.find("failure") is None and case.findtext("system-out") == note
