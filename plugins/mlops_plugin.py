"""Airflow UI plugin: an "MLOps" page listing every model pipeline with its champion and reports.

Served by the Airflow API server under ``/mlops`` (FastAPI app) and linked from the
navigation bar. Module level stays light (FastAPI ships with Airflow); MLflow is imported
per request, only when the page is opened.
"""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

from airflow.plugins_manager import AirflowPlugin
from fastapi import FastAPI
from fastapi.responses import HTMLResponse

app = FastAPI(title="airflow-provider-mlops", description="Model pipelines built from YAML configs")


def _dags_folder() -> Path:
    return Path(os.environ.get("AIRFLOW__CORE__DAGS_FOLDER", Path(__file__).resolve().parents[1] / "dags"))


def _champion(model: str, tracking_uri: str) -> dict[str, Any]:
    try:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        mv = client.get_model_version_by_alias(model, "champion")
        return {"version": mv.version, "run_id": mv.run_id, "gate": mv.tags.get("gate.decision")}
    except Exception as exc:  # noqa: BLE001 - a page must render even without a champion yet
        return {"version": None, "error": type(exc).__name__}


@app.get("/api/models")
def models() -> list[dict[str, Any]]:
    from mlops_provider.config import load_configs

    out = []
    for cfg in load_configs(_dags_folder()):
        reports = sorted((cfg.paths.reports / "drift").glob("*.html"))
        out.append({
            "model": cfg.model,
            "dags": [cfg.dag_id(k) for k in ("features", "training", "deploy", "monitor")],
            "feature_service": cfg.features.feature_service,
            "champion": _champion(cfg.model, os.environ.get("MLFLOW_TRACKING_URI") or cfg.paths.mlflow_tracking_uri),
            "endpoint": f"http://{cfg.serving.host}:{cfg.serving.port}",
            "latest_drift_report": str(reports[-1]) if reports else None,
        })
    return out


@app.get("/", response_class=HTMLResponse)
def index() -> str:
    rows = []
    for m in models():
        champ = m["champion"].get("version")
        dags = " ".join(f'<a href="/dags/{d}">{html.escape(d.split("__")[1])}</a>' for d in m["dags"])
        rows.append(
            f"<tr><td>{html.escape(m['model'])}</td><td>{dags}</td><td>{html.escape(m['feature_service'])}</td>"
            f"<td>{'v' + str(champ) if champ else 'none yet'}</td><td>{html.escape(m['endpoint'])}</td>"
            f"<td>{html.escape(m['latest_drift_report'] or '-')}</td></tr>"
        )
    return (
        "<html><head><title>MLOps pipelines</title><style>body{font-family:sans-serif;margin:2em}"
        "td,th{padding:4px 12px;border-bottom:1px solid #ddd;text-align:left}</style></head><body>"
        "<h2>MLOps pipelines</h2><table><tr><th>model</th><th>DAGs</th><th>feature service</th>"
        "<th>champion</th><th>endpoint</th><th>latest drift report</th></tr>"
        + "".join(rows) + "</table></body></html>"
    )


class MlopsPlugin(AirflowPlugin):
    name = "mlops"
    fastapi_apps = [{"app": app, "url_prefix": "/mlops", "name": "MLOps pipelines"}]
    external_views = [{"name": "MLOps pipelines", "href": "/mlops/", "destination": "nav", "url_route": "mlops"}]
