"""The walkthrough's witness pictures: timelines of real runs, in headless Chromium.

    python -m docs.tools.witnesses          # `make docs-witnesses`

Each picture is one anomaly's witness from a run made here and now: the
history recorded by the harness, judged by the checker, drawn by
loadtests/timeline/ and opened on that witness (`#anomaly-N`), then taken by
Chromium (loadtests/clients/browser.py). Nothing is drawn by hand:

    lost-update, greet-leak  broken_global hammered (loadtests/runs/hammer.py)
    lost-tab                 fixed_session hammered: one user's tabs at once
    applied-twice            fixed_cache under faults, no Idempotency-Key
    applied-once             the same with keys: a write retried, applied once

The PNGs go to docs/images/ with the date in their names, and
docs/images/witnesses.json records when, which run made each, and what it
shows; a page shows one with the block `witness KEY` (docs/tools/blocks.py).
"""

import json
import os
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from docs.tools import DOCS_DIR, REPO_ROOT

IMAGES_DIR = DOCS_DIR / "images"
MANIFEST = IMAGES_DIR / "witnesses.json"
MAKE_COMMAND = "make docs-witnesses"
WINDOW = (1100, 720)
TRIES = 5  # runs of a kind before giving up on its witness (each shows it almost always)
HAMMER = {"users": 8, "ops": 10, "max_seconds": 30}
FAULT_SECONDS = 6.0
# key: (the anomaly's kind, the view its lanes are drawn in, what it is called)
PICTURES = {
    "lost-update": ("lost update", "worker", "the lost update"),
    "greet-leak": ("greet leak", "worker", "the greeting leak"),
    "lost-tab": ("lost tab", "user", "the lost tab"),
    "applied-twice": ("duplicated visit", "user", "a write applied twice without a key"),
    "applied-once": ("applied once", "user", "a write retried with a key, applied once"),
}


# The pages that show each picture (tests/test_docs.py checks they do).
SHOWN_IN = {
    "lost-update": ("docs/why.md", "README.md"),
    "greet-leak": ("docs/why.md",),
    "lost-tab": ("docs/fix-per-user.md",),
    "applied-twice": ("docs/faults.md",),
    "applied-once": ("docs/faults.md",),
}


def hammered(app: str) -> tuple[str, Any, list, Any, list]:
    """A small hammer run: (run, verdict, history, origin, faults)."""
    from loadtests.runs.hammer import hammer_app

    verdict, history, _ = hammer_app(app, **HAMMER)
    run = f"python -m loadtests.runs.hammer {app} --users {HAMMER['users']} --ops {HAMMER['ops']}"
    return run, verdict, history, None, []


def faulted(app: str, keys: bool) -> tuple[str, Any, list, Any, list]:
    from loadtests.faults.run import Run

    run = Run(app, keys, FAULT_SECONDS)  # one of the command's two runs, keys on or off
    verdict = run.go()
    command = f"python -m loadtests.faults.run {app} --seconds {FAULT_SECONDS:.0f}"
    return command, verdict, run.history, run.origin, run.faults


def applied_once(history: list) -> list:
    """A keyed append sent more than once whose token the user's last list holds
    once: the anomaly's counterpart, as a witness to draw."""
    from loadtests.judge.verdict import Anomaly
    from loadtests.judge.writes import requests_of

    last = {e.user: e for e in history if e.op == "list_visits" and e.ok}
    appends = [e for e in history if e.op == "add_visit"]
    for attempts in sorted(requests_of(appends), key=len, reverse=True):
        first, final = attempts[0], last.get(attempts[0].user)
        if len(attempts) > 1 and final and final.value.count(first.arg) == 1:
            summary = (
                f"{first.user}'s append of {first.arg!r}, sent {len(attempts)} times with one "
                f"Idempotency-Key, is in its last list once"
            )
            return [Anomaly("applied once", summary, [*attempts, final])]
    return []


