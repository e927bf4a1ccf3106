"""The walkthrough's claims stay tied to their proofs and to the versions
they were checked against.

- A paragraph that says "proven", "proves" or "measured" links to a test, an
  example or the results run (or says when and with what command it was
  measured once).
- The pages that state how Flask, Flask-Session, gunicorn or redis-py
  behave name the version they were checked against, and a lock (or venv) with
  another release line of one of them fails here until those pages are
  reviewed."""

import re
from importlib.metadata import version
from pathlib import Path

import pytest

from docs.tools import blocks, lock

REPO_ROOT = Path(__file__).resolve().parent.parent
SKIPPED = {".venv", "var", "node_modules", ".git"}
PAGES = sorted(
    [*(REPO_ROOT / "docs").glob("*.md"), *REPO_ROOT.glob("**/README.md")],
)
PAGES = [
    page for page in dict.fromkeys(PAGES) if not SKIPPED & set(page.relative_to(REPO_ROOT).parts)
]

CLAIM = re.compile(r"(?<!not )\b(proven|proves|measured)\b", re.IGNORECASE)
LINK = re.compile(r"\]\(([^)#\s]+)[^)]*\)")
# The proofs: tests, examples, the results run (docs/results.md and
# docs/results/), and the harness that proves anomalies from a recorded history.
PROOF_FOLDERS = ("tests/", "examples/", "docs/results", "loadtests/")
# Pages with such a paragraph not yet tied to its proof: each must be fixed,
# then removed from here (strict: the test fails once the page is fixed).
NOT_YET_TIED: dict[str, str] = {}
INLINE_CODE = re.compile(r"`[^`]*`")
MEASURED_ONCE = re.compile(
    r"measured once on \d{4}-\d{2}-\d{2}\b.*?`[^`]+`", re.IGNORECASE | re.DOTALL
)
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)

# Pages that state how Flask, Werkzeug, Flask-Session or gunicorn behave, and
# the versions each must name. Review them when an upgrade fails below.
CHECKED_AGAINST = {
    "docs/flask.md": ("Flask 3.1", "Flask-Session 0.8"),
    "docs/why.md": ("Flask 3.1",),
    "docs/half-fixes.md": ("Flask 3.1",),
    "docs/choosing.md": ("Flask 3.1", "Flask-Session 0.8"),
    "docs/fix-per-user.md": ("Flask 3.1", "Flask-Session 0.8"),
    "fixed_session/README.md": ("Flask 3.1", "Flask-Session 0.8", "redis-py 8"),
    "README.md": ("gunicorn 27",),
}
# The release lines those pages were reviewed against: (major, minor), or
# (major,) where the claims hold for a whole major release.
REVIEWED = {"flask": (3, 1), "flask-session": (0, 8), "gunicorn": (27,), "redis": (8,)}


def paragraphs(page: Path) -> list[str]:
    text = blocks.BLOCK.sub("", page.read_text())  # generated blocks carry no claims
    text = FENCE.sub("", text)
    return [p for p in re.split(r"\n\s*\n", text) if p.strip()]


def links_a_proof(page: Path, paragraph: str, root: Path) -> bool:
    for target in LINK.findall(paragraph):
        if "://" in target:
            continue
        path = (page.parent / target).resolve()
        relative = path.relative_to(root).as_posix() if path.is_relative_to(root) else ""
        if relative.startswith(PROOF_FOLDERS):
            return True
    return False


def claims_without_proof(page: Path, root: Path = REPO_ROOT) -> list[str]:
    return [
        paragraph.strip()[:120]
        for paragraph in paragraphs(page)
        if not paragraph.lstrip().startswith("#")  # a heading
        and CLAIM.search(INLINE_CODE.sub("", paragraph))
        and not links_a_proof(page, paragraph, root.resolve())
        and not MEASURED_ONCE.search(paragraph)
    ]


def page_param(page: Path):
    name = page.relative_to(REPO_ROOT).as_posix()
    marks = (
        [pytest.mark.xfail(reason=NOT_YET_TIED[name], strict=True)] if name in NOT_YET_TIED else []
    )
    return pytest.param(page, id=name, marks=marks)


@pytest.mark.parametrize("page", [page_param(page) for page in PAGES])
def test_every_proven_or_measured_claim_links_its_proof(page):
    assert claims_without_proof(page) == []


def test_the_claim_check_finds_a_bare_claim_and_accepts_a_linked_one(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "It is proven by nobody.\n\n"
        "It is proven by [`t`](tests/test_x.py#t).\n\n"
        "It was measured once on 2026-11-21 with `make bench`.\n\n"
        "It is not measured here.\n"
    )
    assert claims_without_proof(page, root=tmp_path) == ["It is proven by nobody."]


@pytest.mark.parametrize("path", sorted(CHECKED_AGAINST))
def test_pages_about_library_behaviour_name_the_versions_checked(path):
    text = (REPO_ROOT / path).read_text()
    missing = [name for name in CHECKED_AGAINST[path] if name not in text]
    assert missing == [], f"{path} does not say it was checked against {missing}"


def release(text: str, parts: int) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:parts])


@pytest.mark.parametrize("distribution", sorted(REVIEWED))
def test_the_locked_and_installed_versions_are_the_ones_the_docs_were_checked_against(
    distribution,
):
    reviewed = REVIEWED[distribution]
    found = {
        "installed": version(distribution),
        "locked": ", ".join(v for v, _ in lock.pins().get(distribution, [])),
    }
    wrong = {where: v for where, v in found.items() if release(v, len(reviewed)) != reviewed}
    assert wrong == {}, (
        f"{distribution} {wrong}, but the docs were checked against "
        f"{'.'.join(map(str, reviewed))}: review {', '.join(sorted(CHECKED_AGAINST))} "
        f"(and the tests they link), then update the versions they name and REVIEWED "
        f"in tests/test_claims.py"
    )
