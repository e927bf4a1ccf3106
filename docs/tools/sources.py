"""Code from the repository's files, cut the way the docs show it.

    excerpt("broken_global/app.py", ["increment_counter"])   # one function, as it is
    app_diff("broken_global/app.py", "fixed_db/app.py")       # diff -u, docstrings left out

Definitions are found by name with the ast module, never by line numbers,
so an excerpt follows its function wherever the file moves it.
"""

import ast
import difflib
import re
from dataclasses import dataclass

from docs.tools import REPO_ROOT


@dataclass(frozen=True)
class Span:
    """Lines first..last (1-based, inclusive) of one definition."""

    first: int
    last: int
    indent: int  # columns to remove: methods are shown dedented


def read(path: str) -> str:
    return (REPO_ROOT / path).read_text()


def definitions(source: str) -> dict[str, Span]:
    """Every top-level function, class, assignment (by its target, such as
    `counter` or `app.secret_key`) and call (by its text), and every method
    as "Class.method": its lines, with its decorators and the comment lines
    right above it."""
    lines = source.splitlines()
    spans: dict[str, Span] = {}

    def add(node: ast.stmt, names: list[str], indent: int) -> None:
        decorators = getattr(node, "decorator_list", [])
        first = min([node.lineno, *(d.lineno for d in decorators)])
        while first > 1 and lines[first - 2].strip().startswith("#"):
            first -= 1
        for name in names:
            spans[name] = Span(first, node.end_lineno, indent)

    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            add(node, [node.name], 0)
        elif isinstance(node, ast.ClassDef):
            add(node, [node.name], 0)
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef):
                    add(item, [f"{node.name}.{item.name}"], item.col_offset)
        elif isinstance(node, ast.Assign):  # `counter = 0`, `app.secret_key = ...`
            add(node, [ast.unparse(target) for target in node.targets], 0)
        elif isinstance(node, ast.AnnAssign):
            add(node, [ast.unparse(node.target)], 0)
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            add(node, [ast.unparse(node.value)], 0)  # a call by its text: `app.run()`
    return spans


def excerpt(path: str, names: list[str]) -> str:
    """The named definitions of one file, in file order. Definitions with only
    blank lines between them are shown together, as in the file."""
    source = read(path)
    lines = source.splitlines()
    spans = definitions(source)
    if missing := [name for name in names if name not in spans]:
        raise LookupError(f"{path} defines no {', '.join(missing)}")
    chosen = sorted({spans[name] for name in names}, key=lambda span: span.first)
    parts: list[list[str]] = []
    previous: Span | None = None
    for span in chosen:
        if previous and span.first <= previous.last:
            continue  # inside one already shown (a method of a class shown whole)
        body = [line[span.indent :] for line in lines[span.first - 1 : span.last]]
        between = lines[previous.last : span.first - 1] if previous else None
        if between is not None and not any(line.strip() for line in between):
            parts[-1] += [""] * len(between) + body
        else:
            parts.append(body)
        previous = span
    return "\n\n\n".join("\n".join(part) for part in parts)


def without_docstring(source: str) -> tuple[list[str], int]:
    """The lines after the module docstring (and the blank lines after it),
    and how many lines were dropped."""
    lines = source.splitlines()
    tree = ast.parse(source)
    dropped = 0
    first = tree.body[0] if tree.body else None
    is_constant = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
    if is_constant and isinstance(first.value.value, str):
        dropped = first.end_lineno
    while dropped < len(lines) and not lines[dropped].strip():
        dropped += 1
    return lines[dropped:], dropped


HUNK = re.compile(r"^@@ -(\d+)(,\d+)? \+(\d+)(,\d+)? @@")


def app_diff(old: str, new: str, context: int = 3) -> str:
    """`diff -u old new` of two Python files with their module docstrings left
    out (they describe each app and differ throughout); the hunk headers keep
    the files' real line numbers."""
    old_lines, old_offset = without_docstring(read(old))
    new_lines, new_offset = without_docstring(read(new))
    diff = difflib.unified_diff(old_lines, new_lines, old, new, n=context, lineterm="")

    def real_numbers(line: str) -> str:
        if match := HUNK.match(line):
            a, b = int(match[1]) + old_offset, int(match[3]) + new_offset
            return f"@@ -{a}{match[2] or ''} +{b}{match[4] or ''} @@"
        return line

    return "\n".join(real_numbers(line) for line in diff)


@dataclass(frozen=True)
class Segment:
    """A run of a file's lines, for the site's page of that file: the part
    before the first definition, then one segment per top-level definition."""

    first: int  # 1-based
    text: str
    name: str | None  # the definition it starts with, an anchor on the page


def segments(source: str) -> list[Segment]:
    lines = source.splitlines()
    starts: list[tuple[int, str | None]] = [(1, None)]
    tree = ast.parse(source)
    spans = definitions(source)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            first = spans[node.name].first
            if first == 1:
                starts[0] = (1, node.name)
            else:
                starts.append((first, node.name))
    result = []
    ends = [*starts[1:], (len(lines) + 1, None)]
    for (first, name), (after, _) in zip(starts, ends, strict=True):
        text = "\n".join(lines[first - 1 : after - 1]).rstrip()
        if text:
            result.append(Segment(first, text, name))
    return result
