"""The exercises' own parts, which need no check to run: the catalog and its
specs, each app's routes as its spec names them, the hint chosen from a
pattern of per-shape verdicts, the progress file, EX= resolution, the
solution diff, and a learner's syntax or import error reported before any
server starts. Grading under real servers is tests/test_exercises_graded.py.
"""

import importlib.util
import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from markdown.extensions.toc import slugify

from exercises import progress
from exercises.catalog import CHECK_SHAPES, REPO_ROOT, UnknownExercise, exercises, resolve
from exercises.grading import (
    grade,
    precheck,
)
from exercises.hints import ADVICE, ShapeResult, diagnose, hints
from exercises.solution import solution_diff
from serve.pids import free_port
from serve.valkey import EmbeddedValkey

EXERCISES = exercises()
IDS = [ex.slug for ex in EXERCISES]
# Issue 22's spec format: each model's keys (every one of them required but
# reset, body and the [app] keys besides target).
MODEL_KEYS = {
    "counter": {"name", "increment", "read", "value"},
    "per_user_list": {"name", "add", "body", "list", "items"},
    "per_request": {"name", "request", "expect"},
    "shared_value": {"name", "set", "body", "get", "value"},
    "login": {"name", "login", "body", "whoami", "value"},
}
OPTIONAL_KEYS = {"counter": {"reset"}}


def test_eight_exercises_in_order_each_with_its_files():
    assert [ex.number for ex in EXERCISES] == list(range(1, 9))
    for ex in EXERCISES:
        for path in (
            ex.app_file,
            ex.spec_file,
            ex.folder / "README.md",
            ex.solution_dir / "app.py",
        ):
            assert path.is_file(), path
        assert ex.title and ex.shapes
        assert ex.app_file.read_text() != (ex.solution_dir / "app.py").read_text()
        assert "plumbing" not in ex.app_file.read_text()  # each stands alone


@pytest.mark.parametrize("ex", EXERCISES, ids=IDS)
def test_each_spec_is_in_the_checks_format(ex):
    spec = ex.spec()
    assert spec["app"]["target"] == "app:create_app"
    assert set(spec["app"]) <= {"target", "env", "setup", "gunicorn", "store"}
    models = {kind: entries for kind, entries in spec.items() if kind != "app"}
    assert models
    for kind, entries in models.items():
        for entry in entries:
            assert (
                MODEL_KEYS[kind] <= set(entry) <= MODEL_KEYS[kind] | OPTIONAL_KEYS.get(kind, set())
            )
    assert set(ex.shapes) <= set(CHECK_SHAPES)


@pytest.fixture
def store_url(shared_valkey) -> str:
    """A real Valkey, emptied, for a spec's {store_url}."""
    redis.Redis.from_url(shared_valkey.url).flushall()
    return shared_valkey.url


