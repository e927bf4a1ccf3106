# Broken vs. fixed Flask state, side by side. `make` lists the targets.
# Every recipe calls .venv/bin/... directly; the venv is rebuilt only when
# pyproject.toml changes.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-from-pyproject
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

# The code runs from this folder and is not installed: only its dependencies,
# read from pyproject.toml, go into the venv.
export REQUIREMENTS := import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
  print(*p["dependencies"], *p["optional-dependencies"]["dev"], sep="\n")

.DEFAULT_GOAL := help
.PHONY: help venv check-app demo compare matrix bench faults scale-out run run-broken run-fixed test examples lint format clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  make %-20s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo '  DB=postgres: fixed_db on PostgreSQL in every target that starts it (make demo DB=postgres).'
	@echo '  Knobs: APP=, INSTANCES=, USERS=, RUN_TIME=, APP_PORT=, ... (make run APP=fixed_db),'
	@echo '  described where the Makefile sets them; environment settings: README.md, Configuration.'

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "Python 3.11+ is needed; $(PYTHON) is $$($(PYTHON) --version 2>&1). Try: make PYTHON=python3.12"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "$$REQUIREMENTS" | $(BIN)/python -m pip install --quiet -r /dev/stdin
	@touch $@

venv: $(STAMP) ## Build the virtual environment (.venv)

demo: $(STAMP) ## Hammer every app side by side and print the verdicts
	$(BIN)/python -m loadtests.hammer

compare: $(STAMP) ## The demo, plus each app's /healthz ceiling, CSV and charts in var/results
	$(BIN)/python -m loadtests.hammer --charts

matrix: $(STAMP) ## Every app under seven server shapes (gevent and uWSGI too): CSV and heatmap in var/results
	$(BIN)/python -m loadtests.matrix

bench: $(STAMP) ## Each app's main write vs. its own /healthz ceiling (req/s, p50, p99)
	$(BIN)/python -m loadtests.bench --wrk

faults: $(STAMP) ## Kill and pause stores and workers under load, with and without Idempotency-Keys (DB=postgres: PostgreSQL too)
	$(BIN)/python -m loadtests.faults

INSTANCES ?= 3
scale-out: $(STAMP) ## APP on INSTANCES instances sharing one store, hammered across them
	$(BIN)/python -m loadtests.hammer $(APP) --instances $(INSTANCES)

run: $(STAMP) ## Serve one app under gunicorn: make run APP=fixed_db
	$(BIN)/python -m serve $(APP)

run-broken: $(STAMP) ## Serve broken_global on http://127.0.0.1:5000
	$(BIN)/python -m serve broken_global

run-fixed: $(STAMP) ## Serve every fixed app on its port (5001-5003)
	$(BIN)/python -m serve --fixed

test: $(STAMP) ## Run the test suite (PYTEST_ARGS="-k fuzz" to pick)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

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
LOCUST_RUN = $(BIN)/python -m loadtests.locust_run $(APP) --users $(USERS) --web-port $(WEB_PORT) \
  $(if $(RUN_TIME),--run-time $(RUN_TIME)) $(if $(APP_PORT),--app-port $(APP_PORT))
.PHONY: locust locust-headless locust-distributed soak

locust: $(STAMP) ## Start APP and Locust's web UI on http://127.0.0.1:8089: make locust APP=fixed_db
	$(LOCUST_RUN) -- $(LOCUST_ARGS)

locust-headless: $(STAMP) ## The same without the web UI: run RUN_TIME (20s), print the verdict, exit 0/1
	$(LOCUST_RUN) --headless -- $(LOCUST_ARGS)

locust-distributed: $(STAMP) ## The same with a Locust master and WORKERS workers (default 2)
	$(LOCUST_RUN) --workers $(WORKERS) -- $(LOCUST_ARGS)

soak: $(STAMP) ## Headless Locust on SOAK_APPS for SOAK_MINUTES (10), Locust's memory sampled every 10 s
	$(BIN)/python -m loadtests.soak $(SOAK_APPS) --minutes $(SOAK_MINUTES) --users $(USERS) \
	  $(if $(LOCUST_ARGS),--locust-args "$(LOCUST_ARGS)")

# The walkthrough under docs/: a MkDocs site. Code, diffs, results and
# screenshots in its pages are generated (docs/tools/), never pasted.
.PHONY: docs docs-build docs-blocks docs-results docs-screenshots

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
	$(BIN)/python -m docs.tools.results run

docs-screenshots: $(STAMP) ## Screenshot Locust's web UI during real runs (headless Chromium)
	$(BIN)/python -m docs.tools.screenshots

TARGET ?=
SPEC   ?=
CHDIR  ?= .
check-app: $(STAMP) ## Check your own app from a spec: make check-app TARGET=shop:create_app SPEC=shop.toml [CHDIR=dir]
	$(BIN)/python -m loadtests.check $(TARGET) --spec $(SPEC) --chdir $(CHDIR)
