"""The UI plugin's routes: Airflow's authentication on every one, and what each shows (crafted state).

Every route answers 200 with a valid token (bearer or the UI's ``_token`` cookie) and 401 without one or
with a bad one; the MLOps page tells a promotion, a gate rejection, a human rejection and a force-promote
apart, charts render as inline SVG, and every link the operators push opens (model card, gate verdict,
drift and validation reports, endpoint, MLflow run).
"""

from __future__ import annotations

import re

import pytest
from conftest_ui import MODEL, airflow_auth, ui_client, ui_state  # noqa: F401 - fixtures

pytestmark = pytest.mark.integration


def _routes(state: dict) -> list[str]:
    run = state["runs"]["4"]
    drift = sorted(p.name for p in (state["reports"] / "drift").glob("*.html"))[-1]
    return [
        "/", "/api/models", "/docs", "/openapi.json", f"/models/{MODEL}",
        f"/models/{MODEL}/versions/4/verdict", f"/models/{MODEL}/versions/4/verdict?format=json",
        f"/models/{MODEL}/versions/4/card", f"/models/{MODEL}/reports/drift/{drift}",
        f"/models/{MODEL}/reports/validation/landing__manual__1.html", f"/models/{MODEL}/endpoint", f"/runs/{run}",
    ]


def test_every_route_requires_airflow_auth(airflow_auth, ui_state) -> None:  # noqa: F811
    client = ui_client()
    for route in _routes(ui_state):
        assert client.get(route).status_code == 401, route
        assert client.get(route, headers={"Authorization": "Bearer not-a-token"}).status_code == 401, route
        ok = client.get(route, headers=airflow_auth.headers())
        assert ok.status_code == 200, (route, ok.text[:300])
    # the UI's session cookie works like the bearer token
    assert client.get("/", cookies={"_token": airflow_auth.admin}).status_code == 200


def test_anonymous_requests_read_nothing(monkeypatch, ui_state) -> None:  # noqa: F811
    from mlops_provider.ui import data

    def boom(*_a, **_k):
        raise AssertionError("read before authentication")

    monkeypatch.setattr(data.RequestData, "configs", boom)
    monkeypatch.setattr(data.RequestData, "registry", boom)
    assert ui_client().get(f"/models/{MODEL}/versions/1/card").status_code == 401


def test_page_tells_every_decision_apart(airflow_auth, ui_state) -> None:  # noqa: F811
    page = ui_client().get("/", headers=airflow_auth.headers()).text
    rows = dict(re.findall(r"<tr class='version' data-state='([a-z_]+)'><td>v(\d+)</td>", page))
    states = {v: s for s, v in rows.items()}
    assert states == {"1": "promotable", "2": "gate_rejected", "3": "rejected", "4": "forced"}, states
    assert "rejected by alice" in page and "too risky on JFK" in page      # a human rejection wins ...
    assert "force-promoted by bob" in page and "signature change" in page  # ... who moved an alias and why
    assert page.count("<svg class=\"chart\"") >= 4                           # metric, drift, feature, perf charts
    assert "@champion" in page and "@previous" in page
    assert "target='_top'" in page                                          # DAG links leave the iframe
    assert "cdn" not in page.lower() and "<script" not in page


def test_rejected_version_never_looks_promotable(airflow_auth, ui_state) -> None:  # noqa: F811
    models = {m["model"]: m for m in ui_client().get("/api/models", headers=airflow_auth.headers()).json()}
    versions = models[MODEL]["versions"]
    v3 = next(v for v in versions if v["version"] == "3")
    assert v3["decision"]["state"] == "rejected"  # gate.decision is still "promote" on the version


def test_verdict_page_labels_advisory_failures(airflow_auth, ui_state) -> None:  # noqa: F811
    page = ui_client().get(f"/models/{MODEL}/versions/2/verdict", headers=airflow_auth.headers()).text
    assert "ADVISORY FAIL" in page and ">FAIL<" in page


def test_missing_artifacts_are_404_pages_not_errors(airflow_auth, ui_state) -> None:  # noqa: F811
    client = ui_client()
    h = airflow_auth.headers()
    assert client.get(f"/models/{MODEL}/versions/99/card", headers=h).status_code == 404
    assert client.get(f"/models/{MODEL}/reports/drift/nope.html", headers=h).status_code == 404
    assert client.get(f"/models/{MODEL}/reports/secrets/x", headers=h).status_code == 404
    assert client.get(f"/models/{MODEL}/reports/drift/..%2F..%2Fetc", headers=h).status_code == 404
    assert client.get("/models/unknown_model", headers=h).status_code == 404


def test_a_user_without_dag_access_sees_no_model(monkeypatch, airflow_auth, ui_state) -> None:  # noqa: F811
    from mlops_provider.ui import app as ui_app

    monkeypatch.setattr(ui_app, "can_read_dag", lambda user, dag_id, **_: False)
    client = ui_client()
    assert client.get(f"/models/{MODEL}", headers=airflow_auth.headers()).status_code == 403
    assert client.get("/api/models", headers=airflow_auth.headers()).json() == []


def test_model_card_from_s3_artifacts(monkeypatch, airflow_auth, ui_state, moto_s3, bucket) -> None:  # noqa: F811
    """An MLflow artifact root on s3:// is read through the ObjectStore with the aws connection."""
    client = ui_state["client"]
    exp = client.create_experiment(f"{MODEL}_s3", artifact_location=f"s3://{bucket}/mlflow")
    run = client.create_run(exp)
    key = run.info.artifact_uri[len(f"s3://{bucket}/"):] + "/gate/model_card.html"
    moto_s3.put(bucket, key, b"<html><body>card from s3</body></html>")
    mv = client.create_model_version(MODEL, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    r = ui_client().get(f"/models/{MODEL}/versions/{mv.version}/card", headers=airflow_auth.headers())
    assert r.status_code == 200 and "card from s3" in r.text


from conftest_features_s3 import bucket, moto_s3  # noqa: E402,F401 - fixtures


def test_the_ui_lists_both_examples(airflow_auth, tmp_path, monkeypatch) -> None:  # noqa: F811
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(repo / "dags"))
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    resp = ui_client().get("/api/models", headers=airflow_auth.headers())
    assert resp.status_code == 200, resp.text[:300]
    models = {m["model"]: m for m in resp.json()}
    assert set(models) == {"bike_demand", "flights_delay"}
    assert models["bike_demand"]["feature_service"] == "bike_demand_v1"
    assert models["bike_demand"]["endpoint"].endswith(":3100")
