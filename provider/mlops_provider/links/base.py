"""Base of the provider's extra links: a URL a task pushed to XCom under a fixed key (light module).

Every link is a URL a logged-in user can open from the task's Details tab. Airflow 3.3's UI renders
only ``http(s)``/``mailto`` links and same-origin paths, so ``file://``, ``s3://`` and ``runs:/`` URIs
are never pushed: a link points at the MLflow web UI when the ``mlflow`` connection has one (extra
``ui_url``), else at a route of the provider's UI plugin (:func:`plugin_url`, served under ``/mlops``
by the API server behind Airflow's own authentication), which reads the artifact (local or ``s3://``).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar
from urllib.parse import quote, urlencode, urlsplit

from airflow.sdk import BaseOperatorLink

#: where ``plugins/mlops_plugin.py`` mounts the UI's FastAPI app
PLUGIN_PREFIX = "/mlops"


def _base_path() -> str:
    """Path part of ``[api] base_url`` (``/airflow`` behind a path-routing proxy; usually empty)."""
    url = os.environ.get("AIRFLOW__API__BASE_URL")
    if url is None:
        try:
            from airflow.configuration import conf

            url = conf.get("api", "base_url", fallback="") or ""
        except Exception:  # noqa: BLE001 - a worker without the core config: no base path
            url = ""
    return urlsplit(url).path.rstrip("/")


def plugin_url(*parts: Any, **query: Any) -> str:
    """Same-origin URL of a route of the UI plugin: ``plugin_url("models", "m", "card")`` -> ``/mlops/models/m/card``."""
    path = "/".join(quote(str(p), safe="") for p in parts)
    q = urlencode({k: v for k, v in query.items() if v is not None})
    return f"{_base_path()}{PLUGIN_PREFIX}/{path}" + (f"?{q}" if q else "")


def is_openable(url: Any) -> bool:
    """What Airflow's UI renders as a link: http(s) or a same-origin path."""
    text = str(url or "")
    return text.startswith(("http://", "https://", "/")) and not text.startswith("//")


class XComUrlLink(BaseOperatorLink):
    """A button whose URL the task pushed to XCom under :attr:`key` (before any long wait).

    Airflow 3 resolves the link from the XCom under :attr:`xcom_key`; ``get_link`` does the same
    for callers that invoke it directly. Empty until the task pushed a URL; never raises.
    """

    name: ClassVar[str]
    key: ClassVar[str]

    @property
    def xcom_key(self) -> str:
        return self.key

    @classmethod
    def push(cls, context: Any, url: str | None) -> str | None:
        """Push ``url`` (only an openable one) under :attr:`key`; returns it."""
        ti = context.get("ti") if hasattr(context, "get") else None
        if not url or not is_openable(url) or ti is None:
            return None
        ti.xcom_push(key=cls.key, value=url)
        return url

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        try:
            from airflow.sdk.execution_time.xcom import XCom

            url = XCom.get_value(key=self.key, ti_key=ti_key)
        except Exception:  # noqa: BLE001 - a link must never break the UI
            return ""
        return str(url) if url and is_openable(url) else ""
