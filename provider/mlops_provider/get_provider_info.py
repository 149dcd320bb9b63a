"""Provider metadata registered through the ``apache_airflow_provider`` entry point.

``airflow providers get airflow-provider-mlops`` shows it; the UI reads the connection
types and extra links from here. Keep it in sync with the modules (a unit test checks
that every listed module and class imports).
"""

from __future__ import annotations

from typing import Any

from mlops_provider.connection_forms import CONNECTION_TYPES

_P = "mlops_provider"
VERSION = "0.1.0"

INTEGRATIONS = {
    "Feast": ("https://docs.feast.dev/", ["feast", "data_validation"]),
    "MLflow": ("https://mlflow.org/docs/latest/", ["training", "gate", "hpo", "ddp"]),
    "BentoML": ("https://docs.bentoml.com/", ["bentoml"]),
    "Evidently": ("https://docs.evidentlyai.com/", ["drift"]),
    "MLOps pipelines": (
        "https://github.com/airflow-provider-mlops/airflow-provider-mlops",
        ["control", "monitoring"],
    ),
}


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-mlops",
        "name": "MLOps",
        "description": "Feast features, MLflow-tracked PyTorch training, champion/challenger gate, BentoML "
        "serving and Evidently drift monitoring for the whole ML loop on Airflow 3.",
        "versions": [VERSION],
        "integrations": [
            {"integration-name": name, "external-doc-url": url, "tags": ["software"]}
            for name, (url, _) in INTEGRATIONS.items()
        ],
        "operators": [
            {"integration-name": name, "python-modules": [f"{_P}.operators.{m}" for m in mods]}
            for name, (_, mods) in INTEGRATIONS.items()
        ],
        "hooks": [
            {"integration-name": "Feast", "python-modules": [f"{_P}.hooks.feast"]},
            {"integration-name": "MLflow", "python-modules": [f"{_P}.hooks.mlflow"]},
            {"integration-name": "BentoML", "python-modules": [f"{_P}.hooks.bentoml", f"{_P}.hooks.bentocloud",
                                                          f"{_P}.hooks.kubernetes"]},
            {"integration-name": "Object storage", "python-modules": [f"{_P}.hooks.objstore"]},
            {"integration-name": "MLOps pipelines", "python-modules": [f"{_P}.hooks.airflow_api"]},
        ],
        "sensors": [
            {"integration-name": "Feast", "python-modules": [f"{_P}.sensors.feast"]},
        ],
        "triggers": [
            {"integration-name": "MLOps pipelines", "python-modules": [f"{_P}.triggers.data_arrival"]},
            {"integration-name": "Feast", "python-modules": [f"{_P}.triggers.feast"]},
            {"integration-name": "BentoML", "python-modules": [f"{_P}.triggers.serving"]},
        ],
        "extra-links": [
            f"{_P}.links.mlflow.MLflowRunLink",
            f"{_P}.links.bentoml.BentoEndpointLink",
            f"{_P}.links.drift.DriftReportLink",
            f"{_P}.links.gate.ModelCardLink",
            f"{_P}.links.gate.GateVerdictLink",
            f"{_P}.links.validation.ValidationReportLink",
        ],
        "connection-types": list(CONNECTION_TYPES.values()),
        "notifications": [
            f"{_P}.notifications.alerts.LogAlertNotifier",
            f"{_P}.notifications.alerts.EmailAlertNotifier",
            f"{_P}.notifications.alerts.WebhookAlertNotifier",
        ],
    }
