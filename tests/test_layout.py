"""The floor plan holds: no import cycle anywhere, and each folder of the
harness imports only what loadtests/README.md says it may.

Read from the source, not by importing it: every .py file's syntax tree,
every import statement in it (at the top, in a function, or under
TYPE_CHECKING, since each is a dependency a reader has to follow), resolved
to the project's modules. The judge must read a recorded history on any
machine, so it may import the standard library and itself, and no part of
it that starts a process or talks to a server."""

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from plumbing.config import REPO_ROOT

# Standard-library modules the judge may not import: they start processes,
# signal them or open connections.
PROCESS_OR_NETWORK = {"os", "subprocess", "multiprocessing", "concurrent", "pty", "signal"}
PROCESS_OR_NETWORK |= {"socket", "http", "urllib", "selectors", "asyncio"}
# What each folder of the harness may import, besides the standard library
# and third-party libraries (loadtests/README.md, the floor plan).
HARNESS = ("judge", "clients", "runs", "faults", "swarm", "timeline", "check")
MAY_IMPORT = {
    "judge": {"loadtests.judge"},
    "timeline": {"loadtests.judge", "loadtests.timeline"},
    "check": {"loadtests.judge", "loadtests.clients", "loadtests.runs.report", "loadtests.check"},
    "clients": {"loadtests.judge", "loadtests.clients"},
    "runs": {"loadtests.judge", "loadtests.clients", "loadtests.runs", "serve", "registry"},
    "faults": {"loadtests.judge", "loadtests.clients", "loadtests.runs.report", "loadtests.faults"},
    "swarm": {"loadtests.judge", "loadtests.clients", "loadtests.runs.report", "loadtests.swarm"},
}
for folder in ("runs", "faults", "swarm", "check"):
    MAY_IMPORT[folder] |= {"loadtests.timeline"}  # drawing a history starts nothing
for folder in ("faults", "swarm", "check"):
    MAY_IMPORT[folder] |= {"serve", "registry"}
for folder in ("runs", "faults", "swarm", "check"):
    MAY_IMPORT[folder] |= {"plumbing.config"}  # var/ and the repository's root


def project_modules(root: Path) -> dict[str, Path]:
    """Every .py file git knows of (tracked, or new and not ignored), by module name."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    modules = {}
    for name in listed:
        if (root / name).exists():
            dotted = name.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
            modules[dotted] = root / name
    return modules


def imported_names(module: str, path: Path) -> Iterator[str]:
    """The dotted names every import statement in the file reaches for,
    `from a import b` giving a.b (a module, or a name in a)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x, from ..a import b
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            yield from (f"{base}.{alias.name}" for alias in node.names)


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest project module `name` starts with, else None (not ours)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph(root: Path) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module -> the project modules it imports, module -> the others' top-level names)."""
    modules = project_modules(root)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    outside: dict[str, set[str]] = {name: set() for name in modules}
    for module, path in modules.items():
        for name in imported_names(module, path):
            if (target := resolve(name, modules)) is not None:
                if target != module:
                    graph[module].add(target)
            else:
                outside[module].add(name.partition(".")[0])
    return graph, outside


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph)))
    try:
        for node in sorted(graph):
            if node not in index:
                visit(node)
    finally:
        sys.setrecursionlimit(limit)
    return found


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in graph[todo.pop()]:
            if target not in seen:
                seen.add(target)
                todo.append(target)
    return seen


def within(module: str, allowed: set[str]) -> bool:
    return any(module == a or module.startswith(a + ".") for a in allowed)


def test_no_module_imports_itself_through_others():
    graph, _ = import_graph(REPO_ROOT)
    assert len(graph) > 100  # the walk found the project, not an empty folder
    assert cycles(graph) == []


def test_a_cycle_is_found():
    """The check above can fail: a graph with a cycle, and the repository's
    own graph with one import added (writes.py reading the checker again,
    as it did under TYPE_CHECKING before the Verdict had a module of its own)."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    graph, _ = import_graph(REPO_ROOT)
    graph["loadtests.judge.writes"].add("loadtests.judge.checker")
    assert ["loadtests.judge.checker", "loadtests.judge.writes"] in cycles(graph)


def test_the_judge_imports_only_itself_and_the_standard_library():
    graph, outside = import_graph(REPO_ROOT)
    judge = [m for m in graph if m.startswith("loadtests.judge")]
    assert "loadtests.judge.checker" in judge
    for module in judge:
        reached = reachable(graph, module)
        assert not [m for m in reached if not m.startswith("loadtests.judge")], module
        for name in set().union(*(outside[m] for m in reached | {module})):
            assert name in sys.stdlib_module_names, f"{module} reaches {name}"
            assert name not in PROCESS_OR_NETWORK, f"{module} reaches {name}"


def test_each_harness_folder_imports_only_what_its_floor_plan_allows():
    graph, _ = import_graph(REPO_ROOT)
    broken = [
        f"{module} imports {target}"
        for folder in HARNESS
        for module in graph
        if module.startswith(f"loadtests.{folder}.")
        for target in graph[module]
        if not within(target, MAY_IMPORT[folder])
    ]
    assert broken == []


def test_a_judge_that_reaches_a_server_fails_the_check(tmp_path):
    """The judge's check can fail: the same walk over a copy of the judge
    with one file importing serve/ and requests."""
    for part in ("loadtests", "loadtests/judge", "serve"):
        (tmp_path / part).mkdir()
        (tmp_path / part / "__init__.py").write_text("")
    (tmp_path / "serve" / "processes.py").write_text("import subprocess\n")
    (tmp_path / "loadtests" / "judge" / "checker.py").write_text(
        "import requests\nfrom serve.processes import *\n"
    )
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    graph, outside = import_graph(tmp_path)
    assert reachable(graph, "loadtests.judge.checker") == {"serve.processes"}
    assert outside["loadtests.judge.checker"] == {"requests"}
    assert outside["serve.processes"] == {"subprocess"}
