"""Extra link to the MLflow run of a training task (light module)."""

from __future__ import annotations

from mlops_provider.links.base import XComUrlLink

MLFLOW_RUN_URL_XCOM_KEY = "mlflow_run_url"


class MLflowRunLink(XComUrlLink):
    """"MLflow run" button: the URL the training task pushed to XCom before training started (empty for a
    store without a web UI, e.g. the embedded sqlite one)."""

    name = "MLflow run"
    key = MLFLOW_RUN_URL_XCOM_KEY
