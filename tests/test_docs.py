"""The walkthrough under docs/: it builds, its links resolve, and what it shows
is what the repository holds.

- The MkDocs site builds with --strict (every link and anchor checked), and a
  broken link does fail that build.
- Every link from a page to a repository file names a file that exists; a
  #fragment on a Python file names a function or class defined in it.
- Every code block, diff and results table between generated-block markers
  is exactly what docs/tools/blocks.py makes from its source today.
- The results page says when, on what and with which command its numbers
  were made; the screenshots are dated and shown.
- Every `make <target>` a page or the code names has a rule in the Makefile.
"""

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from docs.tools import DOCS_DIR, blocks, kept, links, results, screenshots, sources, witnesses
from examples import EXAMPLES
from plumbing.config import REPO_ROOT
from serve.pids import free_port, stop_process

ENV = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
# The walkthrough and the top README (the folders' READMEs have generated
# blocks too, but link as a code host reads them).
PAGES = [page for page in blocks.pages() if page.parent in {REPO_ROOT, REPO_ROOT / "docs"}]


def mkdocs(*args: str, config: Path = REPO_ROOT / "mkdocs.yml") -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "mkdocs", *args, "--config-file", str(config)]
    return subprocess.run(
        command, cwd=REPO_ROOT, env=ENV, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    build = mkdocs("build", "--strict", "--site-dir", str(out))
    assert build.returncode == 0, build.stderr[-3000:]
    return out


def small_site(folder: Path, pages: dict[str, str]) -> Path:
    """The site's own config and hooks on a few pages of our own, for what
    needs no whole site (which the fixture above builds): its config file."""
    docs = folder / "docs"
    shutil.copytree(DOCS_DIR / "stylesheets", docs / "stylesheets")
    for name, text in pages.items():
        (docs / name).write_text(text)
    nav = "".join(f"  - {name}\n" for name in pages)
    config = folder / "mkdocs.yml"
    config.write_text(
        f"INHERIT: {REPO_ROOT / 'mkdocs.yml'}\n"
        f"docs_dir: {docs}\n"
        f"site_dir: {folder / 'site'}\n"
        f"hooks:\n  - {REPO_ROOT / 'docs/tools/hooks.py'}\n"
        f"nav:\n{nav}"
        "watch: []\n"
    )
    return config


def test_the_site_builds_strictly_with_a_page_per_linked_file(site):
    for page in ("index.html", "why/index.html", "results/index.html", "choosing/index.html"):
        assert (site / page).is_file(), page
    # A link to a test function lands on its anchor in the page that shows the file.
    shown = (site / "code/tests/test_concurrency.py/index.html").read_text()
    assert 'id="test_broken_global_loses_diverges_and_leaks"' in shown
    assert "def test_broken_global_loses_diverges_and_leaks(" in re.sub(r"<[^>]+>", "", shown)
    # A link to a folder shows its README.
    assert "fixed_db: state in a database" in (site / "code/fixed_db/index.html").read_text()
    # Links from the walkthrough were rewritten to those pages.
    why = (site / "why/index.html").read_text()
    assert 'href="../code/examples/seed_thread_per_request.py/"' in why


def test_a_broken_link_or_anchor_fails_the_strict_build(tmp_path):
    broken = (
        "# Broken\n\n[gone](../examples/no_such_example.py) and [nowhere](why.md#no-such-part)\n"
        "and [there](why.md#a-part)\n"
    )
    config = small_site(tmp_path, {"broken.md": broken, "why.md": "# Why\n\n## A part\n"})
    docs = tmp_path / "docs"
    build = mkdocs("build", "--strict", config=config)
    assert build.returncode == 1
    assert "code/examples/no_such_example.py.md" in build.stderr
    assert "no-such-part" in build.stderr
    assert "a-part" not in build.stderr.replace("no-such-part", "")
    # Without the two broken links, the same two pages build.
    (docs / "broken.md").write_text("# Broken\n\n[there](why.md#a-part)\n")
    assert mkdocs("build", "--strict", config=config).returncode == 0


def top_level_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    }


def repository_links() -> list[tuple[str, str, str, str]]:
    """(page, link target, repository path, fragment) for every relative link
    from a docs page to a file outside the docs."""
    found = []
    for page in PAGES:
        where = page.relative_to(REPO_ROOT).as_posix()
        for link in links.links(page.read_text()):
            if links.is_relative(link.target):
                path, fragment = links.resolve(where, link.target)
                if not links.in_docs(path):
                    found.append((where, link.target, path, fragment))
    return found


