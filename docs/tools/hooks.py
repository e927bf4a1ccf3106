"""MkDocs hooks (mkdocs.yml: hooks): the repository files the docs link to
become pages of the site, and the generated blocks are rendered afresh.

The walkthrough links to code with relative links such as
`../examples/half_fix_lock.py#prove`, which a code host opens as they are.
A static site has no such file, so for every repository file the docs link
to (and, through their READMEs, every file those link to), this hook adds a
page under code/ that shows it: a Python file in segments, one per top-level
definition, each with an anchor of its name; a README as the page it is; any
other file as a code block. Links are then rewritten to those pages, and
MkDocs's strict build checks each of them, anchors included.
"""

import posixpath
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from mkdocs.structure.files import File, Files

from docs.tools import REPO_ROOT, blocks, links, sources

CODE_DIR = "code"
LEXERS = {".py": "python", ".toml": "toml", ".yml": "yaml", ".cfg": "ini", ".sh": "bash"}
LEXERS_BY_NAME = {"Makefile": "make", "run": "bash"}
GENERATED: dict[str, str] = {}  # src_uri of a generated page -> the repository path it shows


def code_uri(repo_path: str) -> str:
    """Where the site shows a repository file (a path relative to docs/)."""
    if posixpath.basename(repo_path) == "README.md":
        return f"{CODE_DIR}/{repo_path}"
    return f"{CODE_DIR}/{repo_path}.md"


FRONT_MATTER = "---\nhide:\n  - toc\n---\n\n"  # the code needs the width more


def python_page(repo_path: str, text: str) -> str:
    parts = [f"# `{repo_path}`", "", "<small>The repository's file, as it is.</small>", ""]
    for segment in sources.segments(text):
        if segment.name:
            parts += [f'<div id="{segment.name}" class="code-anchor"></div>', ""]
        parts += [blocks.fenced(segment.text, f'python linenums="{segment.first}"'), ""]
    return "\n".join(parts)


def file_page(repo_path: str) -> str:
    path = REPO_ROOT / repo_path
    text = path.read_text()
    if path.suffix == ".md":
        title, _, rest = text.partition("\n")
        note = f"<small>The repository's `{repo_path}`.</small>"
        return f"{title}\n\n{note}\n{rest}"
    if path.suffix == ".py":
        return FRONT_MATTER + python_page(repo_path, text)
    lexer = LEXERS.get(path.suffix) or LEXERS_BY_NAME.get(path.name, "text")
    return FRONT_MATTER + f"# `{repo_path}`\n\n" + blocks.fenced(text.rstrip("\n"), lexer) + "\n"


def linked_files(repo_path: str, markdown: str) -> list[str]:
    """The repository files outside docs/ that a page links to."""
    found = []
    for link in links.links(markdown):
        if links.is_relative(link.target):
            target, _ = links.resolve(repo_path, link.target)
            if not links.in_docs(target) and (REPO_ROOT / target).is_file():
                found.append(target)
    return found


def on_files(files: Files, config) -> Files:
    GENERATED.clear()
    pending = []
    for file in files.documentation_pages():
        markdown = blocks.refresh(Path(file.abs_src_path).read_text(), file.src_uri)
        pending += linked_files(f"docs/{file.src_uri}", markdown)
    while pending:
        repo_path = pending.pop()
        uri = code_uri(repo_path)
        if uri in GENERATED:
            continue
        GENERATED[uri] = repo_path
        content = file_page(repo_path)
        files.append(File.generated(config, uri, content=content))
        if repo_path.endswith(".md"):
            pending += linked_files(repo_path, content)
    return files


def site_target(repo_path: str, src_uri: str, target: str) -> str | None:
    """Where a link in a page should point in the site; None leaves it as is."""
    if not links.is_relative(target):
        return None
    resolved, fragment = links.resolve(repo_path, target)
    if links.in_docs(resolved):
        if links.in_docs(repo_path):
            return None  # between docs pages: MkDocs resolves and checks it
        page = resolved.removeprefix("docs/")
    else:
        page = code_uri(resolved)
    relative = posixpath.relpath(page, posixpath.dirname(src_uri) or ".")
    return relative + (f"#{fragment}" if fragment else "")


def on_page_markdown(markdown: str, page, config, files: Files) -> str:
    src_uri = page.file.src_uri
    repo_path = GENERATED.get(src_uri)
    if repo_path is None:  # a page of the walkthrough
        repo_path = f"docs/{src_uri}"
        markdown = blocks.refresh(markdown, src_uri)
    return links.rewrite(markdown, lambda target: site_target(repo_path, src_uri, target))
