"""Extra link to the BentoML serving endpoint of a deploy task (light module)."""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperatorLink

BENTO_ENDPOINT_XCOM_KEY = "bento_endpoint_url"


class BentoEndpointLink(BaseOperatorLink):
    """"BentoML endpoint" button: the URL the deploy task pushed to XCom (its Swagger UI).

    Airflow 3 resolves the link from the XCom under :attr:`xcom_key`; ``get_link`` does the same
    for callers that invoke it directly. Empty until the deployment is ready.
    """

    name = "BentoML endpoint"

    @property
    def xcom_key(self) -> str:
        return BENTO_ENDPOINT_XCOM_KEY

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        try:
            from airflow.sdk.execution_time.xcom import XCom

            url = XCom.get_value(key=self.xcom_key, ti_key=ti_key)
        except Exception:  # noqa: BLE001 - a link must never break the UI
            return ""
        return str(url) if url else ""