def test_every_link_to_the_repository_names_a_file_and_definition_that_exist():
    checked, problems = 0, []
    for page, target, path, fragment in repository_links():
        checked += 1
        file = REPO_ROOT / path
        if not file.is_file():
            problems.append(f"{page}: {target} -> no file {path}")
        elif fragment and file.suffix == ".py" and fragment not in top_level_names(file):
            problems.append(f"{page}: {target} -> {path} defines no {fragment}")
        elif fragment and file.suffix != ".py":
            problems.append(f"{page}: {target} -> a fragment only for Python definitions")
        if path.startswith("tests/") and fragment and not fragment.startswith("test_"):
            problems.append(f"{page}: {target} -> not a test function")
    assert checked > 100  # the walkthrough backs its claims with links
    assert not problems, "\n".join(problems)


def test_every_example_is_linked_from_the_walkthrough():
    linked = {path for _, _, path, _ in repository_links()}
    unlinked = [name for name in EXAMPLES if f"examples/{name}.py" not in linked]
    assert not unlinked


def test_generated_blocks_match_their_sources():
    """Code, diffs, results and screenshots in the pages: run `make docs-blocks`
    if this fails after a change to the code they show."""
    assert blocks.stale_pages() == []


def test_every_page_uses_generated_blocks_only_for_code_from_the_repository():
    """A Python block outside the markers would be a pasted copy."""
    for page in PAGES:
        text = page.read_text()
        outside = blocks.BLOCK.sub("", text)
        assert "```python" not in outside, page.name
        assert "```diff" not in outside, page.name


def test_a_source_block_is_found_by_name_and_is_the_file_verbatim():
    code = sources.excerpt("broken_global/app.py", ["increment_counter"])
    assert code.startswith('@bp.post("/counter/increment")\ndef increment_counter():')
    assert code.endswith('return {"value": new_value}')
    assert code in (REPO_ROOT / "broken_global/app.py").read_text()
    with pytest.raises(LookupError):
        sources.excerpt("broken_global/app.py", ["no_such_function"])


@pytest.mark.parametrize("new", ["fixed_session/app.py", "fixed_db/app.py", "fixed_cache/app.py"])
def test_a_diffs_hunks_point_at_the_real_lines(new):
    old = "broken_global/app.py"
    files = {
        "-": (REPO_ROOT / old).read_text().splitlines(),
        "+": (REPO_ROOT / new).read_text().splitlines(),
    }
    lines = sources.app_diff(old, new).splitlines()
    hunks = 0
    for n, line in enumerate(lines):
        if match := sources.HUNK.match(line):
            hunks += 1
            at = {"-": int(match[1]), "+": int(match[3])}
            for body in lines[n + 1 :]:
                if body.startswith("@@"):
                    break
                for side in "-+":
                    if body[:1] in (side, " "):
                        assert files[side][at[side] - 1] == body[1:], (side, at[side], body)
                        at[side] += 1
    assert hunks >= 1


def test_the_results_page_names_its_date_machine_and_command():
    run = results.load_run()
    assert run is not None, "no docs/results/run.json: run `make docs-results`"
    page = (DOCS_DIR / "results.md").read_text()
    assert f"Produced by `{results.MAKE_COMMAND}` on **{run['started'][:10]}**" in page
    assert f"{run['machine']['cores']} cores" in page
    assert {c["target"] for c in run["commands"]} == {f"make {t}" for t in results.TARGETS}
    for command in run["commands"]:
        assert f"`{command['target']}` | `{command['command']}`" in page
        assert command["command"].startswith("python -m loadtests.")  # the real harness
        assert command["exit_code"] == 0, command  # a run that met every expectation
    for name in results.KEPT_FILES:
        assert (results.RESULTS_DIR / name).stat().st_size > 0, name
    compared = {row["app"] for row in results.read_csv("compare.csv")}
    assert compared == {"broken_global", "fixed_session", "fixed_db", "fixed_cache"}
    for chart in re.findall(r"\]\((results/[^)]+\.png)\)", page):
        assert (DOCS_DIR / chart).is_file(), chart


