"""Extra link to the BentoML serving endpoint of a deploy task (light module)."""

from __future__ import annotations

from typing import Any

from mlops_provider.links.base import XComUrlLink, plugin_url
from mlops_provider.links.drift import _model_of

BENTO_ENDPOINT_XCOM_KEY = "bento_endpoint_url"


class BentoEndpointLink(XComUrlLink):
    """"BentoML endpoint" button: the MLOps plugin's endpoint page (URL, /readyz and /health, live version)
    of the model, pushed once the deployment was ready."""

    name = "BentoML endpoint"
    key = BENTO_ENDPOINT_XCOM_KEY

    @staticmethod
    def url(model: str) -> str:
        return plugin_url("models", model, "endpoint")

    @classmethod
    def persist(cls, context: Any, endpoint_url: str | None) -> None:
        """Push the endpoint page of the deploy DAG's model (``<model>__deploy``), else the endpoint URL."""
        model = _model_of(context)
        cls.push(context, cls.url(model) if model else endpoint_url)
