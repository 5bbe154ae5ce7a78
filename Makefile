# `make run` and `make test` create or reuse .venv at the repo root and install into it.
# Python 3.11, 3.12 or 3.13: PYTHON=python3.13 make run. A .venv made by another Python is made anew;
# keep one per version with VENV=.venv-3.13.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
PY_VERSION := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
STAMP := $(VENV)/.installed-$(PY_VERSION)
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
export DROUGHTWATCH_DATA_DIR ?= $(CURDIR)/.droughtwatch
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install browser postgres instance run lint format test test-fast chaos dev materialize bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@if [ -x $(BIN)/python ] && [ "$$($(BIN)/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')" != "$(PY_VERSION)" ]; then \
	  echo "$(VENV) holds another Python than $(PYTHON) ($(PY_VERSION)): making it anew"; rm -rf $(VENV); fi
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[test]'
	touch $(STAMP)

# The instance file: runs, event logs and schedules in Postgres when its settings are given (DAGSTER_PG_URL, or
# DAGSTER_PG_HOST and the rest), else SQLite under DAGSTER_HOME. Copied whenever it differs, so a change of
# settings takes effect at the next make run or make dev.
INSTANCE_YAML := $(if $(DAGSTER_PG_URL),deploy/dagster-postgres-url.yaml,$(if $(DAGSTER_PG_HOST),deploy/dagster-postgres.yaml,dagster.yaml))

instance:
	@mkdir -p $(DAGSTER_HOME)
	@cmp -s $(INSTANCE_YAML) $(DAGSTER_HOME)/dagster.yaml || { echo "$(DAGSTER_HOME)/dagster.yaml: $(INSTANCE_YAML)"; \
	  cp $(INSTANCE_YAML) $(DAGSTER_HOME)/dagster.yaml; }

run: install instance
	$(BIN)/droughtwatch run --configuration baseline

# Debian's Chromium for the browser tests (Playwright drives it; it never downloads a browser).
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; fi; }

# Debian's PostgreSQL server for the tests that start one (the postgres_server fixture); as root they run it as
# the package's `postgres` user, since the server refuses to run as root.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; fi; }

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Everything, Chromium, Postgres and servers included: what CI runs. The 25 slowest tests are listed at the end.
# Two processes, each taking whole files (module fixtures such as the browser tests' dagster dev start once): most
# integration tests wait on servers and daemons, so a second process uses the time a first one leaves idle.
test: install browser postgres lint
	$(BIN)/python -m pytest -n 2 --dist loadfile --durations=25

# The fast lane: every test not marked integration (no server, subprocess, daemon or browser; no real training).
# Needs no root and no Chromium. One file: $(BIN)/python -m pytest droughtwatch_assets_tests/test_records.py
test-fast: install
	$(BIN)/python -m pytest -m "not integration" -n 2 --durations=10

# The full chaos campaign (droughtwatch_assets_tests/test_chaos.py): 50 SIGKILLs of `droughtwatch run` and
# `droughtwatch experiments` over local storage and 20 over S3 (moto), the stores checked after each, gc at the end.
# make test runs a short one (8 and 4). The seed is printed; DROUGHTWATCH_CHAOS_SEED=<seed> make chaos repeats it.
chaos: install
	DROUGHTWATCH_CHAOS_LOCAL_KILLS=$${DROUGHTWATCH_CHAOS_LOCAL_KILLS:-50} DROUGHTWATCH_CHAOS_S3_KILLS=$${DROUGHTWATCH_CHAOS_S3_KILLS:-20} \
	  $(BIN)/python -m pytest -m chaos -s droughtwatch_assets_tests/test_chaos.py

dev: install instance
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

bench: install
	$(BIN)/python benchmarks/bench_processing.py
	$(BIN)/python benchmarks/bench_parallel.py
	$(BIN)/python benchmarks/bench_training.py
	$(BIN)/python benchmarks/bench_onnx.py
	$(BIN)/python benchmarks/bench_end_to_end.py
	$(BIN)/python benchmarks/bench_sensor.py
	$(BIN)/python benchmarks/bench_experiments.py
	$(BIN)/python benchmarks/bench_backfill.py
	$(BIN)/python benchmarks/bench_durable_commits.py

materialize: install instance
	$(BIN)/dagster asset materialize -m droughtwatch_assets.definitions --select '*' --partition baseline

clean:
	rm -rf $(DROUGHTWATCH_DATA_DIR) $(DAGSTER_HOME)
