"""Two users in real Chromium on each app's page (GET /, plumbing/page.py):
broken_global shows one user's visits to the other, the fixed apps never do;
and one user's two tabs adding at the same moment: fixed_session keeps one of
the two (a session is saved whole, last writer wins), the other fixed apps
keep both.

Two browsers are two users: each has its own profile, so its own cookies.
Each app runs under gunicorn gthread with one worker process: with two,
which process each browser's connection lands on would decide whether
broken_global's globals meet (tests/test_concurrency.py shows the processes
apart). WORK_MS=300, the work a handler does between reading and writing
state, makes the two tabs' requests overlap for certain.

Chromium and Selenium: see loadtests/clients/browser.py. Without them the test is
skipped and says how to get them; with CI=true it fails instead.
"""

import pytest

from loadtests.clients import browser
from serve.processes import AppServer, available_apps, free_port
from tests.conftest import need_a_browser

pytestmark = pytest.mark.gunicorn

ALICE, BOB = "sessions", "databases"  # the article each user adds


@pytest.fixture(scope="module")
def two_users():
    need_a_browser()
    with browser.browser() as alice, browser.browser() as bob:
        yield alice, bob


@pytest.fixture(params=available_apps())
def server(request, tmp_path, two_users):
    env = {"VAR_DIR": str(tmp_path / "var"), "WORK_MS": "300"}
    with AppServer(request.param, free_port(), env=env, shape="gthread-1x8") as running:
        for driver in two_users:
            driver.delete_all_cookies()  # a new user on each app
        yield running
        for driver in two_users:  # or the server's stop waits 2 s for their connections
            browser.close_connections(driver)


def test_one_users_visits_show_up_for_another_only_in_broken_global(server, two_users):
    alice, bob = (browser.Page(driver, server.url + "/") for driver in two_users)
    alice.add(ALICE)
    bob.add(BOB)
    alice.load()
    bob.load()
    if server.app == "broken_global":
        assert bob.visits() == [ALICE, BOB]  # one list for everyone: Bob sees Alice's
        assert alice.visits() == [ALICE, BOB]
    else:
        assert alice.visits() == [ALICE]
        assert bob.visits() == [BOB]


def test_two_tabs_adding_at_once_keep_both_except_in_a_session(server, two_users):
    alice = browser.Page(two_users[0], server.url + "/")
    alice.add("globals")  # the first visit sets the cookie both tabs share
    second = alice.another_tab()
    try:
        alice.add_together(second, "flask-g", "redis")
        alice.load()
        kept = alice.visits()
    finally:
        second.close()
    assert kept[0] == "globals"
    if server.app in ("broken_global", "fixed_session"):
        # Both read the same list, both wrote it back with their own append.
        assert len(kept) == 2 and kept[1] in ("flask-g", "redis"), kept
    else:
        assert sorted(kept[1:]) == ["flask-g", "redis"]
