"""The walkthrough's claims stay tied to their proofs and to the versions
they were checked against.

- A paragraph that says "proven", "proves" or "measured" links its proof: a
  test (a test file, or one test function in it), an example, or a kept
  result under docs/results/ (the results run, or a kept run with its date,
  machine and command). A link into the harness (loadtests/) proves nothing by
  itself, nor do the words "measured once".
- A paragraph that says a claim is "cited" links its source (an address).
- The pages that state how Flask, Flask-Session, gunicorn, redis-py or
  the libraries the examples prove things about (Flask-Caching,
  Flask-Limiter, Flask-SocketIO, RQ, Flask-SQLAlchemy, Flask-JWT-Extended)
  behave name the version they were checked against, and a lock (or venv)
  with another release line of one of them fails here until those pages are
  reviewed."""

import re
from importlib.metadata import version
from pathlib import Path

import pytest

from docs.tools import blocks, lock
from plumbing.config import REPO_ROOT

SKIPPED = {"var", "node_modules"}


def readers_page(page) -> bool:
    """Not the runs' data, nor a hidden folder's: the venv, git, and the tools'
    caches (.pytest_cache has a README.md of its own after a first run)."""
    parts = page.relative_to(REPO_ROOT).parts
    return not SKIPPED & set(parts) and not any(part.startswith(".") for part in parts)


PAGES = sorted(
    [*(REPO_ROOT / "docs").glob("*.md"), *REPO_ROOT.glob("**/README.md")],
)
PAGES = [page for page in dict.fromkeys(PAGES) if readers_page(page)]

CLAIM = re.compile(r"(?<!not )\b(proven|proves|measured)\b", re.IGNORECASE)
LINK = re.compile(r"\]\(([^)#\s]+)[^)]*\)")
# The proofs: a test file (tests/test_*.py, with or without a #test_...
# function), an example (examples/*.py), or a kept result (docs/results.md,
# docs/results/...). The harness that measures is not itself a proof.
PROOF = re.compile(r"^(tests/test_\w+\.py|examples/\w+\.py|docs/results(\.md|/.+))$")
CITED = re.compile(r"\bcited\b", re.IGNORECASE)
ADDRESS = re.compile(r"\]\(https?://[^)\s]+\)|<https?://|\b[a-z0-9.-]+\.(?:org|io|com|net)/\S+")
# Pages with such a paragraph not yet tied to its proof: each must be fixed,
# then removed from here (strict: the test fails once the page is fixed).
NOT_YET_TIED: dict[str, str] = {}
INLINE_CODE = re.compile(r"`[^`]*`")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)

# Pages that state how Flask, Werkzeug, Flask-Session, gunicorn or the libraries
# of the examples behave, and the versions each must name. Review them when an
# upgrade fails below.
CHECKED_AGAINST = {
    "docs/flask.md": ("Flask 3.1", "Flask-Session 0.8", "SQLAlchemy 2.1", "Flask-SQLAlchemy 3.1"),
    "docs/why.md": ("Flask 3.1",),
    "docs/half-fixes.md": ("Flask 3.1",),
    "docs/choosing.md": ("Flask 3.1", "Flask-Session 0.8"),
    "docs/fix-per-user.md": ("Flask 3.1", "Flask-Session 0.8"),
    "fixed_session/README.md": ("Flask 3.1", "Flask-Session 0.8", "redis-py 8"),
    "README.md": ("gunicorn 27",),
    "examples/README.md": (
        "Flask-Caching 2.5",
        "Flask-Limiter 4.1",
        "Flask-SocketIO 5.7",
        "RQ 2.12",
        "Flask-SQLAlchemy 3.1",
        "SQLAlchemy 2.1",
        "Flask-JWT-Extended 4.7",
    ),
}
# The release lines those pages were reviewed against: (major, minor), or
# (major,) where the claims hold for a whole major release.
REVIEWED = {
    "flask": (3, 1),
    "flask-session": (0, 8),
    "gunicorn": (27,),
    "redis": (8,),
    "flask-caching": (2, 5),
    "flask-limiter": (4, 1),
    "flask-socketio": (5, 7),
    "rq": (2, 12),
    "flask-sqlalchemy": (3, 1),
    "sqlalchemy": (2, 1),
    "flask-jwt-extended": (4, 7),
}


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
        if PROOF.match(relative):
            return True
    return False


