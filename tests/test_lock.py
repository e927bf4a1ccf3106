"""A fresh clone installs what was tested: requirements.lock pins, with hashes,
every dependency pyproject.toml asks for, within its range, and the venv holds
exactly those pins.

The Makefile installs the lock with `pip install --require-hashes`; these
tests catch a dependency added to pyproject.toml without `make lock`, a pin a
range no longer allows, and a venv that drifted from the lock."""

import tomllib
from importlib.metadata import PackageNotFoundError, version

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement

from docs.tools import REPO_ROOT, lock

PROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
REQUIREMENTS = [
    Requirement(spec)
    for spec in [*PROJECT["dependencies"], *PROJECT["optional-dependencies"]["dev"]]
]


def locked_here(name: str, text: str | None = None) -> str | None:
    """The version the lock pins for this package on this interpreter."""
    from packaging.markers import Marker

    for pinned, marker in lock.pins(text).get(lock.canonical(name), []):
        if not marker or Marker(marker).evaluate(default_environment()):
            return pinned
    return None


def unmet(text: str | None = None) -> list[str]:
    """pyproject.toml's requirements the lock does not pin within their range."""
    return [
        f"{requirement} (locked: {locked_here(requirement.name, text)})"
        for requirement in REQUIREMENTS
        if not requirement.specifier.contains(locked_here(requirement.name, text) or "0", True)
    ]


def test_the_lock_pins_every_requirement_within_its_range():
    assert unmet() == [], "pyproject.toml changed without `make lock`"


def test_a_requirement_missing_from_the_lock_or_out_of_range_is_found():
    text = lock.LOCK_FILE.read_text()
    flask = locked_here("flask")
    without_flask = text.replace(f"\nflask=={flask} ", "\nnot-flask==1.0 ")
    assert any(line.startswith("flask") for line in unmet(without_flask))
    assert any(
        line.startswith("flask") for line in unmet(text.replace(f"flask=={flask}", "flask==3.2.0"))
    )


def test_every_pin_carries_a_hash():
    blocks = lock.LOCK_FILE.read_text().split("\n")
    pins = [i for i, line in enumerate(blocks) if lock.PIN.match(line)]
    assert pins
    unhashed = [blocks[i] for i in pins if not blocks[i + 1].lstrip().startswith("--hash=sha256:")]
    assert unhashed == []


@pytest.mark.parametrize("requirement", REQUIREMENTS, ids=str)
def test_the_venv_holds_the_locked_version(requirement):
    try:
        installed = version(requirement.name)
    except PackageNotFoundError:
        installed = None
    assert installed == locked_here(requirement.name), (
        f"the venv has {requirement.name} {installed}, the lock {locked_here(requirement.name)}: "
        "run make venv"
    )
