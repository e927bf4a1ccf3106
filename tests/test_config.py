"""plumbing/config.py: the settings table is the one list of settings.

Every environment setting the apps, the plumbing and the launchers read is a
row of SETTINGS, which the README's Configuration table is generated from
(tests/test_docs.py fails on a stale block) and tests/conftest.py clears.
"""

import re

import pytest

from plumbing.config import FIXED_DB_BACKENDS, REPO_ROOT, SETTINGS, default, settings_table
from registry import APPS
from serve.gunicorn_conf import DEFAULTS as GUNICORN_DEFAULTS

READERS = ("broken_global", "fixed_db", "fixed_cache", "fixed_session", "plumbing", "serve")
# A setting read by name: setting(app, "X"), os.environ.get("X"), env_flag("X"), setting("X").
READ = re.compile(
    r"""(?:setting\((?:app, )?|environ\.get\(|getenv\(|env_flag\()"([A-Z][A-Z0-9_]+)\""""
)
NOT_SETTINGS = {"PORT", "CONTENT_LENGTH", "HTTP_TRANSFER_ENCODING"}  # set by a launcher; WSGI


def names_read() -> set[str]:
    found = set()
    for folder in READERS:
        for path in (REPO_ROOT / folder).rglob("*.py"):
            found |= set(READ.findall(path.read_text()))
    return found - NOT_SETTINGS


def test_every_setting_the_code_reads_is_in_the_table_once():
    names = [setting.name for setting in SETTINGS]
    assert len(names) == len(set(names))
    assert names_read() - set(names) == set()
    assert "WORK_MS" in names_read()  # the pattern finds what it should


def test_the_readme_table_is_the_generated_one():
    readme = (REPO_ROOT / "README.md").read_text()
    assert "<!-- generated: settings -->\n" + settings_table() in readme


def test_the_shared_gunicorn_config_has_the_tables_defaults():
    table = {s.name: s.value for s in SETTINGS if s.name.startswith("GUNICORN_")}
    assert table == GUNICORN_DEFAULTS
    with pytest.raises(KeyError):
        default("DATABASE_URL")  # no plain default: it depends on VAR_DIR


def test_fixed_dbs_backends_are_the_makefiles_db_choices_and_the_registrys():
    makefile = (REPO_ROOT / "Makefile").read_text()
    choices = re.search(r"^ifneq \(\$\(filter-out ([a-z ]+),\$\(DB\)\),\)$", makefile, re.M)
    assert choices, "the Makefile's DB= check is gone"
    assert tuple(choices[1].split()) == FIXED_DB_BACKENDS
    assert tuple(APPS["fixed_db"].embedded_by_backend) == FIXED_DB_BACKENDS
    assert f"DB must be {' or '.join(FIXED_DB_BACKENDS)}" in makefile


def test_the_registry_says_which_store_each_app_runs_on_and_how_to_give_it_its_own():
    from registry import APPS

    fixed_db, fixed_cache = APPS["fixed_db"], APPS["fixed_cache"]
    assert fixed_db.embedded_server({"FIXED_DB_BACKEND": "postgres", "DATABASE_URL": "x"}) is None
    assert fixed_db.backend({"DATABASE_URL": "postgresql://db.example/fixed_db"}) == "postgres"
    assert (fixed_cache.label({}), fixed_cache.backend({})) == ("fixed_cache", None)
    assert fixed_db.own_server_settings() == {"FIXED_DB_BACKEND": "postgres", "DATABASE_URL": ""}
    assert fixed_cache.own_server_settings() == {"REDIS_URL": ""}
    assert APPS["fixed_session"].own_server_settings() is None
