# Broken vs. fixed Flask state, side by side. `make` lists the targets.
# Every recipe calls .venv/bin/... directly; the venv holds exactly
# requirements.lock and is rebuilt only when the lock changes.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
LOCK   := requirements.lock
STAMP  := $(VENV)/.installed-from-lock
APP    ?= broken_global

# fixed_db's store, for every target that starts it (run, run-fixed, demo,
# compare, matrix, bench, faults, scale-out, locust): DB=postgres runs it on
# PostgreSQL, an embedded server under var/postgres/ unless DATABASE_URL is
# set; unset, SQLite. `make run APP=fixed_db DB=postgres`.
DB ?=
ifneq ($(filter-out sqlite postgres,$(DB)),)
$(error DB must be sqlite or postgres, got "$(DB)")
endif
ifneq ($(DB),)
export FIXED_DB_BACKEND := $(DB)
endif

# Knobs, e.g. `make locust USERS=48 RUN_TIME=3m`, `make test PYTEST_ARGS="-k fuzz"`.
USERS        ?= 24
RUN_TIME     ?=
APP_PORT     ?=
WEB_PORT     ?= 8089
DOCS_PORT    ?= 8000
LOCUST_ARGS  ?=
PYTEST_ARGS  ?=
SOAK_MINUTES ?= 10
SOAK_APPS    ?= broken_global fixed_db

# The code runs from this folder and is not installed: only its dependencies go
# into the venv, exactly as pinned, with hashes, in requirements.lock (runtime
# and dev extra), so a fresh clone installs what the tests and docs were checked
# against. `make lock` re-resolves the lock from pyproject.toml's ranges with uv
# (`uv pip compile --universal`): one resolution for every platform and Python
# 3.11+, where pip-compile would lock only the interpreter it runs on. uv is
# itself in the lock's dev extra, so it needs nothing beyond the venv.
LOCK_COMMAND := $(BIN)/uv pip compile pyproject.toml --extra dev --universal \
  --python-version 3.11 --generate-hashes --custom-compile-command "make lock" --quiet

.DEFAULT_GOAL := help
.PHONY: help venv lock check-app demo compare matrix bench bench-timeline faults race scale-out run run-broken run-fixed test examples lint format clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-20s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo '  DB=postgres: fixed_db on PostgreSQL in every target that starts it (make demo DB=postgres).'
	@echo '  Knobs: APP=, INSTANCES=, USERS=, RUN_TIME=, APP_PORT=, ... (make run APP=fixed_db),'
	@echo '  described where the Makefile sets them; environment settings: README.md, Configuration.'

# A new venv each time, so nothing outside the lock stays in it. pip is the one
# the interpreter bundles: --require-hashes refuses any file not in the lock.
$(STAMP): $(LOCK)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "Python 3.11+ is needed; $(PYTHON) is $$($(PYTHON) --version 2>&1). Try: make PYTHON=python3.12"; exit 1; }
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	@touch $@

venv: $(STAMP) ## Build the virtual environment (.venv) from requirements.lock

# `make lock` keeps every pin still in range and adds what pyproject.toml now
# asks for; LOCK_ARGS=--upgrade moves all to the newest in range (or
# LOCK_ARGS="--upgrade-package flask"). The lock is replaced only if it changed,
# so an unchanged lock does not rebuild the venv.
LOCK_ARGS ?=
lock: $(STAMP) ## Re-resolve requirements.lock from pyproject.toml (LOCK_ARGS=--upgrade: newest in range)
	cp $(LOCK) $(LOCK).new
	$(LOCK_COMMAND) $(LOCK_ARGS) -o $(LOCK).new
	@if cmp -s $(LOCK).new $(LOCK); then rm $(LOCK).new; echo "$(LOCK) unchanged"; \
	else mv $(LOCK).new $(LOCK); echo "$(LOCK) changed: the next make rebuilds the venv from it;" \
	  "check the versions README.md names (tests/test_lock.py)"; fi

demo: $(STAMP) ## Hammer every app side by side and print the verdicts
	$(BIN)/python -m loadtests.runs.hammer

compare: $(STAMP) ## The demo, plus each app's /healthz ceiling, CSV and charts in var/results
	$(BIN)/python -m loadtests.runs.hammer --charts

