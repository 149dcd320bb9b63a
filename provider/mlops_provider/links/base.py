"""Base of the provider's extra links: a URL a task pushed to XCom under a fixed key (light module)."""

from __future__ import annotations

from typing import Any, ClassVar

from airflow.sdk import BaseOperatorLink


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

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        try:
            from airflow.sdk.execution_time.xcom import XCom

            url = XCom.get_value(key=self.key, ti_key=ti_key)
        except Exception:  # noqa: BLE001 - a link must never break the UI
            return ""
        return str(url) if url else ""
