"""What a learner has done: var/practice.json, kept across restarts.

Per exercise: solved (once solved, it stays so), the last grade's verdict
per shape, its pattern, its hints and how many of them were shown. Written
whole to a new file, then renamed over the old one, so a grade interrupted
half-way never leaves a broken file.
"""

import json
import os
import time
from pathlib import Path
from typing import Any

from plumbing.config import var_dir


def progress_file() -> Path:
    return var_dir() / "practice.json"


def load() -> dict[str, Any]:
    try:
        data = json.loads(progress_file().read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {"exercises": {}}
    return data if isinstance(data.get("exercises"), dict) else {"exercises": {}}


def save(data: dict[str, Any]) -> None:
    path = progress_file()
    fresh = path.with_suffix(f".{os.getpid()}.tmp")
    fresh.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    fresh.replace(path)


def reset() -> bool:
    """Forget every grade; True if there was anything to forget."""
    try:
        progress_file().unlink()
    except FileNotFoundError:
        return False
    return True


def entry(slug: str) -> dict[str, Any]:
    return load()["exercises"].get(slug, {})


def record_grade(
    slug: str, shapes: dict[str, str], pattern: str, hints: list[str], witness: str
) -> dict[str, Any]:
    """Keep a grade; its first hint counts as shown. Returns the exercise's entry."""
    data = load()
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    old = data["exercises"].get(slug, {})
    solved = pattern == "solved"
    new = {
        "solved": bool(old.get("solved")) or solved,
        "solved_at": old.get("solved_at") or (now if solved else None),
        "graded_at": now,
        "shapes": shapes,
        "pattern": pattern,
        "hints": hints,
        # The same pattern again keeps the learner's place in its hints.
        "hints_shown": old.get("hints_shown", 1) if old.get("pattern") == pattern else 1,
        "witness": witness,
    }
    data["exercises"][slug] = new
    save(data)
    return new


def next_hint(slug: str) -> tuple[str, int, int] | None:
    """The next hint for the last grade: (text, its number, how many), or None
    if the exercise was never graded."""
    data = load()
    found = data["exercises"].get(slug)
    if not found or not found.get("hints"):
        return None
    hints = found["hints"]
    number = min(found.get("hints_shown", 0) + 1, len(hints))
    found["hints_shown"] = number
    save(data)
    return hints[number - 1], number, len(hints)
