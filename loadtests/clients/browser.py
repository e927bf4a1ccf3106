"""Real Chromium, driven by Selenium, on the apps' page (GET /, plumbing/page.py):
for tests/test_browser.py and the docs' screenshots (docs/tools/screenshots.py).

Chromium and its driver are Debian's (`apt-get install chromium
chromium-driver`), or CHROMIUM and CHROMEDRIVER name them; Selenium comes
from PyPI. Both paths are given to Selenium, so it downloads nothing.

    with browser() as alice:
        page = Page(alice, "http://127.0.0.1:5000/")
        page.add("sessions")
        page.visits()        # ['sessions']
"""

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

HOW_TO_GET_IT = (
    "Chromium and its driver: apt-get install chromium chromium-driver (as root), "
    "or set CHROMIUM and CHROMEDRIVER; Selenium: .venv/bin/pip install selenium"
)
WAIT_SECONDS = 15.0  # the most a page may take to answer (far above a run's few ms)


def chromium() -> str | None:
    if named := os.environ.get("CHROMIUM"):
        return shutil.which(named)
    return shutil.which("chromium") or shutil.which("chromium-browser")


def chromedriver() -> str | None:
    return shutil.which(os.environ.get("CHROMEDRIVER") or "chromedriver")


def missing() -> str:
    """Why no browser can be driven here, or "" when one can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return f"Selenium is not installed. {HOW_TO_GET_IT}"
    if not chromium() or not chromedriver():
        return f"no chromium or chromedriver on PATH. {HOW_TO_GET_IT}"
    return ""


@contextmanager
def browser(width: int = 760, height: int = 720) -> Iterator[Any]:
    """A headless Chromium of its own: its own profile, so its own cookies (a user)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium()
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-net-benchmarking",  # chrome.benchmarking, for close_connections()
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver()))
    try:
        yield driver
    finally:
        driver.quit()


def close_connections(driver: Any) -> None:
    """Close the browser's connections, the idle kept-alive ones too, as if it
    quit. Call it before its server stops: gunicorn's gthread worker keeps a
    kept-alive connection open up to 2 s as it stops (STOP_KEEPALIVE_LINGER),
    and Chromium keeps its own. chrome.benchmarking.closeConnections() is
    Chromium's synchronous call for testing, given to pages by
    --enable-net-benchmarking; where a Chromium lacks it, nothing is closed
    and the server only waits its 2 s, as it did before."""
    driver.execute_script("window.chrome?.benchmarking?.closeConnections();")


class Page:
    """The visits page in one tab of a browser."""

    def __init__(self, driver: Any, url: str, open_it: bool = True) -> None:
        self.driver = driver
        self.url = url
        self.tab = driver.current_window_handle
        if open_it:
            self.load()

    def focus(self) -> None:
        self.driver.switch_to.window(self.tab)

    def close(self) -> None:
        """Close this tab (another_tab's), and go back to the first one."""
        self.focus()
        self.driver.close()
        self.driver.switch_to.window(self.driver.window_handles[0])

    def wait_for_status(self, starting: str) -> str:
        from selenium.webdriver.support.ui import WebDriverWait

        self.focus()
        status = lambda driver: driver.find_element("id", "status").text  # noqa: E731
        WebDriverWait(self.driver, WAIT_SECONDS).until(
            lambda driver: status(driver).startswith((starting, "4", "5"))
        )
        if not (text := status(self.driver)).startswith(starting):
            raise AssertionError(f"the page says: {text}")
        return text

    def load(self) -> None:
        self.focus()
        self.driver.get(self.url)
        self.wait_for_status("loaded")

    def add(self, article: str) -> None:
        self.focus()
        self.driver.find_element("css selector", f'button[data-article="{article}"]').click()
        self.wait_for_status(f"added {article}")

    def visits(self) -> list[str]:
        self.focus()
        return [item.text for item in self.driver.find_elements("css selector", "#visits li")]

    def another_tab(self) -> "Page":
        """A second tab of the same browser (the same cookies), its window kept
        by this tab's script as `window.other`, so both can act at once."""
        self.focus()
        self.driver.execute_script("window.other = window.open(arguments[0], 'other');", self.url)
        handle = next(h for h in self.driver.window_handles if h != self.tab)
        self.driver.switch_to.window(handle)
        tab = Page(self.driver, self.url, open_it=False)
        tab.wait_for_status("loaded")
        return tab

    def add_together(self, other: "Page", mine: str, theirs: str) -> None:
        """Both tabs' add buttons clicked in one turn of this tab's script: the
        two requests leave at the same moment, each from its own tab."""
        self.focus()
        self.driver.execute_script(
            "window.other.document.querySelector(`button[data-article='${arguments[1]}']`).click();"
            "document.querySelector(`button[data-article='${arguments[0]}']`).click();",
            mine,
            theirs,
        )
        self.wait_for_status(f"added {mine}")
        other.wait_for_status(f"added {theirs}")
