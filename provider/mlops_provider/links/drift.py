"""Extra link to the HTML drift report of an EvidentlyDriftOperator (DriftReportOperator) run."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlops_provider.links.base import XComUrlLink, plugin_url

if TYPE_CHECKING:
    from airflow.sdk import Context


def report_url(model: str, kind: str, path: str) -> str:
    """Plugin URL of a report file ``path`` (local or s3://) of ``kind`` (drift, validation, gate, ...)."""
    name = str(path).rstrip("/").rsplit("/", 1)[-1]
    return plugin_url("models", model, "reports", kind, name)


def _model_of(context: Context) -> str | None:
    dag_id = getattr(context.get("dag_run"), "dag_id", None) or getattr(context.get("ti"), "dag_id", None)
    return str(dag_id).split("__", 1)[0] if dag_id and "__" in str(dag_id) else None


class DriftReportLink(XComUrlLink):
    """"Drift report" button: the HTML report served by the MLOps plugin (local or s3://)."""

    name = "Drift report"
    key = "drift_report_url"
    kind = "drift"

    @classmethod
    def url_for(cls, path: str | None, model: str | None = None) -> str | None:
        if not path or not model:
            return None
        return report_url(model, cls.kind, path)

    @classmethod
    def persist(cls, context: Context, html_path: str | None, model: str | None = None) -> str | None:
        """Push the report's URL (nothing when no HTML was written); ``model`` defaults to the DAG id's prefix."""
        return cls.push(context, cls.url_for(html_path, model or _model_of(context)))
