"""Screenshots for the load-testing page: Locust's web UI during a real run,
and two users' browsers on an app's own page.

    python -m docs.tools.screenshots        # `make docs-screenshots`

For each app in SHOTS it starts `python -m loadtests.swarm.locust_run APP` (the
app under the shared gunicorn config, and Locust's web UI on a free
127.0.0.1 port), starts the swarm, lets it run until the Correctness tab has
something to count, and has headless Chromium take each tab. Then it stops
the launcher by its PID (SIGTERM, which it handles as a Ctrl-C) and waits
until it has stopped everything it started.

For each app in PAGES it starts the app (one gunicorn worker process, as in
tests/test_browser.py), and two Chromium browsers of their own, Alice and
Bob, each add an article on the app's page (GET /) and load it again; each
one's page is a picture (loadtests/clients/browser.py).

The PNGs go to docs/images/ with the date in their names, and
docs/images/screenshots.json records when, of what, and with which Locust.
Chromium is `chromium` on PATH, or CHROMIUM=/path/to/it, with chromedriver.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import requests

from docs.tools import DOCS_DIR, REPO_ROOT

IMAGES_DIR = DOCS_DIR / "images"
MANIFEST = IMAGES_DIR / "screenshots.json"
MAKE_COMMAND = "make docs-screenshots"
USERS = 24
RUN_AT_LEAST_SECONDS = 12.0
WINDOW = "1280,900"
# (app, tab key in Locust's UI, what the picture is called in the docs)
SHOTS = (
    ("broken_global", "stats", "statistics"),
    ("broken_global", "charts", "charts"),
    ("broken_global", "correctness", "correctness"),
    ("fixed_db", "correctness", "correctness"),
)
TAB_TITLES = {"stats": "Statistics", "charts": "Charts", "correctness": "Correctness"}
# And two users' pages: (app, the user, "page-" + the user). Each user adds an
# article, then both pages are loaded again.
SHOTS += (
    ("broken_global", "alice", "page-alice"),
    ("broken_global", "bob", "page-bob"),
    ("fixed_db", "alice", "page-alice"),
    ("fixed_db", "bob", "page-bob"),
)
ARTICLES = {"alice": "sessions", "bob": "databases"}


def chromium() -> str:
    found = os.environ.get("CHROMIUM") or shutil.which("chromium")
    found = found or shutil.which("chromium-browser")
    if not found:
        raise SystemExit("no chromium on PATH: apt-get install chromium, or set CHROMIUM")
    return found


def free_port() -> int:
    from serve.pids import free_port as pick

    return pick()


def wait_for_ui(url: str, launcher: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while True:
        if launcher.poll() is not None:
            raise RuntimeError("the Locust launcher exited before its web UI answered")
        try:
            if requests.get(url, timeout=2).ok:
                return
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"no web UI on {url} after {seconds:.0f} s")
        time.sleep(0.2)


def screenshot(url: str, path: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        command = [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            f"--window-size={WINDOW}",
            "--virtual-time-budget=4000",  # let the page fetch and draw the live numbers
            f"--screenshot={path}",
            url,
        ]
        subprocess.run(command, check=True, capture_output=True, timeout=60)
    if not path.exists() or path.stat().st_size < 10_000:
        raise RuntimeError(f"chromium wrote no usable screenshot of {url}")


def shoot_app(app: str, tabs: list[tuple[str, str]], date: str, var: str) -> list[dict[str, Any]]:
    web_port = free_port()
    ui = f"http://127.0.0.1:{web_port}"
    with tempfile.TemporaryFile() as log:
        launcher = subprocess.Popen(
            [
                *(sys.executable, "-m", "loadtests.swarm.locust_run", app, "--app-port", "0"),
                *("--web-port", str(web_port), "--users", str(USERS)),
            ],
            cwd=REPO_ROOT,
            env={**os.environ, "VAR_DIR": var},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_ui(ui + "/", launcher)
            swarm = requests.post(
                ui + "/swarm", data={"user_count": USERS, "spawn_rate": USERS}, timeout=10
            )
            swarm.raise_for_status()
            began = time.monotonic()
            while time.monotonic() - began < RUN_AT_LEAST_SECONDS:
                time.sleep(0.5)
            shots = []
            for tab, name in tabs:
                path = IMAGES_DIR / f"locust-{name}-{app}-{date}.png"
                taken = datetime.now(UTC)
                screenshot(f"{ui}/?tab={tab}", path)
                print(f"  {path.relative_to(REPO_ROOT)}", flush=True)
                shots.append(
                    {
                        "file": path.name,
                        "app": app,
                        "tab": TAB_TITLES[tab],
                        "name": name,
                        "taken": taken.isoformat(timespec="seconds"),
                    }
                )
            return shots
        finally:
            # SIGTERM stops it as Ctrl-C does (a SIGINT may be ignored when this
            # script itself runs in the background).
            launcher.send_signal(signal.SIGTERM)
            try:
                launcher.wait(timeout=90)
            except subprocess.TimeoutExpired:
                launcher.kill()
                launcher.wait()
                log.seek(0)
                print(log.read().decode(errors="replace")[-3000:], file=sys.stderr)
                raise


def shoot_pages(app: str, users: list[str], date: str, var: str) -> list[dict[str, Any]]:
    """Alice and Bob, each in a browser of their own, add an article; then each
    page is loaded again and taken."""
    from loadtests.clients import browser
    from serve.processes import AppServer

    env = {"VAR_DIR": var}
    with (
        AppServer(app, free_port(), env=env, shape="gthread-1x8") as server,
        browser.browser() as alice,
        browser.browser() as bob,
    ):
        pages = {"alice": browser.Page(alice, server.url + "/")}
        pages["bob"] = browser.Page(bob, server.url + "/")
        for user, page in pages.items():
            page.add(ARTICLES[user])
        shots = []
        for user in users:
            page = pages[user]
            page.load()
            path = IMAGES_DIR / f"page-{user}-{app}-{date}.png"
            taken = datetime.now(UTC)
            page.driver.save_screenshot(str(path))
            print(f"  {path.relative_to(REPO_ROOT)}: {page.visits()}", flush=True)
            shots.append(
                {
                    "file": path.name,
                    "app": app,
                    "tab": f"{user.title()}'s page",
                    "name": f"page-{user}",
                    "taken": taken.isoformat(timespec="seconds"),
                }
            )
    return shots


def take_all() -> list[dict[str, Any]]:
    date = datetime.now(UTC).date().isoformat()
    previous = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {"shots": []}
    shots = []
    with tempfile.TemporaryDirectory(prefix="screenshots-var-") as var:
        locust = [shot for shot in SHOTS if shot[1] in TAB_TITLES]
        for app in dict.fromkeys(app for app, _, _ in locust):
            print(f"{app}: Locust with {USERS} users ...", flush=True)
            tabs = [(tab, name) for a, tab, name in locust if a == app]
            shots += shoot_app(app, tabs, date, var)
    pages = [shot for shot in SHOTS if shot[1] not in TAB_TITLES]
    for app in dict.fromkeys(app for app, _, _ in pages):
        with tempfile.TemporaryDirectory(prefix="screenshots-var-") as var:
            print(f"{app}: two users' pages ...", flush=True)
            shots += shoot_pages(app, [user for a, user, _ in pages if a == app], date, var)
    kept = {shot["file"] for shot in shots}
    for old in previous["shots"]:
        if old["file"] not in kept:
            (IMAGES_DIR / old["file"]).unlink(missing_ok=True)
    manifest = {
        "produced_by": MAKE_COMMAND,
        "locust": metadata.version("locust"),
        "users": USERS,
        "server": "gunicorn gthread 2 x 4 (serve/gunicorn_conf.py)",
        "shots": shots,
    }
    MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")
    return shots


def render(key: str, page: str) -> str:
    """The Markdown for one screenshot, e.g. key "correctness-broken_global"."""
    if not MANIFEST.exists():
        return f"_No screenshots yet: `{MAKE_COMMAND}` takes them._"
    manifest = json.loads(MANIFEST.read_text())
    for shot in manifest["shots"]:
        if f"{shot['name']}-{shot['app']}" == key:
            at = shot["taken"].replace("T", " ")[:16]
            relative = os.path.relpath(IMAGES_DIR / shot["file"], (DOCS_DIR / page).parent)
            target = Path(relative).as_posix()
            if shot["name"].startswith("page-"):
                return (
                    f"[![{shot['tab']} on {shot['app']}]({target})]({target})\n\n"
                    f"<small>{shot['tab']} on `{shot['app']}` (gunicorn gthread, one worker "
                    f"process), in a Chromium of its own, taken {at} UTC by "
                    f"`{manifest['produced_by']}`.</small>"
                )
            return (
                f"[![Locust's {shot['tab']} tab, {shot['app']}]({target})]({target})\n\n"
                f"<small>The {shot['tab']} tab during a run against `{shot['app']}` "
                f"({manifest['server']}, {manifest['users']} users), taken {at} UTC "
                f"with Locust {manifest['locust']} by `{manifest['produced_by']}`.</small>"
            )
    raise ValueError(f"no screenshot {key!r} in {MANIFEST.relative_to(REPO_ROOT)}")


def main(argv: list[str]) -> int:
    if argv:
        print(__doc__)
        return 2
    take_all()
    print(f"manifest: {MANIFEST.relative_to(REPO_ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