def claims_without_proof(page: Path, root: Path = REPO_ROOT) -> list[str]:
    """Paragraphs that say proven or measured without linking a proof, or
    cited without naming where from."""
    return [
        paragraph.strip()[:120]
        for paragraph in paragraphs(page)
        if not paragraph.lstrip().startswith("#")  # a heading
        and (
            (
                CLAIM.search(INLINE_CODE.sub("", paragraph))
                and not links_a_proof(page, paragraph, root.resolve())
            )
            or (CITED.search(INLINE_CODE.sub("", paragraph)) and not ADDRESS.search(paragraph))
        )
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


def test_the_claim_check_tells_a_proof_from_a_link_that_proves_nothing(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "It is proven by nobody.\n\n"
        "It is proven by [`t`](tests/test_x.py#test_t).\n\n"
        "It is proven by [an example](examples/half_fix_lock.py).\n\n"
        "It was measured: [the run](docs/results.md).\n\n"
        "It was measured by [the harness](loadtests/runs/bench.py).\n\n"
        "It was measured once on 2026-11-21 with `make bench`.\n\n"
        "It is proven by [the fixtures](tests/conftest.py).\n\n"
        "It is cited, not run here.\n\n"
        "It is cited from [the docs](https://docs.python.org/3/library/threading.html).\n\n"
        "It is not measured here.\n"
    )
    assert claims_without_proof(page, root=tmp_path) == [
        "It is proven by nobody.",
        "It was measured by [the harness](loadtests/runs/bench.py).",
        "It was measured once on 2026-11-21 with `make bench`.",
        "It is proven by [the fixtures](tests/conftest.py).",
        "It is cited, not run here.",
    ]


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


# -- figures ------------------------------------------------------------------
# A figure is a measured number: a rate (req/s, commits/s), a duration in ms or
# µs, a percentage, a ratio (0.46x), a percentile (p99 and a number), a count
# of runs or tries, "N of M", a count of lost, acknowledged, retried or
# anomalous operations, a table cell that is a number with a thousands
# separator (31,732), or pasted output (a `text` fence with numbers). Ports,
# HTTP codes, versions, settings (a number "by default"), the contract's sizes
# and line numbers in links are none of these. Outside a generated block
# (results, kept runs: docs/tools/results.py and kept.py) a page holds none.
NUMBER = r"(?:\d[\d,]*(?:\.\d+)?|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve)"
FIGURE = re.compile(
    "|".join(
        [
            r"\b\d[\d,]*(?:\.\d+)?\s?(?:req/s|requests/s|commits/s|ops/s|writes/s)",
            r"\b\d[\d,]*(?:\.\d+)?\s?(?:ms|µs)\b(?! by default)",
            r"\b\d+(?:\.\d+)?\s?%",
            r"\b\d+(?:\.\d+)?x\b",
            r"\b\d+(?:\.\d+)? (?:to|and) (?:about )?\d+(?:\.\d+)? (?:s|min|minutes|of)\b",
            r"\b\d+ min \d+ s\b",
            r"\bp\d\d\b(?!/)[^.\n|]{0,30}?\d",
            rf"\b{NUMBER} (?:of|out of) {NUMBER}\b",
            rf"\b{NUMBER} (?:runs|tries|trials)\b",
            rf"\b{NUMBER} (?:lost|retries|anomalies|operations|ops|acknowledged|commits)\b",
            r"(?<=\|) *\d{1,3}(?:,\d{3})+\b[^|\n]*(?=\|)",
            r"^```text\n(?:.*\n)*?.*\d\d.*\n(?:.*\n)*?```",
        ]
    ),
    re.IGNORECASE | re.MULTILINE,
)
HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
CODE_SPAN = re.compile(r"`[^`]*`")
LINK_TARGET = re.compile(r"\]\([^)]*\)")
SHELL_FENCE = re.compile(r"^```(?:console|shell|bash|sh|python|diff|toml)\b.*?^```", re.M | re.S)


def figures_outside_generated_blocks(text: str) -> list[str]:
    """The figures a page shows that no generated block put there."""
    text = blocks.BLOCK.sub("", text)
    for pattern in (SHELL_FENCE, HTML_COMMENT, CODE_SPAN, LINK_TARGET):
        text = pattern.sub(" ", text)
    return [match.group(0) for match in FIGURE.finditer(text)]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.relative_to(REPO_ROOT).as_posix())
def test_no_page_shows_a_figure_outside_a_generated_block(page):
    assert figures_outside_generated_blocks(page.read_text()) == []


def test_the_figure_check_finds_typed_figures_and_leaves_settings_alone():
    typed = (
        "It served 1,922 req/s, p99 28 ms, 0.46x of `/healthz`; 23 of 24 held,\n"
        "in six runs 588 lost, p99 0.12 to 0.5 s; from 0.35 to 0.6 of it; 6 min 18 s.\n\n"
        "```text\nbroken_global  2499  588\n```\n"
    )
    assert len(figures_outside_generated_blocks(typed)) >= 9
    settings = (
        "Port 5000 answers 414 over 4094 bytes with gunicorn 27; `WORK_MS` is 2 ms by default;\n"
        "2 workers x 4 threads; see [x](tests/test_x.py#L12).\n\n"
        "<!-- generated: results stamp -->\n1,922 req/s\n<!-- end generated -->\n"
    )
    assert figures_outside_generated_blocks(settings) == []
