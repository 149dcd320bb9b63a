"""BentoML hook: where bentos and models are stored, and where the serving endpoint lives.

Connection ``bentoml_default`` (type ``bentoml``):

- ``host``: base URL of the serving endpoint (``http://127.0.0.1:3000``, a Kubernetes service
  URL, a BentoCloud deployment URL); a bare host name is combined with ``port`` and ``schema``;
- ``password`` or extra ``api_token``: bearer token sent to the endpoint (masked, never logged);
- extra ``bentoml_home``: the BentoML store (``BENTOML_HOME``) that packaging writes to and the
  local ``bentoml serve`` reads from.

Deployment target ``bentocloud`` reads its own connection through
:class:`~mlops_provider.hooks.bentocloud.BentoCloudHook` (``serving.bentocloud.conn_id``, default
``bentocloud_default``).

Without a connection the hook falls back to ``$BENTOML_HOME`` and then to
:attr:`ModelPaths.bentoml_home <mlops_provider.paths.ModelPaths.bentoml_home>` (``<home>/bentoml``),
with no endpoint URL (the deploy task reports it), so the demo and the tests need no setup.

Parse-safe: bentoml is never imported here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from airflow.sdk import BaseHook

from mlops_provider.connection_forms import legacy_form_widgets, ui_field_behaviour
from mlops_provider.paths import ModelPaths
from mlops_provider.redact import redact_text, redact_url

ENV_BENTOML_HOME = "BENTOML_HOME"


@dataclass(frozen=True)
class BentoMLConfig:
    """What a task needs: the store and the endpoint. The token is kept out of ``repr``/``public``."""

    bentoml_home: str
    url: str | None = None
    source: str = "fallback"
    api_token: str | None = field(default=None, repr=False)

    def public(self) -> dict[str, Any]:
        return {"bentoml_home": self.bentoml_home, "url": self.url, "source": self.source}

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_token}"} if self.api_token else {}


class BentoMLHook(BaseHook):
    """Resolves the BentoML store and serving endpoint from a connection (or the embedded defaults)."""

    conn_name_attr = "bentoml_conn_id"
    default_conn_name = "bentoml_default"
    conn_type = "bentoml"
    hook_name = "BentoML"

    def __init__(self, bentoml_conn_id: str = default_conn_name, *, home: str | None = None) -> None:
        super().__init__()
        self.bentoml_conn_id = bentoml_conn_id
        self.home = home
        self._config: BentoMLConfig | None = None

    def _lookup_connection(self) -> Any | None:
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            return self.get_connection(self.bentoml_conn_id)
        except AirflowNotFoundException:
            return None

    def _fallback_home(self) -> str:
        if os.environ.get(ENV_BENTOML_HOME):
            return os.path.abspath(os.path.expanduser(os.environ[ENV_BENTOML_HOME]))
        return str(ModelPaths.for_model("_", self.home).bentoml_home)

    def get_conn(self) -> BentoMLConfig:
        """Resolve the connection (or the fallbacks) once per hook instance."""
        if self._config is not None:
            return self._config
        conn = self._lookup_connection()
        if conn is None:
            self._config = BentoMLConfig(bentoml_home=self._fallback_home(), source="embedded")
            return self._config
        extras = conn.extra_dejson or {}
        url: str | None = None
        if conn.host:
            host = str(conn.host).rstrip("/")
            if "://" not in host:
                host = f"{conn.schema or 'http'}://{host}"
            if conn.port and host.count(":") == 1:
                host = f"{host}:{conn.port}"
            url = host
        token = extras.get("api_token") or conn.password or None
        if token:
            from airflow.sdk.log import mask_secret

            mask_secret(str(token))
        home = extras.get("bentoml_home")
        self._config = BentoMLConfig(
            bentoml_home=os.path.abspath(os.path.expanduser(home)) if home else self._fallback_home(),
            url=url,
            source=f"connection:{self.bentoml_conn_id}",
            api_token=str(token) if token else None,
        )
        self.log.info("BentoML store %s from connection %s", self._config.bentoml_home, self.bentoml_conn_id)
        return self._config

    @property
    def bentoml_home(self) -> str:
        return self.get_conn().bentoml_home

    @property
    def url(self) -> str | None:
        return self.get_conn().url

    def headers(self) -> dict[str, str]:
        """HTTP headers for calls to the endpoint (bearer token when configured)."""
        return self.get_conn().headers()

    def env(self) -> dict[str, str]:
        """Environment for a ``bentoml`` subprocess (the store to use)."""
        return {ENV_BENTOML_HOME: self.bentoml_home}

    def test_connection(self) -> tuple[bool, str]:
        import urllib.error
        import urllib.request

        url = self.url
        if not url:
            return True, f"No endpoint configured; BentoML store {self.bentoml_home}"
        req = urllib.request.Request(f"{url}/readyz", headers=self.headers())
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - URL from the connection
                return resp.status == 200, f"{redact_url(url)}/readyz answered {resp.status}"
        except (urllib.error.URLError, OSError) as e:
            return False, f"BentoML endpoint {redact_url(url)} is not reachable: {redact_text(e)}"

    # ------------------------------------------------------------------ connection form
    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Legacy (FAB) form widgets; Airflow 3's UI renders the provider info's conn-fields."""
        return legacy_form_widgets("bentoml")

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return ui_field_behaviour("bentoml")
