"""Test-session environment: an isolated AIRFLOW_HOME and MLOPS_HOME, set before Airflow is imported."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_SESSION_DIR = Path(tempfile.mkdtemp(prefix="mlops-tests-"))

os.environ.setdefault("AIRFLOW_HOME", str(_SESSION_DIR / "airflow"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
os.environ.setdefault("MLOPS_HOME", str(_SESSION_DIR / "mlops"))
os.environ.setdefault("MLOPS_TRAINING_QUEUE", "default")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
os.environ.setdefault("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


_MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "MLFLOW_TRACKING_TOKEN",
               "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def _reset_mlflow_uris() -> None:
    for module, attr in (("mlflow.tracking._tracking_service.utils", "_tracking_uri"),
                         ("mlflow.tracking._model_registry.utils", "_registry_uri")):
        if module in sys.modules:
            setattr(sys.modules[module], attr, None)


@pytest.fixture(scope="module", autouse=True)
def _isolate_module_globals():
    """Module-scoped fixtures (set up before the per-test isolation) may point MLflow at their own
    store (``mlflow.set_registry_uri`` writes ``os.environ``); nothing of it may reach the next module."""
    before = {var: os.environ.get(var) for var in _MLFLOW_ENV}
    yield
    for var, value in before.items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value
    _reset_mlflow_uris()


@pytest.fixture(autouse=True)
def _isolate_process_globals(monkeypatch: pytest.MonkeyPatch):
    """MLflow writes its tracking/registry URIs into os.environ; give every test a clean slate."""
    absent = [var for var in _MLFLOW_ENV if var not in os.environ]
    for var in _MLFLOW_ENV:
        if var in os.environ:
            monkeypatch.setenv(var, os.environ[var])
    yield
    # monkeypatch restores only what it touched: drop what the test (mlflow.set_*_uri) added
    for var in absent:
        os.environ.pop(var, None)
    # ... and forget the URIs a test set through mlflow.set_tracking_uri / set_registry_uri.
    _reset_mlflow_uris()