def witness(key: str) -> tuple[str, Any, list, Any, list, list]:
    """A run that shows the picture's witness, tried up to TRIES times."""
    kind = PICTURES[key][0]
    make: Callable[[], tuple] = {
        "lost-update": lambda: hammered("broken_global"),
        "greet-leak": lambda: hammered("broken_global"),
        "lost-tab": lambda: hammered("fixed_session"),
        "applied-twice": lambda: faulted("fixed_cache", keys=False),
        "applied-once": lambda: faulted("fixed_cache", keys=True),
    }[key]
    for _ in range(TRIES):
        run, verdict, history, origin, faults = make()
        found = applied_once(history) if key == "applied-once" else verdict.examples
        if any(anomaly.kind == kind for anomaly in found):
            return run, verdict, history, origin, faults, found
    raise RuntimeError(f"no {kind} in {TRIES} runs of {make.__name__}")


def take(key: str, date: str, folder: Path) -> dict[str, Any]:
    from loadtests.clients import browser
    from loadtests.timeline import write_timeline

    kind, view, _ = PICTURES[key]
    run, verdict, history, origin, faults, found = witness(key)
    title = f"{run}: {kind}"
    page = write_timeline(folder / f"{key}.html", title, history, verdict, faults, origin,
                          shown=found)  # fmt: skip
    number = next(n for n, anomaly in enumerate(found) if anomaly.kind == kind)
    path = IMAGES_DIR / f"witness-{key}-{date}.png"
    with browser.browser(*WINDOW) as driver:
        driver.get(f"{page.as_uri()}#anomaly-{number}" + ("/worker" if view == "worker" else ""))
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(driver, browser.WAIT_SECONDS).until(
            lambda d: d.execute_script("return document.body.dataset.rendered")
        )
        driver.save_screenshot(str(path))
    summary = found[number].summary
    print(f"  {path.relative_to(REPO_ROOT)}: {kind}: {summary}", flush=True)
    taken = datetime.now(UTC).isoformat(timespec="seconds")
    return {"key": key, "file": path.name, "run": run, "kind": kind, "summary": summary,
            "view": view, "taken": taken}  # fmt: skip


def take_all() -> list[dict[str, Any]]:
    date = datetime.now(UTC).date().isoformat()
    previous = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {"shots": []}
    with tempfile.TemporaryDirectory(prefix="witnesses-") as folder:
        shots = [take(key, date, Path(folder)) for key in PICTURES]
    kept = {shot["file"] for shot in shots}
    for old in previous["shots"]:
        if old["file"] not in kept:
            (IMAGES_DIR / old["file"]).unlink(missing_ok=True)
    manifest = {"produced_by": MAKE_COMMAND, "shots": shots}
    MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")
    return shots


def render(key: str, page: str) -> str:
    """The Markdown for one picture: the image, and which run made it."""
    if not MANIFEST.exists():
        return f"_No witness pictures yet: `{MAKE_COMMAND}` takes them._"
    manifest = json.loads(MANIFEST.read_text())
    shot = next((s for s in manifest["shots"] if s["key"] == key), None)
    if shot is None:
        raise ValueError(f"no witness picture {key!r} in {MANIFEST.relative_to(REPO_ROOT)}")
    target = Path(os.path.relpath(IMAGES_DIR / shot["file"], (DOCS_DIR / page).parent))
    lanes = "lanes per worker process and thread" if shot["view"] == "worker" else "lanes per user"
    image = f"![{PICTURES[key][2]}: {shot['summary']}]({target.as_posix()})"
    if not page.startswith("../"):  # the README's links are rewritten one bracket deep only
        image = f"[{image}]({target.as_posix()})"
    return (
        f"{image}\n\n"
        f"<small>{PICTURES[key][2].capitalize()}, {shot['summary']}: the timeline of a real "
        f"run, `{shot['run']}`, {lanes}, taken {shot['taken'].replace('T', ' ')[:16]} UTC by "
        f"`{manifest['produced_by']}`.</small>"
    )


def main(argv: list[str]) -> int:
    if argv:
        print(__doc__)
        return 2
    take_all()
    print(f"manifest: {MANIFEST.relative_to(REPO_ROOT)} (then make docs-blocks)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
