"""The versions a fresh clone installs, read from requirements.lock, for the
pages that say which versions the docs were checked against.

The lock (written by `make lock`, uv's `pip compile --universal`) pins each
package once, or once per environment marker where the resolution differs
(numpy for Python 3.11 and for 3.12+). The README's "versions" block is
rendered from it, so a version is typed nowhere but in the lock.

    >>> pins("flask==3.1.3 \\\\\\n    --hash=sha256:ab\\n")
    {'flask': [('3.1.3', '')]}
"""

import re

from docs.tools import REPO_ROOT

LOCK_FILE = REPO_ROOT / "requirements.lock"
PIN = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s;\\]+)"
    r"(?: ; (?P<marker>[^\\]+?))?\s*\\?$"
)


def canonical(name: str) -> str:
    """A distribution's name as the lock and importlib.metadata compare it."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(text: str | None = None) -> dict[str, list[tuple[str, str]]]:
    """Each locked package: its (version, environment marker) pairs."""
    text = LOCK_FILE.read_text() if text is None else text
    found: dict[str, list[tuple[str, str]]] = {}
    for line in text.splitlines():
        if match := PIN.match(line):
            pin = (match["version"], (match["marker"] or "").strip())
            found.setdefault(canonical(match["name"]), []).append(pin)
    return found


def render(names: list[str]) -> str:
    """A Markdown table of the named packages' locked versions."""
    locked = pins()
    rows = []
    for name in names:
        versions = locked.get(canonical(name))
        if not versions:
            raise ValueError(f"{name} is not in {LOCK_FILE.name}: run make lock")
        shown = ", ".join(f"{v} (where {m})" if m else v for v, m in versions)
        rows.append(f"| {name} | {shown} |")
    return "\n".join(["| package | version |", "| :--- | ---: |", *rows])
