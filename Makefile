# Quick start: `make demo` then `make test`. Needs only python3.11 and access to PyPI.
SHELL := /bin/bash
PYTHON ?= python3.11
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
UV_VERSION := 0.13.9
export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
DEMO_DIR := $(CURDIR)/demo
# How the *-deps targets install a Debian package they find missing.
APT_INSTALL := apt-get update -qq && apt-get install -y -qq
RELEASE ?= demo-$(shell date +%Y)  # the second year; the first is the year before

.PHONY: install demo test test-e2e lint format bench clean airflow-ui browser-deps sftp-deps test-deps

$(UV):
	@command -v $(PYTHON) >/dev/null || { echo "python3.11 not found (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet "uv==$(UV_VERSION)"

$(VENV)/.installed: $(UV) pyproject.toml uv.lock
	UV_PYTHON=$(PYTHON) $(UV) sync --frozen --extra dev --extra airflow --compile-bytecode --quiet
	@# The project is installed editable (uv compiles site-packages only): every process would
	@# otherwise recompile it (PYTHONDONTWRITEBYTECODE may forbid writing it at import).
	$(PY) -m compileall -q plugins
	@touch $@

install: $(VENV)/.installed

## From a clean demo folder: sample extracts, two years of the annual update DAG (the second
## with a partner carried forward and a corrected mapping), then the synthesis DAG.
## The demo's Airflow state (metadata database, logs) is its own, in demo/airflow/: removed with
## the folder, never an AIRFLOW_HOME or metadata database of the caller's, and apart from
## `make airflow-ui`'s .airflow/, which therefore starts empty with both DAGs active.
DEMO_AIRFLOW := $(DEMO_DIR)/airflow
demo: export AIRFLOW_HOME := $(DEMO_AIRFLOW)
demo: export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN := sqlite:///$(DEMO_AIRFLOW)/airflow.db
demo: install
	rm -rf $(DEMO_DIR)
	$(PY) -m ctdc_harmonizer.cli generate --out $(DEMO_DIR)/landing --seed 2025
	$(PY) scripts/run_demo.py --landing $(DEMO_DIR)/landing --out $(DEMO_DIR)/releases --release $(RELEASE)
	$(PY) scripts/run_synthesis_demo.py --out $(DEMO_DIR)/releases --release $(RELEASE)

test: install test-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q -m "not processes and not long and not benchmarks"

## Real Airflow processes against throw-away PostgreSQL databases (127.0.0.1:5432): the local
## deployment (~3-5 min), the CeleryExecutor path with two workers (Redis 127.0.0.1:6379),
## deliveries pulled over SFTP (OpenSSH, make sftp-deps) and S3 (moto) with a deferred wait,
## `make airflow-ui` stopped by signals, the data team's first hour and the public explorer in
## Chromium; twenty releases into one store, on SQLite and on PostgreSQL (~2 min); and the
## benchmark scripts run to their end at a tiny size (~1 min; timing nothing)
test-e2e: install sftp-deps browser-deps
	$(PY) -m pytest -q -m processes tests/dags/test_airflow_processes.py tests/dags/test_celery_workers.py \
		tests/dags/test_airflow_deliveries.py tests/dags/test_airflow_ui_stop.py tests/dags/test_browser.py \
		tests/synthesis/test_explorer_browser.py
	$(PY) -m pytest -q -m long tests/store/test_twenty_releases.py
	$(PY) -m pytest -q -m benchmarks tests/benchmarks

lint: install
	$(VENV)/bin/ruff check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

## Benchmark the CLI against its floor: make bench N=250000 (records per partner) [REPEAT=3]
N ?= 33334
REPEAT ?= 1
bench: install
	$(PY) benchmarks/bench_cli.py --records-per-partner $(N) --repeat $(REPEAT)

## Local Airflow on http://127.0.0.1:8080 (AIRFLOW_PORT=...): api-server, scheduler,
## dag-processor, triggerer; state in .airflow/; prints URL and login; Ctrl-C stops it all.
## PostgreSQL metadata DB: AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=postgresql+psycopg://... make airflow-ui
airflow-ui: install
	$(PY) scripts/airflow_local.py

## Debian's OpenSSH server: the delivery tests start its sftp-server on a loopback port
sftp-deps:
	test -x /usr/sbin/sshd || { $(APT_INSTALL) openssh-server; }

## Debian packages that tests of `make test` use: a Compose CLI to check docker-compose.yml
## (`config -q` needs no Docker engine; Debian's docker-compose where neither `docker compose`
## nor `docker-compose` is there) and OpenSSH's sftp-server (the pull test). Without root or a
## package mirror it says so and goes on: those tests then skip with their reason.
test-deps:
	@docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null || \
		{ $(APT_INSTALL) docker-compose; } || \
		echo "test-deps: no Compose CLI could be installed; docker-compose.yml's check will skip"
	@$(MAKE) -s --no-print-directory sftp-deps || \
		echo "test-deps: OpenSSH could not be installed; the SFTP pull test will skip"

## Debian's Chromium for the browser test (Playwright cannot download its own browsers here)
browser-deps:
	command -v chromium >/dev/null || { $(APT_INSTALL) chromium; }

clean:
	rm -rf $(VENV) $(TOOLS) .airflow demo .pytest_cache .ruff_cache
