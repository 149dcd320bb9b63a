"""Feast hook: resolves a Feast repo + connection into a ``FeatureStore`` (created lazily, cached).

Connection ``feast_default`` (type ``feast``) is optional. Without it the hook uses
``<repo_path>/feature_store.yaml`` as is (``${MLOPS_HOME}`` resolved, default ``./.mlops``). Its
extras, all optional, override that:

``repo_path``
    Feast repo directory, used when the operator passes none.
``fs_yaml_file``
    YAML file name or path, relative to the repo (e.g. ``feature_store.production.yaml``).
``registry_path``
    Registry path or URI (a file path, ``s3://...``, or a SQLAlchemy URL for a SQL registry).
``online_store_path``
    SQLite online store path (embedded) — or use ``config_overrides`` for other stores.
``config_overrides``
    A mapping (or JSON string) deep-merged into the YAML, e.g.
    ``{"online_store": {"connection_string": "redis:6379,password=..."}}``.

The connection password, when set, is passed as the Redis password of a ``redis`` online store and
never logged.
"""

from __future__ import annotations

import json
from functools import cached_property
from typing import Any

from airflow.sdk import BaseHook

from mlops_provider.connection_forms import conn_fields, legacy_form_widgets, ui_field_behaviour


class FeastHook(BaseHook):
    """Build (once) the ``feast.FeatureStore`` of a repo, with connection overrides applied."""

    conn_name_attr = "feast_conn_id"
    default_conn_name = "feast_default"
    conn_type = "feast"
    hook_name = "Feast"

    #: Airflow 3 connection form fields (``conn-fields`` of the provider info), by extra key.
    CONN_FIELDS: dict[str, dict[str, Any]] = conn_fields("feast")

    def __init__(self, feast_conn_id: str = default_conn_name, repo_path: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.feast_conn_id = feast_conn_id
        self.repo_path = repo_path

    # --- UI -------------------------------------------------------------------------------------------
    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return ui_field_behaviour("feast")

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Legacy (FAB) form widgets; Airflow 3's UI renders the provider info's conn-fields."""
        return legacy_form_widgets("feast")

    # --- connection -> settings ----------------------------------------------------------------------
    def _connection_settings(self) -> dict[str, Any]:
        """Extras (+ password) of the connection, or ``{}`` when it is not defined."""
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            conn = self.get_connection(self.feast_conn_id)
        except AirflowNotFoundException:
            self.log.info("connection %r not defined; using the repo's feature_store.yaml", self.feast_conn_id)
            return {}
        settings = dict(conn.extra_dejson or {})
        if conn.password:
            settings["_password"] = conn.password
        return settings

    @staticmethod
    def build_overrides(settings: dict[str, Any]) -> dict[str, Any]:
        """Feast config overrides from connection settings (pure; unit-tested)."""
        from mlops_provider.exceptions import ConfigError

        overrides: dict[str, Any] = {}
        extra = settings.get("config_overrides")
        if isinstance(extra, str) and extra.strip():
            try:
                extra = json.loads(extra)
            except ValueError as e:
                raise ConfigError(f"feast connection extra 'config_overrides' is not valid JSON: {e}") from e
        if extra:
            if not isinstance(extra, dict):
                raise ConfigError("feast connection extra 'config_overrides' must be a JSON object")
            overrides.update(extra)
        if settings.get("registry_path"):
            overrides.setdefault("registry", {})
            if isinstance(overrides["registry"], dict):
                overrides["registry"]["path"] = settings["registry_path"]
        if settings.get("online_store_path"):
            overrides.setdefault("online_store", {})["path"] = settings["online_store_path"]
        return overrides

    @cached_property
    def settings(self) -> dict[str, Any]:
        return self._connection_settings()

    def get_conn(self) -> Any:
        return self.get_store()

    def get_store(self, repo_path: str | None = None) -> Any:
        """The repo's ``feast.FeatureStore`` (cached per repo path)."""
        cache: dict[str, Any] = self.__dict__.setdefault("_stores", {})
        repo = repo_path or self.repo_path or self.settings.get("repo_path")
        if not repo:
            from mlops_provider.exceptions import FeatureStoreError

            raise FeatureStoreError(
                "no Feast repo path: pass repo_path to the operator or set the feast connection extra 'repo_path'"
            )
        if repo not in cache:
            from mlops_provider.runtime.features.ops import open_store

            overrides = self.build_overrides(self.settings)
            password = self.settings.get("_password")
            cache[repo] = open_store(
                repo, fs_yaml_file=self.settings.get("fs_yaml_file"), overrides=overrides or None
            )
            if password and getattr(cache[repo].config.online_store, "type", "") == "redis":
                cs = cache[repo].config.online_store.connection_string
                if "password=" not in cs:
                    cache[repo].config.online_store.connection_string = f"{cs},password={password}"
            self.log.info("opened Feast store of %s (project %s)", repo, cache[repo].config.project)
        return cache[repo]

    def test_connection(self) -> tuple[bool, str]:
        try:
            store = self.get_store()
            store.list_feature_views()
        except Exception as e:
            return False, str(e)
        return True, f"Feast registry of project {store.config.project} is readable"
