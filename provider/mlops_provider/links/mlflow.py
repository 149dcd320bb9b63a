"""Extra link to the MLflow run of a training task (light module)."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperatorLink

MLFLOW_RUN_URL_XCOM_KEY = "mlflow_run_url"


class MLflowRunLink(BaseOperatorLink):
    """"MLflow run" button: the URL the training task pushed to XCom before training started.

    Airflow 3 resolves the link from the XCom under :attr:`xcom_key`; ``get_link`` does the same
    for callers that invoke it directly. Empty when the store has no web UI (embedded sqlite).
    """

    name = "MLflow run"

    @property
    def xcom_key(self) -> str:
        return MLFLOW_RUN_URL_XCOM_KEY

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        try:
            from airflow.sdk.execution_time.xcom import XCom

            url = XCom.get_value(key=self.xcom_key, ti_key=ti_key)
        except Exception:  # noqa: BLE001 - a link must never break the UI
            return ""
        return str(url) if url else ""
