"""Hints drawn from what the check found: which shapes failed says which
half-fix the learner wrote.

- wrong even in one process (threads, gevent): no atomic step;
- exact in one process, wrong across processes: a lock, or memory per process;
- right across processes, wrong after a restart: memory the server holds;
- right on one instance, restarts included, wrong on two: a per-host store;
- right for every user but one user's tabs: a whole-value save (the session);
- wrong only when the store pauses mid-write, or a write applied twice: a
  retry without an idempotency key; under the pause alone, a write given up
  (an error answer) is a retry too short or none, and a write acknowledged
  then missing is a key kept apart from its write.

Pure: it reads verdicts, starts nothing. Each hint links the half-fix page
and its proof; tests/test_exercises.py checks that every link resolves.
"""

import re
from dataclasses import dataclass

from exercises.catalog import ONE_PROCESS

# What the check's witnesses say, in make demo's words, by what it means.
ANOMALY_WORDS = {
    "tabs": re.compile(r"\blost tabs?\b|\btabs? lost\b", re.IGNORECASE),
    "twice": re.compile(r"\bduplicated\b|\bapplied twice\b", re.IGNORECASE),
    "leak": re.compile(r"\bleak", re.IGNORECASE),
}


@dataclass(frozen=True)
class ShapeResult:
    """One shape's verdict over the exercise's models."""

    shape: str  # the exercise's name for it (catalog.CHECK_SHAPES)
    verdict: str  # "passed", "failed" or "skipped"
    failed_kinds: tuple[str, ...] = ()  # the kinds of the models that failed
    witness: str = ""  # what the check printed for the failure
    reason: str = ""  # why it was skipped


@dataclass(frozen=True)
class Advice:
    meaning: str  # what the pattern says the code does
    change: str  # what to change
    read: tuple[str, ...]  # the half-fix page, then its proof(s), from the repository root


# Under store-paused alone: a write acknowledged and then missing, a write refused.
ACKNOWLEDGED_THEN_MISSING = re.compile(r"\blost visit\b|acknowledged, then missing")
FAILED_REQUEST = re.compile(r"\bfailed requests?\b")


def anomalies(text: str) -> set[str]:
    return {name for name, words in ANOMALY_WORDS.items() if words.search(text)}


def diagnose(results: list[ShapeResult]) -> str:
    """The pattern's name: solved, not-graded, two-tabs, applied-twice,
    gave-up, key-apart, one-process, per-process, memory or per-host."""
    failed = [r for r in results if r.verdict == "failed"]
    if not failed:
        return "solved" if any(r.verdict == "passed" for r in results) else "not-graded"
    if {r.shape for r in failed} == {"store-paused"}:  # right while the store answers
        said = "\n".join(r.witness for r in failed)
        if "twice" in anomalies(said):
            return "applied-twice"
        if ACKNOWLEDGED_THEN_MISSING.search(said):
            return "key-apart"
        if FAILED_REQUEST.search(said):
            return "gave-up"
        return "applied-twice"
    seen = set().union(*(anomalies(r.witness) for r in failed))
    if seen == {"tabs"}:
        return "two-tabs"
    if "twice" in seen and "leak" not in seen:
        return "applied-twice"
    failed_shapes = {r.shape for r in failed}
    for shapes, pattern in (
        (set(ONE_PROCESS), "one-process"),
        ({"processes"}, "per-process"),
        ({"restart"}, "memory"),
        ({"two-instances"}, "per-host"),
    ):
        if failed_shapes & shapes:
            return pattern
    return "one-process"  # a shape this list does not know: start from the first idea


