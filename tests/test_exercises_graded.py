"""The exercises graded for real by the own-app check (loadtests.check):
every starting app fails for the reason its exercise teaches, every
reference fix passes under every shape its exercise names, and the
gallery's half-fixes, applied to an exercise, each get their own hint.

Each grade starts real servers (gunicorn, flask run) through the check's
command line, as `make grade` does.
"""

import functools
import re
import shutil
from pathlib import Path

import pytest

from exercises.catalog import resolve
from exercises.grading import Grade, grade, precheck

# What each starting app's grade must find: the pattern its exercise teaches.
TAUGHT = {
    1: "one-process",  # a global shared by the requests of one process
    2: "one-process",  # one list for every user
    3: "one-process",  # read, work, write
    4: "per-process",  # app.config changed on one worker
    5: "per-process",  # a cache per worker, exact under its lock
    6: "memory",  # a key made at import, --preload: gone at restart
    7: "two-tabs",  # a user's whole list written back
    8: "applied-twice",  # a retry without a key
}


@functools.cache
def starting_app_graded(number: int) -> Grade:
    """One real grade of a starting app, for every test here that reads it."""
    return grade(resolve(str(number)))


@pytest.mark.gunicorn
@pytest.mark.parametrize("number", sorted(TAUGHT))
def test_every_starting_app_fails_for_the_reason_it_teaches(number):
    graded = starting_app_graded(number)
    assert not graded.problem, graded.problem
    assert graded.pattern == TAUGHT[number], (graded.results, graded.witness)
    assert graded.witness  # the smallest witness of what is still wrong


@pytest.mark.gunicorn
@pytest.mark.parametrize("number", sorted(TAUGHT))
def test_every_reference_fix_passes_under_every_shape_it_names(number):
    ex = resolve(str(number))
    graded = grade(ex, app_dir=ex.solution_dir)
    assert not graded.problem, graded.problem
    assert graded.pattern == "solved", (graded.results, graded.witness)
    assert [r.shape for r in graded.results if r.verdict == "passed"] == list(ex.shapes)


@pytest.mark.gunicorn
def test_exercise_8_places_an_order_twice_only_when_its_store_pauses():
    """The retry without a key is right while the store answers; with the
    store stopped mid-write, an order sent once is in the list twice."""
    graded = starting_app_graded(8)
    verdicts = {r.shape: r.verdict for r in graded.results}
    assert verdicts == {"threads": "passed", "processes": "passed", "store-paused": "failed"}
    assert graded.witness.startswith("(store-paused)\nduplicated visit: "), graded.witness
    assert re.search(r"append of '\w+' is in its last list [2-9] times", graded.witness)
    assert "docs/faults.md#idempotency-keys-make-them-safe" in graded.hints[-1]


def half_fix(tmp_path: Path, number: int, *edits: tuple[str, str]) -> Path:
    """The starting app of exercise `number` with the half-fix's edits, each
    of which must find its text (so a changed app fails here, loudly)."""
    ex = resolve(str(number))
    folder = tmp_path / ex.slug
    shutil.copytree(ex.folder, folder)
    source = (folder / "app.py").read_text()
    for old, new in edits:
        assert old in source, old
        source = source.replace(old, new, 1)
    (folder / "app.py").write_text(source)
    return folder


COUNTER_READ_WRITE = """        global hits
        new_value = hits + 1
        time.sleep(WORK_SECONDS)
        hits = new_value
        return {"value": new_value}"""

