"""How fast a long timeline opens: LIMIT operations of a real run, from disk.

    python -m loadtests.runs.timeline_bench           # make bench-timeline

A real hammer run of broken_global records more than the timeline's LIMIT
of operations; the page drawn from it (cut to LIMIT, loadtests/timeline/)
is opened from disk in headless Chromium a few times, and the median time
from navigation start to the page's `rendered` mark (after layout and
paint) is printed. tests/test_timeline.py opens the same page once and
counts its bars; the time is measured here only.
"""

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from loadtests.clients import browser
from loadtests.runs.hammer import hammer_app
from loadtests.timeline import LIMIT, write_timeline
from serve.processes import launcher

# Each user: OPS increments, appends and greetings, a read, a list, a tab:
# 34 x (3 x 100 + 3), and three more, is over LIMIT.
USERS, OPS = 34, 100
MAX_SECONDS = 60.0
OPENINGS = 3


def long_timeline(folder: Path) -> tuple[Path, int]:
    """A real run's timeline, written into `folder`, and how many operations the run had."""
    verdict, history, _ = hammer_app("broken_global", USERS, OPS, MAX_SECONDS)
    return write_timeline(folder / "long.html", "broken_global", history, verdict), len(history)


def opened(driver: Any, path: Path) -> tuple[float, int]:
    """One opening from disk: ms to the page's `rendered` mark, and the bars it drew."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(path.as_uri())
    WebDriverWait(driver, browser.WAIT_SECONDS).until(
        lambda d: d.execute_script("return document.body.dataset.rendered")
    )
    ms = float(driver.execute_script("return document.body.dataset.rendered"))
    bars = driver.execute_script("return document.querySelectorAll('#bars rect.op').length")
    return ms, bars


@launcher  # a server that did not start: an error, exit code 2
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.runs.timeline_bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--openings", type=int, default=OPENINGS, help="the median is of these")
    args = parser.parse_args(argv)
    if why := browser.missing():
        print(why, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as folder:
        path, operations = long_timeline(Path(folder))
        if operations <= LIMIT:
            print(f"the run recorded {operations:,} operations, not more than {LIMIT:,}")
            return 1
        figures = []
        with browser.browser(1400, 900) as driver:
            for _ in range(args.openings):
                ms, bars = opened(driver, path)
                if bars != LIMIT:
                    print(f"{bars:,} bars drawn, not {LIMIT:,}")
                    return 1
                figures.append(ms)
        print(
            f"{LIMIT:,} of {operations:,} operations ({path.stat().st_size / 1e6:.1f} MB): "
            f"rendered after {statistics.median(figures):.0f} ms (median of {figures})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