STORE = "a table in the SQLite file the check names in DATABASE (app.config['DATABASE'])"
ADVICE: dict[tuple[str, str], Advice] = {
    ("one-process", ""): Advice(
        "Wrong even in one process ({failed}): two requests at once both read the value, "
        "then both write it back, and one write undoes the other.",
        "Make the read and the write one step the store runs: one statement such as "
        "UPDATE ... SET value = value + 1 ... RETURNING value, never a read in Python "
        "followed by a write.",
        (
            "docs/half-fixes.md#5-sqlite-but-read-in-python-then-written",
            "examples/half_fix_sqlite_read_then_write.py",
        ),
    ),
    ("one-process", "per_request"): Advice(
        "Wrong even in one process ({failed}): requests running at once in one process share "
        "every module-level variable, so one request reads the value another one set.",
        "A value for one request belongs to that request: pass it as an argument, or keep it "
        "on flask.g, which every request gets new and empty.",
        ("docs/fix-per-request.md", "examples/gevent_greenlets_share_globals.py"),
    ),
    ("one-process", "per_user_list"): Advice(
        "Wrong even in one process ({failed}): a user's list is shared with other users, or "
        "rebuilt from a read that another request's write has already made stale.",
        "Key each user's data by the user's id and add each item as a row of its own "
        "(INSERT), in " + STORE + ".",
        ("docs/fix-per-user.md#rows-keyed-by-the-user-id", "examples/seed_articles_visited.py"),
    ),
    ("one-process", "login"): Advice(
        "Wrong even in one process ({failed}): who is logged in must travel with the "
        "request (its session cookie), never sit in a variable other requests share.",
        "Keep the user's name in flask.session, signed with one secret key.",
        ("docs/half-fixes.md#8-a-secret-key-generated-at-import", "examples/seed_g_per_request.py"),
    ),
    ("per-process", ""): Advice(
        "Exact in one process ({passed}), wrong across processes ({failed}): each worker "
        "process has its own copy of what the code keeps in memory, and a lock guards only "
        "its own process's copy.",
        "Keep the state where every process reaches it, " + STORE + ", changed in one "
        "statement; then the lock has nothing left to do.",
        ("docs/half-fixes.md#1-a-lock-around-the-global", "examples/half_fix_lock.py"),
    ),
    ("per-process", "shared_value"): Advice(
        "Exact in one process ({passed}), wrong across processes ({failed}): the change "
        "reached the worker that answered it; every other worker keeps its own copy "
        "(a dict, app.config, a cache guarded by a lock).",
        "Keep the value (and any cache of it) in " + STORE + ", read on every request, so "
        "a change made through one worker is what every worker reads next.",
        (
            "docs/half-fixes.md#1-a-lock-around-the-global",
            "examples/half_fix_lock.py",
            "examples/admin_change_reaches_one_worker.py",
        ),
    ),
    ("per-process", "login"): Advice(
        "Logged in on one worker, logged out on the other ({failed}): each worker process "
        "made its own secret key, so a cookie signed by one is garbage to the other.",
        "One key for every process: read it from the environment (SECRET_KEY).",
        (
            "docs/half-fixes.md#8-a-secret-key-generated-at-import",
            "examples/half_fix_secret_per_worker.py",
        ),
    ),
    ("memory", ""): Advice(
        "Right across processes, wrong after a restart ({failed}): what the workers share "
        "lives in the server's memory (made before the fork, with --preload), and a new "
        "server starts it again from nothing.",
        "Keep it in a store that outlives the server: " + STORE + ".",
        (
            "docs/half-fixes.md#2-shared-memory-made-before-the-fork-preload",
            "examples/half_fix_preload_value.py",
        ),
    ),
    ("memory", "login"): Advice(
        "Logged in on every worker, logged out after a restart ({failed}): the key is made "
        "when the server starts (--preload makes it once, in the master), and a new server "
        "makes a new one.",
        "Read the key from the environment (SECRET_KEY), which the deployment sets the same "
        "for every server it starts.",
        (
            "docs/half-fixes.md#8-a-secret-key-generated-at-import",
            "examples/preload_secret_until_restart.py",
        ),
    ),
    ("per-host", ""): Advice(
        "Right on one server, restarts included, wrong on two ({failed}): the state lives "
        "where each server has its own (its memory, its own disk), and the second instance "
        "behind the balancer answers from its own copy.",
        "Both instances must reach one store: " + STORE + ", the same file for both here; "
        "a database server in production.",
        (
            "docs/half-fixes.md#2-shared-memory-made-before-the-fork-preload",
            "examples/hosts_behind_a_balancer.py",
        ),
    ),
    ("per-host", "login"): Advice(
        "Logged in on one instance, logged out on the other ({failed}): each server has a "
        "key of its own.",
        "One key for every instance, from the environment (SECRET_KEY).",
        (
            "docs/half-fixes.md#8-a-secret-key-generated-at-import",
            "examples/hosts_behind_a_balancer.py",
        ),
    ),
    ("two-tabs", ""): Advice(
        "Right for every user but one user's tabs ({failed}): two requests of one browser "
        "at once both read the user's whole list, and each saves it back whole; the last "
        "save drops the other's item. A session does that (the cookie, or Flask-Session's "
        "save of the whole session), and so does any read-modify-write of a user's record.",
        "Make each add change only what it adds: a row of its own (INSERT), or an append "
        "the store runs in one statement.",
        (
            "docs/half-fixes.md#4-flask-session-with-its-defaults",
            "examples/half_fix_session_defaults.py",
            "examples/half_fix_cookie_session.py",
        ),
    ),
    ("applied-twice", ""): Advice(
        "A write shows up twice ({failed}): a try whose answer came too late (a store "
        "paused mid-write, say) had in fact been made, and the retry made it a second time.",
        "Keep the retry (a timeout may also mean nothing was written) and make it harmless: "
        "a key made once per write, before the first try, that the store keeps once in the "
        "same step as the write. On Valkey or Redis one Lua script that does SET key NX and "
        "pushes only if that set it; in SQL a UNIQUE column and INSERT ... ON CONFLICT DO "
        "NOTHING.",
        (
            "docs/faults.md#idempotency-keys-make-them-safe",
            "docs/faults.md#retries-make-them-double",
            "tests/test_faults.py",
        ),
    ),
    ("gave-up", ""): Advice(
        "Right while the store answers, wrong while it is paused ({failed}): the write gave "
        "up with an error answer while the store was away, though its first try may well "
        "have been written.",
        "Keep retrying for longer than a pause of a second or so (several tries, each "
        "waiting longer), and make the retry harmless: a key made once per write, before "
        "the first try, that the store keeps once in the same step as the write.",
        (
            "docs/faults.md#timeouts-make-outcomes-unknown",
            "docs/faults.md#idempotency-keys-make-them-safe",
            "tests/test_faults.py",
        ),
    ),
    ("key-apart", ""): Advice(
        "A write was acknowledged, then missing ({failed}): the key and the write are two "
        "steps, so a try that set the key but never wrote, or whose write came too late, "
        "made the retry skip the write it still needed.",
        "Make the key and the write one step the store runs: one Lua script that does SET "
        "key NX and pushes only if that set it (or MULTI/EXEC); in SQL, the key's row and "
        "the write in one transaction.",
        (
            "docs/faults.md#idempotency-keys-make-them-safe",
            "tests/test_faults.py",
        ),
    ),
}