matrix: $(STAMP) ## Every app under seven server shapes (gevent and uWSGI too): CSV and heatmap in var/results
	$(BIN)/python -m loadtests.runs.matrix

bench: $(STAMP) ## Each app's main write vs. /healthz, its store's floor, its best case and a bare Flask app; where the CPU goes
	$(BIN)/python -m loadtests.runs.bench --wrk

bench-timeline: $(STAMP) ## How fast a long timeline opens: a real run cut to its LIMIT of operations, from disk in headless Chromium
	$(BIN)/python -m loadtests.runs.timeline_bench

faults: $(STAMP) ## Kill and pause stores and workers under load, with and without Idempotency-Keys (DB=postgres: PostgreSQL too)
	$(BIN)/python -m loadtests.faults.run

RACE_PORT ?= 8090
race: $(STAMP) ## Race the apps yourself: a page on http://127.0.0.1:8090 (RACE_PORT) sends N requests at once
	$(BIN)/python -m loadtests.runs.race --port $(RACE_PORT)

INSTANCES ?= 3
scale-out: $(STAMP) ## APP on INSTANCES instances sharing one store, hammered across them
	$(BIN)/python -m loadtests.runs.hammer $(APP) --instances $(INSTANCES)

# APP_PORT= serves the one app on another port than its own (make run APP=fixed_db APP_PORT=6002).
run: $(STAMP) ## Serve one app under gunicorn: make run APP=fixed_db [APP_PORT=6002]
	$(BIN)/python -m serve $(APP)$(if $(APP_PORT), --port $(APP_PORT))

run-broken: $(STAMP) ## Serve broken_global on http://127.0.0.1:5000
	$(BIN)/python -m serve broken_global$(if $(APP_PORT), --port $(APP_PORT))

run-fixed: $(STAMP) ## Serve every fixed app on its port (5001-5003)
	$(BIN)/python -m serve --fixed

