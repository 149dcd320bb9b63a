"""The UI plugin's FastAPI app lists every pipeline from the YAML configs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi.testclient import TestClient

REPO = Path(__file__).resolve().parents[2]


def _plugin():
    spec = importlib.util.spec_from_file_location("mlops_plugin", REPO / "plugins" / "mlops_plugin.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_plugin_registers_app_and_nav_link() -> None:
    mod = _plugin()
    (app,) = mod.MlopsPlugin.fastapi_apps
    assert app["url_prefix"] == "/mlops"
    assert mod.MlopsPlugin.external_views[0]["href"] == "/mlops/"


def _flights_only_dags(tmp_path: Path) -> Path:
    """A DAGs folder holding the flights example alone (the other examples have their own tests)."""
    import yaml

    data = yaml.safe_load((REPO / "dags" / "flights_delay.yaml").read_text())
    data["features"]["repo"] = str(REPO / "feature_repo")
    data["features"]["transform"] = f"{REPO / 'feature_repo' / 'transforms.py'}:build_partitions"
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "flights_delay.yaml").write_text(yaml.safe_dump(data))
    return dags


def test_models_page_lists_the_example_without_a_champion(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(_flights_only_dags(tmp_path)))
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    client = TestClient(_plugin().app)
    models = client.get("/api/models").json()
    assert [m["model"] for m in models] == ["flights_delay"]
    assert models[0]["dags"][0] == "flights_delay__features"
    assert models[0]["champion"]["version"] is None
    page = client.get("/")
    assert page.status_code == 200 and "flights_delay" in page.text and "none yet" in page.text
