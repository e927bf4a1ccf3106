"""What builds the docs from the repository: code blocks and diffs taken from
the source, results from real runs, screenshots from a real browser, and the
site's pages for the repository files the walkthrough links to."""

from plumbing.config import REPO_ROOT

DOCS_DIR = REPO_ROOT / "docs"