HALF_FIXES = {
    # docs/half-fixes.md 1: a threading.Lock around the global (examples/half_fix_lock.py).
    "lock": (
        3,
        "per-process",
        ("import os\n", "import os\nimport threading\n"),
        ("hits = 0\n", "hits = 0\nhits_lock = threading.Lock()\n"),
        (
            COUNTER_READ_WRITE,
            """        global hits
        with hits_lock:
            new_value = hits + 1
            time.sleep(WORK_SECONDS)
            hits = new_value
        return {"value": new_value}""",
        ),
    ),
    # docs/half-fixes.md 2: shared memory made before the fork, under the
    # spec's --preload (examples/half_fix_preload_value.py).
    "preloaded value": (
        3,
        "memory",
        ("import os\n", "import multiprocessing\nimport os\n"),
        ("hits = 0\n", 'hits = multiprocessing.Value("q", 0)\n'),
        (
            COUNTER_READ_WRITE,
            """        with hits.get_lock():
            hits.value += 1
            new_value = hits.value
        return {"value": new_value}""",
        ),
        ('return {"value": hits}', 'return {"value": hits.value}'),
    ),
    # docs/half-fixes.md 5: the counter in SQLite, read in Python, then written
    # (examples/half_fix_sqlite_read_then_write.py).
    "sqlite read then write": (
        3,
        "one-process",
        ("import os\n", "import os\nimport sqlite3\n"),
        (
            "    @app.post",
            """    def db():
        conn = sqlite3.connect(app.config["DATABASE"], timeout=10, isolation_level=None)
        conn.execute("CREATE TABLE IF NOT EXISTS hits (id INTEGER PRIMARY KEY, value INTEGER)")
        conn.execute("INSERT OR IGNORE INTO hits VALUES (1, 0)")
        return conn

    @app.post""",
        ),
        (
            COUNTER_READ_WRITE,
            """        conn = db()
        [(value,)] = conn.execute("SELECT value FROM hits WHERE id = 1")
        time.sleep(WORK_SECONDS)
        conn.execute("UPDATE hits SET value = ? WHERE id = 1", (value + 1,))
        conn.close()
        return {"value": value + 1}""",
        ),
        (
            'return {"value": hits}',
            'return {"value": db().execute("SELECT value FROM hits").fetchone()[0]}',
        ),
    ),
    # docs/half-fixes.md 7: per-user state in Flask's cookie session, saved
    # whole by every answer (examples/half_fix_cookie_session.py).
    "cookie session": (
        2,
        "two-tabs",
        (
            "from flask import Flask, abort, g, request\n",
            "from flask import Flask, abort, g, request, session\n",
        ),
        (
            '    app.config["MAX_CONTENT_LENGTH"]',
            '    app.secret_key = "one key for all"\n    app.config["MAX_CONTENT_LENGTH"]',
        ),
        (
            """        cart_items.append(item)
        return {"items": list(cart_items)}, 201""",
            """        session["items"] = [*session.get("items", []), item]
        return {"items": session["items"]}, 201""",
        ),
        ('return {"items": list(cart_items)}\n', 'return {"items": session.get("items", [])}\n'),
    ),
    # A store each server has its own of, which a restart keeps: a SQLite file
    # per host. On one machine the port a server listens on tells the two
    # instances apart (the restart comes back on the same port).
    "per-host store": (
        4,
        "per-host",
        ("import os\n", "import os\nimport sqlite3\n"),
        (
            "    @app.post",
            """    def host_db():
        path = f"{app.config['DATABASE']}.{request.environ['SERVER_PORT']}"
        conn = sqlite3.connect(path, timeout=10, isolation_level=None)
        conn.execute("CREATE TABLE IF NOT EXISTS banner (id INTEGER PRIMARY KEY, text TEXT)")
        conn.execute("INSERT OR IGNORE INTO banner VALUES (1, 'Welcome!')")
        return conn

    @app.post""",
        ),
        (
            """current_app.config["BANNER"] = posted_text()
        return {"text": current_app.config["BANNER"]}""",
            """text = posted_text()
        host_db().execute("UPDATE banner SET text = ?", (text,))
        return {"text": text}""",
        ),
        (
            'return {"text": current_app.config["BANNER"]}\n',
            'return {"text": host_db().execute("SELECT text FROM banner").fetchone()[0]}\n',
        ),
    ),
    # A retry taken away: one try, and an error answer when it times out,
    # though the write may have been made.
    "no retry": (8, "gave-up", ("ATTEMPTS = 5  #", "ATTEMPTS = 1  #")),
    # A key made once per write, but set in a step of its own before the
    # push: a try whose SET NX was made but not answered makes the retry
    # skip the push (docs/faults.md, keys in the same step as the write).
    "key apart from its write": (
        8,
        "key-apart",
        (
            "    for attempt in range(ATTEMPTS):\n        try:\n"
            "            save_order(store, user_id, item)\n",
            '    key = f"order-key:{secrets.token_hex(8)}"\n'
            "    for attempt in range(ATTEMPTS):\n        try:\n"
            "            if store.set(key, 1, nx=True, ex=600):\n"
            "                save_order(store, user_id, item)\n",
        ),
    ),
}


@pytest.mark.parametrize("name", HALF_FIXES)
def test_each_half_fix_applies_to_its_exercise_and_imports(name, tmp_path):
    number, _pattern, *edits = HALF_FIXES[name]
    assert precheck(resolve(str(number)), half_fix(tmp_path, number, *edits)) == ""


@pytest.mark.gunicorn
@pytest.mark.parametrize("name", HALF_FIXES)
def test_each_half_fix_applied_to_an_exercise_gets_its_own_hint(name, tmp_path):
    number, pattern, *edits = HALF_FIXES[name]
    folder = half_fix(tmp_path, number, *edits)
    graded = grade(resolve(str(number)), app_dir=folder)
    assert not graded.problem, graded.problem
    assert graded.pattern == pattern, (graded.results, graded.witness)
    assert graded.hints and "docs/" in graded.hints[-1] and "/" in graded.hints[-1]