def load_app(app_file: Path, ex, tmp_path, monkeypatch, store_url: str):
    """A fresh module of `app_file` (its globals new) and its app, in the spec's env."""
    for key, value in ex.spec()["app"].get("env", {}).items():
        value = value.replace("{data}", str(tmp_path)).replace("{store_url}", store_url)
        monkeypatch.setenv(key, value)
    name = f"exercise_app_{next(_loaded)}"
    spec = importlib.util.spec_from_file_location(name, app_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.create_app()


_loaded = itertools.count()


def path_value(answer: dict, dotted: str):
    for part in dotted.split("."):
        answer = answer[part]
    return answer


def split_route(route: str, token: str) -> tuple[str, str]:
    method, path = route.split(" ", 1)
    return method, path.replace("{token}", token)


def body_for(entry: dict, token: str) -> dict:
    return {key: value.replace("{token}", token) for key, value in entry.get("body", {}).items()}


def call(client, route: str, token: str = "", body: dict | None = None):
    method, path = split_route(route, token)
    answer = client.open(path, method=method, json=body)
    assert answer.status_code < 300, (route, answer.status_code, answer.get_data(as_text=True))
    return answer.get_json()


@pytest.mark.parametrize("solved", [False, True], ids=["start", "solution"])
@pytest.mark.parametrize("ex", EXERCISES, ids=IDS)
def test_the_spec_names_routes_and_values_the_app_answers(
    ex, solved, tmp_path, monkeypatch, store_url
):
    """One user at a time, in one process: what the spec says is where it says."""
    app_file = ex.solution_dir / "app.py" if solved else ex.app_file
    app = load_app(app_file, ex, tmp_path, monkeypatch, store_url)
    for kind, entries in ex.spec().items():
        for entry in entries if kind != "app" else ():
            one, other = app.test_client(), app.test_client()
            if kind == "counter":
                start = path_value(call(one, entry["read"]), entry["value"])
                first = path_value(call(one, entry["increment"]), entry["value"])
                second = path_value(call(other, entry["increment"]), entry["value"])
                assert (first, second) == (start + 1, start + 2)
                assert path_value(call(one, entry["read"]), entry["value"]) == start + 2
            elif kind == "per_request":
                answer = call(one, entry["request"], "tok-1")
                assert "tok-1" in json.dumps(answer)
            elif kind == "shared_value":
                call(one, entry["set"], "tok-1", body_for(entry, "tok-1"))
                assert path_value(call(other, entry["get"]), entry["value"]) == "tok-1"
            elif kind == "login":
                assert path_value(call(other, entry["whoami"]), entry["value"]) is None
                call(one, entry["login"], "ann", body_for(entry, "ann"))
                assert path_value(call(one, entry["whoami"]), entry["value"]) == "ann"
            elif kind == "per_user_list":
                call(one, entry["list"])  # the first visit, alone: the cookie is set
                for token in ("tok-1", "tok-2"):
                    call(one, entry["add"], token, body_for(entry, token))
                mine = path_value(call(one, entry["list"]), entry["items"])
                theirs = path_value(call(other, entry["list"]), entry["items"])
                if solved:  # the starting app of 2 leaks even so
                    assert (mine, theirs) == (["tok-1", "tok-2"], [])


@pytest.mark.parametrize("ex", EXERCISES, ids=IDS)
def test_bad_input_is_a_json_error(ex, tmp_path, monkeypatch, store_url):
    for folder, app_file in (("start", ex.app_file), ("solution", ex.solution_dir / "app.py")):
        (tmp_path / folder).mkdir()
        client = load_app(app_file, ex, tmp_path / folder, monkeypatch, store_url).test_client()
        for kind, entries in ex.spec().items():
            for entry in entries if kind != "app" else ():
                for key in ("add", "set", "login"):
                    if key in entry:
                        answer = client.open(entry[key].split(" ")[1], method="POST", json=[1])
                        assert answer.status_code == 400
                        assert set(answer.get_json()) == {"error", "detail"}


@pytest.mark.parametrize("solved", [False, True], ids=["start", "solution"])
def test_an_order_whose_store_stays_stopped_is_a_503_saying_it_may_be_saved(
    solved, tmp_path, monkeypatch
):
    """Exercise 8: every try times out, and the app says so instead of trying on."""
    ex = resolve("8")
    app_file = ex.solution_dir / "app.py" if solved else ex.app_file
    with EmbeddedValkey(tmp_path / "valkey", port=free_port()) as valkey:
        client = load_app(app_file, ex, tmp_path, monkeypatch, valkey.url).test_client()
        call(client, "GET /orders")  # its connection open, as a running app's is
        with valkey.paused():
            answer = client.post("/orders", json={"item": "tea"})
    assert answer.status_code == 503
    said = answer.get_json()
    assert said["outcome"] == "unknown" and "may or may not have been saved" in said["detail"]


def test_ex_is_a_number_a_folder_a_name_or_a_unique_part():
    assert resolve("3").slug == resolve("03").slug == "03_shared_counter"
    assert resolve("03_shared_counter").number == 3
    assert resolve("shared_counter").number == 3
    assert resolve("shared-counter").number == 3
    assert resolve("tabs").number == 7
    with pytest.raises(UnknownExercise, match=r"names no exercise.*3 \(shared_counter\)"):
        resolve("42")
    with pytest.raises(UnknownExercise, match="names several"):
        resolve("_")


def results(**verdicts: str) -> list[ShapeResult]:
    return [ShapeResult(shape.replace("_", "-"), v) for shape, v in verdicts.items()]


@pytest.mark.parametrize(
    ("verdicts", "pattern"),
    [
        (dict(threads="passed", processes="passed", restart="passed"), "solved"),
        (dict(threads="skipped", gevent="skipped"), "not-graded"),
        (dict(threads="failed", processes="failed", restart="failed"), "one-process"),
        (dict(threads="passed", gevent="failed", processes="failed"), "one-process"),
        (
            dict(threads="passed", gevent="passed", processes="failed", restart="failed"),
            "per-process",
        ),
        (
            dict(threads="passed", processes="passed", restart="failed", two_instances="failed"),
            "memory",
        ),
        (
            dict(threads="passed", processes="passed", restart="passed", two_instances="failed"),
            "per-host",
        ),
        (dict(processes="passed", two_instances="failed"), "per-host"),
        (dict(threads="passed", processes="passed", store_paused="failed"), "applied-twice"),
    ],
)
def test_the_pattern_of_failed_shapes_names_the_half_fix(verdicts, pattern):
    assert diagnose(results(**verdicts)) == pattern


def test_what_the_witness_says_comes_before_the_shapes():
    tabs = "lost tab: u1's append of 'u1/3' was acknowledged, then missing from 5 visits"
    twice = "duplicated visit: 'u2/7' is in u2's list twice"
    leak = "visit leak: u3 saw u4's 'u4/1'"
    failed = ShapeResult("threads", "failed", witness=tabs)
    assert diagnose([failed, ShapeResult("processes", "failed", witness=tabs)]) == "two-tabs"
    assert diagnose([ShapeResult("threads", "failed", witness=twice)]) == "applied-twice"
    both = ShapeResult("threads", "failed", witness=f"{tabs}\n{leak}")
    assert diagnose([both]) == "one-process"  # a leak is more than a whole-value save
    # "lost update: worker 1 returned 1 twice" is not a write applied twice.
    lost = ShapeResult("threads", "failed", witness="lost update: worker 9 returned 1 twice")
    assert diagnose([lost]) == "one-process"


def test_under_the_store_paused_alone_the_witness_says_which_retry_is_wrong():
    # Three wrong fixes of exercise 8, each failing store-paused alone.
    def paused(witness: str) -> list[ShapeResult]:
        passed = [ShapeResult(shape, "passed") for shape in ("threads", "processes")]
        return [*passed, ShapeResult("store-paused", "failed", witness=witness)]

    twice = "duplicated visit: orders-u1's append of 'k66' is in its last list 2 times"
    given_up = "failed request: orders-u7-k848cn's add_visit got 503"
    missing = "lost visit: orders-u0's append of 'k69' was acknowledged, then missing from 28"
    assert diagnose(paused(twice)) == "applied-twice"  # a retry without a key
    assert diagnose(paused(given_up)) == "gave-up"  # no retry, or one too short
    assert diagnose(paused(missing)) == "key-apart"  # SET NX, then RPUSH: two steps
    for witness, pattern in ((given_up, "gave-up"), (missing, "key-apart")):
        found, texts = hints(paused(witness), 8)
        assert found == pattern
        assert "twice" not in texts[0], texts[0]


def test_each_pattern_gives_three_hints_that_name_the_shapes_and_link_the_proof():
    found = [
        ShapeResult("threads", "passed"),
        ShapeResult("processes", "failed", failed_kinds=("counter",)),
        ShapeResult("two-instances", "passed"),
    ]
    pattern, given = hints(found, 3)
    assert pattern == "per-process"
    assert len(given) == 3
    assert "Exact in one process (threads), wrong across processes (processes)" in given[0]
    assert "docs/half-fixes.md#1-a-lock-around-the-global" in given[2]
    assert "examples/half_fix_lock.py" in given[2]
    assert "make solution EX=3" in given[2]
    login = [ShapeResult("restart", "failed", failed_kinds=("login",))]
    assert "examples/preload_secret_until_restart.py" in hints(login, 6)[1][2]


def headings(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.MULTILINE | re.DOTALL)
    return {slugify(m[1].strip(), "-") for m in re.finditer(r"^#+\s+(.+)$", text, re.MULTILINE)}


def test_every_hint_links_files_and_headings_that_exist():
    for advice in ADVICE.values():
        assert advice.read[0].startswith("docs/")
        for link in advice.read:
            path, _, anchor = link.partition("#")
            assert (REPO_ROOT / path).is_file(), link
            if anchor:
                assert anchor in headings(REPO_ROOT / path), link


def test_progress_is_kept_in_var_and_cleared_by_reset(isolated_var_dir):
    assert progress.next_hint("03_shared_counter") is None
    progress.record_grade(
        "03_shared_counter", {"threads": "failed"}, "one-process", ["a", "b", "c"], ""
    )
    assert progress.progress_file() == isolated_var_dir / "practice.json"
    assert progress.next_hint("03_shared_counter") == ("b", 2, 3)
    assert progress.next_hint("03_shared_counter") == ("c", 3, 3)
    assert progress.next_hint("03_shared_counter") == ("c", 3, 3)
    # The same pattern again keeps the place in its hints; another starts over.
    assert (
        progress.record_grade("03_shared_counter", {}, "one-process", ["a", "b", "c"], "")[
            "hints_shown"
        ]
        == 3
    )
    assert (
        progress.record_grade("03_shared_counter", {}, "per-process", ["x", "y"], "")["hints_shown"]
        == 1
    )
    progress.record_grade("01_request_value", {"threads": "passed"}, "solved", ["done"], "")
    progress.record_grade("01_request_value", {"threads": "failed"}, "one-process", ["h"], "")
    # Another process (a new shell, after a reboot) reads the same progress.
    listing = subprocess.run(
        [sys.executable, "-m", "exercises", "practice"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert re.search(r"1  a value for one request\s+solved, now failing", listing)
    assert re.search(r"3  a shared counter\s+not solved", listing)
    assert "Next: exercise 2" in listing
    reset = subprocess.run(
        [sys.executable, "-m", "exercises", "practice", "--reset"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert reset.startswith("Progress cleared.")
    assert "Next: exercise 1" in reset
    assert not progress.progress_file().exists()


@pytest.mark.parametrize("ex", EXERCISES, ids=IDS)
def test_the_solution_diff_applies_from_the_repository_root(ex, tmp_path):
    diff = solution_diff(ex)
    relative = ex.app_file.relative_to(REPO_ROOT)
    (tmp_path / relative).parent.mkdir(parents=True)
    (tmp_path / relative).write_text(ex.app_file.read_text())
    applied = subprocess.run(
        ["git", "apply", "-"], cwd=tmp_path, input=diff, capture_output=True, text=True
    )
    assert applied.returncode == 0, applied.stderr
    assert (tmp_path / relative).read_text() == (ex.solution_dir / "app.py").read_text()


def test_the_solution_command_prints_only_the_diff():
    shown = subprocess.run(
        [sys.executable, "-m", "exercises", "solution", "shared_counter"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert shown == solution_diff(resolve("3"))
    assert shown.startswith("--- a/exercises/03_shared_counter/app.py\n")


# (what is replaced, by what, the line the error is on, what the paragraph says)
BROKEN = {
    "syntax": (
        "    def count_hit():\n",
        "    def count_hit(:\n",
        "def count_hit(:",
        "not valid Python",
    ),
    "import": (
        "import os\n",
        "import os\nimport no_such_module\n",
        "import no_such_module",
        "fails when",
    ),
    "create": (
        "    app = Flask(__name__)\n",
        "    app = Flask(__name__)\n    app.config['X'] = undefined_name\n",
        "app.config['X'] = undefined_name",
        "making its app (app:create_app) fails",
    ),
}


@pytest.mark.parametrize("stage", BROKEN)
def test_a_learners_error_is_one_paragraph_with_its_line_and_no_traceback(stage, tmp_path):
    ex = resolve("3")
    old, new, culprit, says = BROKEN[stage]
    source = ex.app_file.read_text()
    assert old in source
    broken = source.replace(old, new, 1)
    (tmp_path / "app.py").write_text(broken)
    line = [text.strip() for text in broken.splitlines()].index(culprit) + 1
    said = precheck(ex, tmp_path)
    assert says in said
    assert f"line {line}: `{culprit}`" in said
    assert "Traceback" not in said and "\n" not in said
    graded = grade(ex, app_dir=tmp_path)  # the check is never reached
    assert graded.problem == said and not graded.results
