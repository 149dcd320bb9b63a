"""Extra link to the Evidently HTML drift report of an EvidentlyDriftOperator (DriftReportOperator) run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mlops_provider.links.base import XComUrlLink

if TYPE_CHECKING:
    from airflow.sdk import Context


class DriftReportLink(XComUrlLink):
    """URL of the HTML report (``file://`` or ``s3://``), pushed to XCom by the operator once it exists."""

    name = "Drift report"
    key = "drift_report_url"

    @staticmethod
    def url_for(path: str | None) -> str | None:
        """``file://`` URL of a local report; an object-storage URL (``s3://...``) is kept as it is."""
        if not path:
            return None
        if "://" in str(path):
            return str(path)
        return Path(path).resolve().as_uri()

    @classmethod
    def persist(cls, context: Context, html_path: str | None) -> str | None:
        """Push the report URL (or nothing when no HTML was written) to XCom; returns the URL."""
        url = cls.url_for(html_path)
        if url:
            context["ti"].xcom_push(key=cls.key, value=url)
        return url
