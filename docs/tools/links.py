"""Links in Markdown, and the repository files they point at.

The docs link to the code that proves each claim with plain relative links,
such as `../examples/half_fix_lock.py` or
`../tests/test_examples.py#test_a_lock_is_exact_in_one_process_and_diverges_over_two`.
On a code host these open the file. In the site, docs/tools/hooks.py turns
each into a page of the site that shows the file, with an anchor for every
top-level function and class. tests/test_docs.py checks that every such link
names a file that exists and, with a #fragment, a definition in it.
"""

import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass

from docs.tools import REPO_ROOT

# [text](target) and ![alt](target), with an optional "title"
LINK = re.compile(
    r"(?P<bang>!?)\[(?P<text>[^\]\n]*)\]"
    r"\((?P<target>[^)\s]+)(?P<title>\s+\"[^\"]*\")?\)"
)
FENCE = re.compile(r"^\s*(```|~~~)")


@dataclass(frozen=True)
class Link:
    text: str
    target: str
    image: bool


def outside_code(markdown: str) -> Iterator[tuple[int, str]]:
    """The lines that are not inside fenced code blocks, with their index."""
    fence: str | None = None
    for number, line in enumerate(markdown.splitlines(keepends=True)):
        if match := FENCE.match(line):
            if fence is None:
                fence = match[1]
            elif match[1] == fence:
                fence = None
            continue
        if fence is None:
            yield number, line


def links(markdown: str) -> list[Link]:
    found = []
    for _, line in outside_code(markdown):
        for match in LINK.finditer(line):
            found.append(Link(match["text"], match["target"], bool(match["bang"])))
    return found


def is_relative(target: str) -> bool:
    return not (re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith(("#", "/")))


def resolve(from_file: str, target: str) -> tuple[str, str]:
    """The repository path a relative link in `from_file` (a repository path)
    points at, and its fragment. A folder resolves to its README.md."""
    path, _, fragment = target.partition("#")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(from_file), path))
    if path.endswith("/") or (REPO_ROOT / resolved).is_dir():
        resolved = posixpath.join(resolved, "README.md")
    return resolved, fragment


def in_docs(repo_path: str) -> bool:
    """A page or picture of the docs, rather than code kept under docs/."""
    return (
        repo_path.startswith("docs/")
        and not repo_path.startswith("docs/tools/")
        and not repo_path.endswith(".py")
    )


def rewrite(markdown: str, replace) -> str:
    """The Markdown with each link's target replaced by replace(target), or
    left alone where that returns None; fenced code is never touched."""
    lines = markdown.splitlines(keepends=True)
    for number, line in outside_code(markdown):

        def one(match: re.Match) -> str:
            new = replace(match["target"])
            if new is None:
                return match[0]
            return f"{match['bang']}[{match['text']}]({new}{match['title'] or ''})"

        lines[number] = LINK.sub(one, line)
    return "".join(lines)