# The suite in TEST_JOBS processes (pytest-xdist), a test file to each at a
# time so a file's shared servers start once. Three on two cores: a test
# spends most of its time on the CPU, the rest waiting for servers to start
# and stop, and a third process runs in those waits. TEST_JOBS=0: one process.
TEST_JOBS ?= 3
test: $(STAMP) ## Run the test suite in TEST_JOBS=3 processes (PYTEST_ARGS="-k fuzz" to pick; TEST_JOBS=0: one)
	$(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadfile $(PYTEST_ARGS)

examples: $(STAMP) ## Run every proof in examples/, one line each
	$(BIN)/python -m examples

lint: $(STAMP) ## ruff check and ruff format --check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP) ## Apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean: ## Remove the venv and all runtime data under var/
	@# As root, the embedded PostgreSQL's cluster lives outside var/ (serve/postgres.py).
	@# So do the clusters of harness runs that were killed, under var/runs/.
	@for link in var/postgres/data var/runs/*/postgres/data; do \
	  if [ -L "$$link" ]; then rm -rf "$$(dirname "$$(readlink "$$link")")"; fi; \
	done
	rm -rf $(VENV) var .pytest_cache .ruff_cache *.egg-info

# Locust's web UI with a Correctness tab, bound to 127.0.0.1; Ctrl-C stops it all.
# USERS, RUN_TIME (with the web UI: start at once, stop after it), APP_PORT,
# WEB_PORT, and LOCUST_ARGS passed on to Locust, e.g. LOCUST_ARGS="--csv var/results/run".
WORKERS ?= 2
LOCUST_RUN = $(BIN)/python -m loadtests.swarm.locust_run $(APP) --users $(USERS) --web-port $(WEB_PORT) \
  $(if $(RUN_TIME),--run-time $(RUN_TIME)) $(if $(APP_PORT),--app-port $(APP_PORT))
.PHONY: locust locust-headless locust-distributed soak

locust: $(STAMP) ## Start APP and Locust's web UI on http://127.0.0.1:8089: make locust APP=fixed_db
	$(LOCUST_RUN) -- $(LOCUST_ARGS)

locust-headless: $(STAMP) ## The same without the web UI: run RUN_TIME (20s), print the verdict, exit 0/1
	$(LOCUST_RUN) --headless -- $(LOCUST_ARGS)

locust-distributed: $(STAMP) ## The same with a Locust master and WORKERS workers (default 2)
	$(LOCUST_RUN) --workers $(WORKERS) -- $(LOCUST_ARGS)

soak: $(STAMP) ## Headless Locust on SOAK_APPS for SOAK_MINUTES (10), Locust's memory sampled every 10 s
	$(BIN)/python -m loadtests.runs.soak $(SOAK_APPS) --minutes $(SOAK_MINUTES) --users $(USERS) \
	  $(if $(LOCUST_ARGS),--locust-args "$(LOCUST_ARGS)")

# The walkthrough under docs/: a MkDocs site. Code, diffs, results and
# screenshots in its pages are generated (docs/tools/), never pasted.
.PHONY: docs docs-build docs-blocks docs-results docs-screenshots docs-witnesses

docs: $(STAMP) ## Serve the walkthrough on http://127.0.0.1:8000 (MkDocs, live reload; DOCS_PORT)
	@$(BIN)/python -c 'import sys; from serve.pids import port_is_free; \
	  sys.exit(None if port_is_free($(DOCS_PORT)) else \
	  "port $(DOCS_PORT) is in use (another make docs?): stop it, or make docs DOCS_PORT=8001")'
	$(BIN)/python -m docs.tools.blocks
	$(BIN)/python -m mkdocs serve --dev-addr 127.0.0.1:$(DOCS_PORT)

docs-build: $(STAMP) ## Build the site into var/site, failing on any broken link
	$(BIN)/python -m docs.tools.blocks
	$(BIN)/python -m mkdocs build --strict

docs-blocks: $(STAMP) ## Rewrite the docs' generated blocks (code, diffs, results) from their sources
	$(BIN)/python -m docs.tools.blocks

docs-results: $(STAMP) ## Run compare, matrix and bench for real, then regenerate the results pages
	$(BIN)/python -m docs.tools.results run; status=$$?; $(BIN)/python -m docs.tools.blocks && exit $$status

docs-screenshots: $(STAMP) ## Screenshot Locust's web UI during real runs (headless Chromium)
	$(BIN)/python -m docs.tools.screenshots
	$(BIN)/python -m docs.tools.blocks

docs-witnesses: $(STAMP) ## Picture the canonical witnesses: timelines of real runs (headless Chromium)
	$(BIN)/python -m docs.tools.witnesses
	$(BIN)/python -m docs.tools.blocks

# Your own app, checked from a spec (docs/check-your-own-app.md). CHDIR is the
# folder the app is imported from; exit code 0, 1 (an anomaly) or 2 (bad spec).
TARGET ?=
SPEC   ?=
CHDIR  ?= .
check-app: $(STAMP) ## Check your own app from a spec: make check-app TARGET=shop:create_app SPEC=shop.toml [CHDIR=dir]
	$(if $(SPEC),,$(error make check-app needs SPEC=your-spec.toml, and TARGET=module:create_app unless the spec names it, CHDIR=the folder your app is imported from; see docs/check-your-own-app.md))
	$(BIN)/python -m loadtests.check $(TARGET) --spec $(SPEC) --chdir $(CHDIR)

# Exercises (exercises/): fix a small broken app yourself, graded by the
# own-app check under the shapes its spec names. EX= a number or a name
# (default: the next not solved); RESET=1 clears the progress in var/practice.json.
EX    ?=
RESET ?=
.PHONY: practice grade watch hint solution

practice: $(STAMP) ## The exercises, solved or not, and the next to try (RESET=1 clears progress)
	@$(BIN)/python -m exercises practice $(if $(RESET),--reset)

grade: $(STAMP) ## Grade an exercise under its server shapes: make grade EX=3
	@$(BIN)/python -m exercises grade $(EX)

watch: $(STAMP) ## Grade an exercise again on every save: make watch EX=3
	@$(BIN)/python -m exercises watch $(EX)

hint: $(STAMP) ## The next hint for what the last grade found: make hint EX=3
	@$(BIN)/python -m exercises hint $(EX)

solution: $(STAMP) ## The reference fix as a diff (make -s solution EX=3 | git apply)
	@$(BIN)/python -m exercises solution $(EX)
