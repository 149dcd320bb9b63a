"""Unit tests of MLflowHook URI / credential resolution (no MLflow server, no Airflow DB)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlops_provider.hooks.mlflow import MLflowHook

ENV_VARS = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "AIRFLOW_CONN_MLFLOW_DEFAULT",
            "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    for var in ENV_VARS:
        monkeypatch.setenv(var, "x")  # recorded, so the original state is restored afterwards
        monkeypatch.delenv(var)
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    yield
    import mlflow

    # configure() sets process-global MLflow state; leave none behind for other tests
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
    for var in ENV_VARS:
        os.environ.pop(var, None)


def test_without_connection_or_env_uses_the_embedded_sqlite_store(tmp_path):
    cfg = MLflowHook().tracking_config()
    home = (tmp_path / "home").resolve()
    assert cfg.tracking_uri == f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    assert cfg.artifact_location == (home / "mlflow" / "artifacts").as_uri()
    assert cfg.source == "embedded" and cfg.ui_url is None
    assert MLflowHook().run_url("abc").endswith("/mlops/runs/abc")  # no MLflow web UI: the plugin's run page


def test_env_tracking_uri_wins_over_the_embedded_store(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/other/mlflow.db")
    cfg = MLflowHook().tracking_config()
    assert cfg.tracking_uri == f"sqlite:///{tmp_path}/other/mlflow.db"
    assert cfg.artifact_location == (tmp_path / "other" / "artifacts").resolve().as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert MLflowHook().tracking_config().ui_url == "http://mlflow.internal:5000"


def test_connection_supplies_uri_extras_and_credentials_without_leaking_them(monkeypatch):
    conn = {
        "conn_type": "mlflow", "host": "mlflow.internal", "port": 5000, "login": "alice",
        "password": "s3cret-pass", "extra": {"registry_uri": "http://registry:5001", "token": "tok-123456",
                                             "artifact_location": "s3://bucket/mlflow"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps(conn))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://ignored:1")
    hook = MLflowHook()
    cfg = hook.tracking_config()
    assert cfg.tracking_uri == "http://mlflow.internal:5000"
    assert cfg.registry_uri == "http://registry:5001"
    assert cfg.artifact_location == "s3://bucket/mlflow"
    public = json.dumps(cfg.public())
    assert "s3cret-pass" not in public and "tok-123456" not in public and "s3cret-pass" not in repr(cfg)
    assert hook.run_url("r1", experiment_id="7") == "http://mlflow.internal:5000/#/experiments/7/runs/r1"
    hook.configure()
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "alice"
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "s3cret-pass"
    assert os.environ["MLFLOW_TRACKING_TOKEN"] == "tok-123456"
    import mlflow

    assert mlflow.get_tracking_uri() == "http://mlflow.internal:5000"
    assert mlflow.get_registry_uri() == "http://registry:5001"


def test_connection_host_may_be_a_full_uri(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow",
                                                                  "host": "https://mlflow.example.com"}))
    assert MLflowHook().tracking_config().tracking_uri == "https://mlflow.example.com"


def test_connection_type_info_declares_the_form():
    info = MLflowHook.connection_type_info()
    assert info["connection-type"] == "mlflow" and info["hook-name"] == "MLflow"
    assert info["hook-class-name"] == "mlops_provider.hooks.mlflow.MLflowHook"
    assert info["conn-fields"]["token"]["schema"]["format"] == "password"
    assert "extra" in info["ui-field-behaviour"]["hidden-fields"]
    assert MLflowHook.get_ui_field_behaviour()["relabeling"]["host"] == "Tracking URI"


def test_training_and_gate_modules_are_parse_safe():
    code = (
        "import sys\n"
        "import mlops_provider.hooks.mlflow, mlops_provider.operators.training, mlops_provider.operators.gate\n"
        "import mlops_provider.links.mlflow\n"
        "heavy = [m for m in ('torch', 'mlflow', 'pandas', 'numpy', 'sklearn') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
