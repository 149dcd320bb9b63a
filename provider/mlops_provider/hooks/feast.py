"""Feast hook: resolves a Feast repo + connection into the settings that open its ``FeatureStore``.

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

Layering: the hook only resolves settings (:meth:`FeastHook.store_settings`, plain values); the
operators, sensor and trigger open the store with
:func:`mlops_provider.runtime.features.store.open_store` inside ``execute`` / ``poke`` / the trigger's
worker thread.
"""

from __future__ import annotations

import json
from functools import cached_property
from typing import Any

from airflow.sdk import BaseHook

from mlops_provider.connection_forms import conn_fields, legacy_form_widgets, ui_field_behaviour


class FeastHook(BaseHook):
    """Resolve the ``feast`` connection (extras, password) into the settings of a repo's store."""

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

    def get_conn(self) -> dict[str, Any]:
        return self.store_settings()

    def store_settings(self, repo_path: str | None = None) -> dict[str, Any]:
        """What the runtime needs to open the repo's ``feast.FeatureStore``, as plain values.

        ``{"repo_path", "fs_yaml_file", "overrides", "online_store_password"}``: the keyword arguments of
        :func:`mlops_provider.runtime.features.store.open_store` (the operator calls
        ``open_store(**hook.store_settings(repo))`` inside ``execute``; this hook never opens the store).
        """
        from mlops_provider.exceptions import FeatureStoreError

        repo = repo_path or self.repo_path or self.settings.get("repo_path")
        if not repo:
            raise FeatureStoreError(
                "no Feast repo path: pass repo_path to the operator or set the feast connection extra 'repo_path'"
            )
        return {
            "repo_path": str(repo),
            "fs_yaml_file": self.settings.get("fs_yaml_file"),
            "overrides": self.build_overrides(self.settings) or None,
            "online_store_password": self.settings.get("_password"),
        }

    def test_connection(self) -> tuple[bool, str]:
        """The connection resolves and the repo's Feast YAML exists and parses (the registry itself is
        read by the tasks, which have Feast installed)."""
        import os
        from pathlib import Path

        import yaml

        try:
            settings = self.store_settings()
            repo = Path(settings["repo_path"]).expanduser()
            fs_yaml = Path(settings["fs_yaml_file"] or "feature_store.yaml")
            fs_yaml = fs_yaml if fs_yaml.is_absolute() else repo / fs_yaml
            raw = yaml.safe_load(os.path.expandvars(fs_yaml.read_text()))
            if not isinstance(raw, dict) or not raw.get("project"):
                return False, f"{fs_yaml} is not a Feast config (no 'project')"
        except Exception as e:
            return False, str(e)
        return True, f"Feast repo {repo} (project {raw['project']}) is configured"