@pytest.mark.parametrize("name", sorted(kept.RUNS))
def test_every_kept_run_names_its_date_machine_and_command_and_is_shown(name):
    found = kept.load(name)
    assert found is not None, f"not kept: python -m docs.tools.kept {name}"
    record, output = found
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", record["started"])
    assert record["machine"]["cores"] > 0 and record["machine"]["python"]
    assert record["command"] == kept.command_line(name)
    assert record["exit_code"] == kept.EXPECTED_EXIT.get(name, 0), record  # met expectations
    assert output.strip()
    shown = [page for page in blocks.pages() if f"results kept-{name} -->" in page.read_text()]
    assert shown, f"no page shows the kept run {name}"
    rendered = kept.render(name)
    assert record["started"][:10] in rendered and f"`{record['command']}`" in rendered


def test_the_screenshots_are_dated_real_pictures_and_shown():
    manifest = json.loads(screenshots.MANIFEST.read_text())
    shown = (DOCS_DIR / "load-testing.md").read_text()
    assert len(manifest["shots"]) == len(screenshots.SHOTS)
    for shot in manifest["shots"]:
        picture = screenshots.IMAGES_DIR / shot["file"]
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", shot["file"]
        assert shot["taken"][:10] in shot["file"]  # the date it was taken, in its name
        assert f"(images/{shot['file']})" in shown
        assert f"taken {shot['taken'][:10]}" in shown


def test_the_witness_pictures_are_dated_real_pictures_of_real_runs_and_shown():
    manifest = json.loads(witnesses.MANIFEST.read_text())
    assert [shot["key"] for shot in manifest["shots"]] == list(witnesses.PICTURES)
    for shot in manifest["shots"]:
        picture = witnesses.IMAGES_DIR / shot["file"]
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", shot["file"]
        assert shot["taken"][:10] in shot["file"]  # the date it was taken, in its name
        assert shot["run"].startswith("python -m loadtests."), shot  # which run made it
        for page in witnesses.SHOWN_IN[shot["key"]]:
            shown = (REPO_ROOT / page).read_text()
            assert f"<!-- generated: witness {shot['key']} -->" in shown, page
            assert shot["file"] in shown and f"`{shot['run']}`" in shown, page


def test_make_docs_serves_the_site_on_loopback(tmp_path):
    recipe = re.search(r"^docs:.*\n((?:\t.*\n)+)", (REPO_ROOT / "Makefile").read_text(), re.M)
    assert "mkdocs serve --dev-addr 127.0.0.1:" in recipe[1]
    # Serving, on one page and the code page it links to: the whole site's
    # build is the fixture's above, and mkdocs serve would build it all again.
    page = "# Start\n\nThe [lock](../examples/half_fix_lock.py#prove).\n"
    config = small_site(tmp_path, {"README.md": page})
    port = free_port()
    command = [sys.executable, "-m", "mkdocs", "serve", "--no-livereload", "-f", str(config)]
    server = subprocess.Popen(
        [*command, "--dev-addr", f"127.0.0.1:{port}"],
        cwd=REPO_ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                home = requests.get(f"http://127.0.0.1:{port}/", timeout=2)
                break
            except requests.ConnectionError:
                assert server.poll() is None, "mkdocs serve exited"
                assert time.monotonic() < deadline, "mkdocs serve did not answer"
                time.sleep(0.2)
        assert home.status_code == 200
        assert "Flask state under load" in home.text
        code = requests.get(f"http://127.0.0.1:{port}/code/examples/half_fix_lock.py/", timeout=5)
        assert code.status_code == 200
    finally:
        stop_process(server)


def makefile_targets() -> set[str]:
    """The targets the Makefile has a rule for (what `make <target>` can run)."""
    text = (REPO_ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-zA-Z][\w-]*):(?!=)", text, re.M))


def test_every_make_command_the_pages_and_code_name_is_a_makefile_target():
    # A merge once dropped the tail of the Makefile: `make practice`, `make grade`,
    # `make check-app` and `make docs-witnesses` were named everywhere and
    # answered "No rule to make target".
    files = subprocess.run(
        ["git", "ls-files", "*.md", "*.py", "Makefile"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    named = {}
    for name in files:
        text = (REPO_ROOT / name).read_text()
        pattern = r"(?:`|^|\$ )make (?:-s )?([a-z][a-z-]*[a-z])\b"
        for target in re.findall(pattern, text, re.M):
            named.setdefault(target, name)
    missing = {target: where for target, where in named.items() if target not in makefile_targets()}
    assert not missing, f"named but not in the Makefile: {missing}"
    for target in ("practice", "grade", "watch", "hint", "solution", "check-app", "docs-witnesses"):
        assert target in named
