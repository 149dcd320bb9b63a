"""BentoCloud hook: the credentials of the ``bentocloud`` deployment target.

Connection ``bentocloud_default`` (type ``bentocloud``; ``serving.bentocloud.conn_id`` names another):

- ``password`` or extra ``api_token``: the BentoCloud API key (masked, never logged);
- ``host``: the BentoCloud endpoint (``https://<org>.cloud.bentoml.com``); a bare host name gets the
  ``schema`` (default ``https``).

Without the connection the settings are empty and the runtime falls back to
``$BENTO_CLOUD_API_KEY`` / ``$BENTO_CLOUD_API_ENDPOINT``, then to the ``bentoml cloud login`` context.
A connection of the older type ``bentoml`` with the same fields is read the same way.

Parse-safe: bentoml is never imported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from airflow.sdk import BaseHook

from mlops_provider.connection_forms import legacy_form_widgets, ui_field_behaviour


@dataclass(frozen=True)
class BentoCloudSettings:
    """Resolved BentoCloud access (None everywhere: use the environment or the CLI login context)."""

    api_key: str | None = field(default=None, repr=False)
    endpoint: str | None = None
    source: str = "none"

    def public(self) -> dict[str, Any]:
        return {"endpoint": self.endpoint, "source": self.source, "api_key_set": bool(self.api_key)}


class BentoCloudHook(BaseHook):
    """Resolves the BentoCloud API key and endpoint from a connection."""

    conn_name_attr = "bentocloud_conn_id"
    default_conn_name = "bentocloud_default"
    conn_type = "bentocloud"
    hook_name = "BentoCloud"

    def __init__(self, bentocloud_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.bentocloud_conn_id = bentocloud_conn_id
        self._settings: BentoCloudSettings | None = None

    def settings(self) -> BentoCloudSettings:
        """API key (password or extra ``api_token``) and endpoint (host) of the connection, resolved once."""
        if self._settings is not None:
            return self._settings
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            conn = self.get_connection(self.bentocloud_conn_id)
        except AirflowNotFoundException:
            self._settings = BentoCloudSettings()
            return self._settings
        extras = conn.extra_dejson or {}
        key = extras.get("api_token") or conn.password or None
        if key:
            from airflow.sdk.log import mask_secret

            mask_secret(str(key))
        endpoint = None
        if conn.host:
            endpoint = str(conn.host).rstrip("/")
            if "://" not in endpoint:
                endpoint = f"{conn.schema or 'https'}://{endpoint}"
        self._settings = BentoCloudSettings(
            api_key=str(key) if key else None, endpoint=endpoint, source=f"connection:{self.bentocloud_conn_id}"
        )
        return self._settings

    def get_conn(self) -> BentoCloudSettings:
        return self.settings()

    # ------------------------------------------------------------------ connection form
    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Legacy (FAB) form widgets; Airflow 3's UI renders the provider info's conn-fields."""
        return legacy_form_widgets("bentocloud")

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return ui_field_behaviour("bentocloud")
