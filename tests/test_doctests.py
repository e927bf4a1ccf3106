"""The `>>>` examples in module docstrings run, so none of them can go stale.

Modules whose examples need a live server show them as plain text instead
(loadtests/clients/client.py, with the output of a real run)."""

import doctest
import importlib
import subprocess

import pytest

from plumbing.config import REPO_ROOT


def modules_with_examples() -> list[str]:
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [
        path.removesuffix(".py").replace("/", ".")
        for path in tracked
        if ">>> " in (REPO_ROOT / path).read_text() and not path.startswith("tests/")
    ]


def test_some_module_has_examples():
    assert modules_with_examples()  # the collection below would pass vacuously otherwise


@pytest.mark.parametrize("module", modules_with_examples())
def test_the_examples_in_a_docstring_hold(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