def advice(pattern: str, kind: str) -> Advice | None:
    return ADVICE.get((pattern, kind)) or ADVICE.get((pattern, ""))


def hints(results: list[ShapeResult], exercise_number: int) -> tuple[str, list[str]]:
    """The pattern, and its hints from the first nudge to the reading."""
    pattern = diagnose(results)
    if pattern == "solved":
        return pattern, ["Every shape passed: solved. `make practice` shows the next one."]
    if pattern == "not-graded":
        reasons = "; ".join(f"{r.shape}: {r.reason}" for r in results if r.reason)
        return pattern, [f"No shape could run here ({reasons or 'no result'}): nothing graded."]
    failed = [r for r in results if r.verdict == "failed"]
    kinds = [kind for r in failed for kind in r.failed_kinds]
    found = advice(pattern, kinds[0] if kinds else "")
    words = {
        "failed": ", ".join(r.shape for r in failed),
        "passed": ", ".join(
            r.shape for r in results if r.verdict == "passed" and r.shape in ONE_PROCESS
        )
        or "one process",
    }
    reading = " and ".join(found.read)
    return pattern, [
        found.meaning.format(**words),
        found.change,
        f"Read {reading}. Still stuck: `make solution EX={exercise_number}` shows the "
        "reference fix.",
    ]
