"""Extra links of the gate task: the model card and the gate's verdict (light module)."""

from __future__ import annotations

from mlops_provider.links.base import XComUrlLink, plugin_url
from mlops_provider.links.mlflow import mlflow_ui_model_version

MODEL_CARD_URL_XCOM_KEY = "model_card_url"
GATE_VERDICT_URL_XCOM_KEY = "gate_verdict_url"


class ModelCardLink(XComUrlLink):
    """"Model card" button: the model version's page in the MLflow web UI when the connection has one,
    else the card's HTML served by the MLOps plugin (read from the run's artifacts, local or s3://)."""

    name = "Model card"
    key = MODEL_CARD_URL_XCOM_KEY

    @staticmethod
    def url(model: str, version: str | int, ui_url: str | None = None) -> str:
        if ui_url:
            return mlflow_ui_model_version(ui_url, model, version)
        return plugin_url("models", model, "versions", version, "card")


class GateVerdictLink(XComUrlLink):
    """"Gate verdict" button: every check with its value and bound, the decision and who decided."""

    name = "Gate verdict"
    key = GATE_VERDICT_URL_XCOM_KEY

    @staticmethod
    def url(model: str, version: str | int) -> str:
        return plugin_url("models", model, "versions", version, "verdict")

    @classmethod
    def push_all(cls, context: object, model: str, version: str | int, ui_url: str | None = None) -> None:
        """Push the verdict and model card links of ``model`` v``version``."""
        cls.push(context, cls.url(model, version))
        ModelCardLink.push(context, ModelCardLink.url(model, version, ui_url))
