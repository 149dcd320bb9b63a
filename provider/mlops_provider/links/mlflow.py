"""Extra link to the MLflow run of a training task (light module)."""

from __future__ import annotations

from urllib.parse import quote

from mlops_provider.links.base import XComUrlLink, plugin_url

MLFLOW_RUN_URL_XCOM_KEY = "mlflow_run_url"


def mlflow_ui_run(ui_url: str, run_id: str, experiment_id: str | None) -> str:
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id or 0}/runs/{run_id}"


def mlflow_ui_model_version(ui_url: str, model: str, version: str | int) -> str:
    return f"{ui_url.rstrip('/')}/#/models/{quote(model, safe='')}/versions/{version}"


class MLflowRunLink(XComUrlLink):
    """"MLflow run" button, pushed before training starts: the run's page in the MLflow web UI when the
    ``mlflow`` connection has one, else the run's page of the MLOps plugin (params, metrics, tags)."""

    name = "MLflow run"
    key = MLFLOW_RUN_URL_XCOM_KEY

    @staticmethod
    def url(ui_url: str | None, run_id: str, experiment_id: str | None = None) -> str:
        if ui_url:
            return mlflow_ui_run(ui_url, run_id, experiment_id)
        return plugin_url("runs", run_id)
