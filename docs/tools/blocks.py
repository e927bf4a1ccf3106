"""Generated blocks in the docs' Markdown: code, diffs, results and screenshots.

A page asks for a block with an HTML comment, invisible on a code host, and
the block follows it up to the closing comment:

    <!-- generated: source broken_global/app.py increment_counter -->
    ...written by this module...
    <!-- end generated -->

Kinds:

    source PATH NAME...    the named definitions of a Python file (functions,
                           classes, "Class.method", assigned names)
    diff OLD NEW           `diff -u OLD NEW`, module docstrings left out
    results KEY            a table, chart or summary of the last results run
                           (docs/tools/results.py)
    screenshots KEY        the Locust web UI screenshots (docs/tools/screenshots.py)
    versions NAME...       the named packages' versions in requirements.lock
                           (docs/tools/lock.py)

The blocks are written into the Markdown, so the pages read the same on a
code host as on the site, and they are written only by this module:

    python -m docs.tools.blocks            # rewrite every stale block
    python -m docs.tools.blocks --check    # list stale pages; exit 1 if any

tests/test_docs.py fails when a block no longer matches what it is made from,
and the site's build renders every block afresh (docs/tools/hooks.py).
"""

import posixpath
import re
import sys
from pathlib import Path

from docs.tools import DOCS_DIR, REPO_ROOT, lock, results, screenshots, sources

BLOCK = re.compile(
    r"(?P<open><!-- generated: (?P<spec>[^\n]*?) -->\n)"
    r"(?P<body>.*?)"
    r"(?P<close><!-- end generated -->)",
    re.DOTALL,
)


def fenced(text: str, info: str) -> str:
    fence = "```"
    while fence in text:
        fence += "`"
    return f"{fence}{info}\n{text}\n{fence}"


def link_to(repo_path: str, page: str) -> str:
    """A relative link from a docs page (a path under docs/) to a repository file."""
    return posixpath.relpath(repo_path, posixpath.dirname(f"docs/{page}"))


def render(spec: str, page: str) -> str:
    """The body of one block, for the page (a path relative to docs/) it is on."""
    kind, *args = spec.split()
    if kind == "source" and len(args) >= 2:
        path, names = args[0], args[1:]
        code = fenced(sources.excerpt(path, names), f'python title="{path}"')
        return f"{code}\n\n<small>From [`{path}`]({link_to(path, page)}).</small>\n"
    if kind == "diff" and len(args) == 2:
        old, new = args
        code = fenced(sources.app_diff(old, new), f'diff title="diff -u {old} {new}"')
        return (
            f"{code}\n\n<small>`diff -u` [`{old}`]({link_to(old, page)}) "
            f"[`{new}`]({link_to(new, page)}), module docstrings left out.</small>\n"
        )
    if kind == "results" and len(args) == 1:
        return results.render(args[0], page)
    if kind == "screenshots" and len(args) == 1:
        return screenshots.render(args[0], page)
    if kind == "versions" and args:
        return lock.render(args)
    raise ValueError(f"unknown generated block {spec!r} in {page}")


def refresh(markdown: str, page: str) -> str:
    """The page with every generated block rendered afresh."""

    def one(match: re.Match) -> str:
        body = render(match["spec"], page)
        return f"{match['open']}{body.rstrip()}\n{match['close']}"

    return BLOCK.sub(one, markdown)


def pages() -> list[Path]:
    """The walkthrough's pages, the README and each folder's README, whose
    versions, sample runs and kept results are generated too."""
    walkthrough = (path for path in DOCS_DIR.rglob("*.md") if "tools" not in path.parts)
    folders = (path for path in REPO_ROOT.glob("*/README.md") if path.parent != DOCS_DIR)
    return [*sorted(walkthrough), REPO_ROOT / "README.md", *sorted(folders)]


def page_name(path: Path) -> str:
    """A page's path relative to docs/, as links from it are made ("../README.md")."""
    return posixpath.relpath(path, DOCS_DIR)


def stale_pages() -> list[str]:
    """The pages whose generated blocks differ from what they are made from."""
    stale = []
    for path in pages():
        text = path.read_text()
        if refresh(text, page_name(path)) != text:
            stale.append(path.relative_to(REPO_ROOT).as_posix())
    return stale


def write_all() -> list[str]:
    written = []
    for path in pages():
        text = path.read_text()
        fresh = refresh(text, page_name(path))
        if fresh != text:
            path.write_text(fresh)
            written.append(path.relative_to(REPO_ROOT).as_posix())
    return written


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        if stale := stale_pages():
            print("stale generated blocks in:", *stale, sep="\n  ")
            print("run: make docs-blocks")
            return 1
        print("every generated block is up to date")
        return 0
    if argv:
        print(__doc__)
        return 2
    written = write_all()
    print("rewrote: " + ", ".join(written) if written else "every generated block is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
