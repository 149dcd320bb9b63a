"""Extra link to the Evidently HTML drift report of a DriftReportOperator run."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mlops_provider.links.base import XComUrlLink

if TYPE_CHECKING:
    from airflow.sdk import Context


class DriftReportLink(XComUrlLink):
    """``file://`` URL of the HTML report, pushed to XCom by the operator once the report exists."""

    name = "Drift report"
    key = "drift_report_url"

    @staticmethod
    def url_for(path: str | None) -> str | None:
        return Path(path).resolve().as_uri() if path else None

    @classmethod
    def persist(cls, context: Context, html_path: str | None) -> str | None:
        """Push the report URL (or nothing when no HTML was written) to XCom; returns the URL."""
        url = cls.url_for(html_path)
        if url:
            context["ti"].xcom_push(key=cls.key, value=url)
        return url
