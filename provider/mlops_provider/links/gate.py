"""Extra link to the model card the gate task wrote (light module)."""

from __future__ import annotations

from mlops_provider.links.base import XComUrlLink

MODEL_CARD_URL_XCOM_KEY = "model_card_url"


class ModelCardLink(XComUrlLink):
    """ "Model card" button: the HTML card logged to the challenger's MLflow run (the MLflow UI page when
    the connection has a web UI, else the artifact URI)."""

    name = "Model card"
    key = MODEL_CARD_URL_XCOM_KEY
