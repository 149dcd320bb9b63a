# airflow-provider-mlops — developer entry points. `make help` lists them.
SHELL := /bin/bash
PY_VERSION ?= 3.11
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION ?= 0.13.9
# uv from PATH, else the one `make setup` installs into the base interpreter (python3 -m uv)
UV = $$(command -v uv || echo python3 -m uv)
STAMP := $(VENV)/.setup-stamp
PYTEST_ARGS ?=
export UV_PYTHON := $(PY_VERSION)

.PHONY: help setup demo demo-stop test test-fast lint bench build airflow-ui airflow-ui-stop clean reproduce \
	land audit browser-deps test-browser

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

# Opt-in only: a local torch wheel (e.g. a CPU build on a machine without fast access to PyPI) installed
# over the locked torch: make setup TORCH_WHEEL=/path/to/torch-*.whl. The lock itself names PyPI only.
TORCH_WHEEL ?=

$(STAMP): pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 \
	  || python3 -m pip install --quiet "uv==$(UV_VERSION)"
	$(UV) sync --frozen --all-extras --python $(PY_VERSION)
	@if [ -n "$(TORCH_WHEEL)" ]; then \
	  echo "TORCH_WHEEL: installing $(TORCH_WHEEL) over the locked torch (this environment now differs from uv.lock)"; \
	  $(UV) pip install --python $(BIN)/python --no-deps --reinstall "$(TORCH_WHEEL)"; fi
	$(BIN)/python -W ignore -c "import mlops_provider, torch, feast, mlflow, bentoml, evidently; print('environment ok: torch', torch.__version__)"
	@touch $(STAMP)

setup: $(STAMP) ## create .venv from uv.lock (idempotent): provider (editable), all extras, dev tools

KEEP ?=
demo: setup ## the whole loop on real data with the embedded Airflow (8-14 minutes); KEEP=1 leaves it running
	$(BIN)/python -m mlops_provider.examples.flights.demo $(if $(KEEP),--keep)

demo-stop: ## stop exactly what `make demo KEEP=1` left running (from its PID file)
	$(BIN)/python -m mlops_provider.examples.flights.demo --stop

test: setup browser-deps ## unit + integration + system + browser tests (installs chromium when missing)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: setup ## unit tests only
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

lint: setup ## ruff + mypy on provider/, hadolint on every Dockerfile in docker/
	$(BIN)/ruff check provider dags plugins tests benchmarks feature_repo
	$(BIN)/mypy provider/mlops_provider
	$(BIN)/hadolint docker/Dockerfile*

build: setup ## sdist + wheel into dist/ (uv build), checked with twine
	rm -rf dist
	$(UV) build --out-dir dist
	$(BIN)/twine check --strict dist/*

bench: setup ## run every benchmark script (prints ratios against a baseline measured in the same run)
	@for b in benchmarks/[!_]*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

AIRFLOW_UI_HOME ?= $(CURDIR)/.airflow
AIRFLOW_UI_PORT ?= 8080
airflow-ui: setup ## the embedded Airflow with dags/ and plugins/ on http://127.0.0.1:8080 (Ctrl-C stops it)
	MLOPS_HOME=$${MLOPS_HOME:-$(CURDIR)/.mlops} MLOPS_TRAINING_QUEUE=default \
	  $(BIN)/python -m mlops_provider.embedded start --home $(AIRFLOW_UI_HOME) --dags dags --plugins plugins \
	  --port $(AIRFLOW_UI_PORT) --unpause --foreground

airflow-ui-stop: ## stop an embedded Airflow left running by airflow-ui (from its PID file)
	$(BIN)/python -m mlops_provider.embedded stop --home $(AIRFLOW_UI_HOME)

clean: ## remove the venv and every local state directory
	rm -rf $(VENV) .demo .mlops .airflow dist .pytest_cache .mypy_cache .ruff_cache

reproduce: setup ## retrain an MLflow run from its recorded snapshot, config and seed: make reproduce RUN=<run id>
	@test -n "$(RUN)" || { echo "usage: make reproduce RUN=<mlflow run id>"; exit 2; }
	$(BIN)/python -m mlops_provider.cli reproduce $(RUN)

MODEL ?= flights_delay
MONTHS ?= 1-6
land: setup ## land example data for the running Airflow: make land MODEL=flights_delay MONTHS=1-6
	MLOPS_HOME=$${MLOPS_HOME:-$(CURDIR)/.mlops} \
	  $(BIN)/python -m mlops_provider.examples.land --model $(MODEL) --months $(MONTHS) --dags dags

audit: ## pip-audit of every package in uv.lock (prints NOT CHECKED when no advisory source answers; AUDIT_STRICT=1 fails then)
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 \
	  || python3 -m pip install --quiet "uv==$(UV_VERSION)"
	python3 .ci/audit.py

# The browser tests drive Debian's chromium over the DevTools protocol (no browser download from the web).
browser-deps: ## install the headless browser of the browser tests (Debian package chromium) when missing
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  echo "installing chromium (apt-get)"; \
	  $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y -qq chromium >/dev/null; }
	@chromium --version 2>/dev/null || chromium-browser --version

test-browser: setup browser-deps ## headless Chromium against the embedded Airflow (login, extra links, MLOps page; ~5 min)
	$(BIN)/python -m pytest tests/browser -p no:cacheprovider $(PYTEST_ARGS)
