"""The installed Flask, and the one behaviour of it that some proofs rest on.

Up to Flask 3.1, a request that starts in a thread where an application
context of the same app is already pushed runs in that context, and shares
its `g`, instead of getting a new one. Flask 3.2 changes that: its changelog
says that an app context already pushed is not reused when dispatching a
request. Each proof that shows a bug of that reuse checks it here, says which
Flask it holds for, and, on a Flask that no longer reuses, says so instead of
reporting a bug it cannot see.

    >>> reuses_pushed_app_context("3.1.3"), reuses_pushed_app_context("3.2.0")
    (True, False)
"""

import importlib.metadata
import re

LAST_REUSING = (3, 1)  # the last Flask release line that reuses a pushed app context
HOLDS_FOR = "Flask 3.1 and earlier"


def installed() -> str:
    """The installed Flask's version ("3.1.3"); flask.__version__ is deprecated."""
    return importlib.metadata.version("flask")


def release(version: str) -> tuple[int, int]:
    """(major, minor) of a version string: "3.2.0rc1" -> (3, 2)."""
    match = re.match(r"(\d+)\.(\d+)", version)
    if match is None:
        raise ValueError(f"not a version: {version!r}")
    return int(match[1]), int(match[2])


def reuses_pushed_app_context(version: str | None = None) -> bool:
    """True if this Flask runs a request in an app context already pushed."""
    return release(version or installed()) <= LAST_REUSING


def no_longer_reused(version: str | None = None) -> str:
    """What a proof that rests on the reuse says on a Flask without it."""
    return (
        f"Flask {version or installed()} pushes a new application context for every "
        f"request, even where one is already pushed; this proof holds for {HOLDS_FOR} "
        "(see docs/half-fixes.md)"
    )
