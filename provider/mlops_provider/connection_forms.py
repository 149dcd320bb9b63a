"""Connection types of the provider: form fields and UI behaviour (standard library only).

Read by ``get_provider_info()`` (Airflow 3 renders connection forms from it) and by the hooks'
``get_ui_field_behaviour()``, so the two never disagree.

What Airflow 3.3's React connection form does with it (``/ui/connections/hook_meta``):

- standard fields (host, port, login, password, schema, description): ``hidden-fields`` hides them,
  ``relabeling`` renames them, ``placeholders`` shows in the empty input;
- ``conn-fields`` become the "Extra Fields" section: label, description and the schema's ``examples``
  (a suggestion list) are shown, a ``placeholders`` entry is not, so it is turned into an example;
- the "Extra Fields JSON" editor is always there (the raw mirror of the extra fields; the form cannot hide
  it). ``extra`` in ``hidden-fields`` only matters to the legacy FAB form.
"""

from __future__ import annotations

from typing import Any

CONNECTION_TYPES: dict[str, dict[str, Any]] = {
    "feast": {
        "hook-class-name": "mlops_provider.hooks.feast.FeastHook",
        "hook-name": "Feast",
        "connection-type": "feast",
        "conn-fields": {
            "repo_path": {
                "label": "Feast repo path",
                "description": "Directory holding feature_store.yaml and the "
                "definitions (default: the operator's).",
                "schema": {"type": ["string", "null"]},
            },
            "fs_yaml_file": {
                "label": "Feature store YAML",
                "description": "YAML file relative to the repo, e.g. feature_store.production.yaml.",
                "schema": {"type": ["string", "null"]},
            },
            "registry_path": {
                "label": "Registry path / URL",
                "description": "Overrides registry.path (file path, s3:// URI or SQLAlchemy URL).",
                "schema": {"type": ["string", "null"]},
            },
            "online_store_path": {
                "label": "Online store path",
                "description": "Overrides online_store.path (SQLite file of the embedded store).",
                "schema": {"type": ["string", "null"]},
            },
            "config_overrides": {
                "label": "Config overrides (JSON)",
                "description": "JSON object deep-merged into the feature_store.yaml.",
                "schema": {"type": ["string", "null"]},
            },
        },
        "ui-field-behaviour": {
            "hidden-fields": ["host", "schema", "port", "login"],
            "relabeling": {"password": "Online store password (Redis)"},
            "placeholders": {
                "repo_path": "/opt/airflow/feature_repo",
                "fs_yaml_file": "feature_store.production.yaml",
                "registry_path": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
                "config_overrides": '{"online_store": {"connection_string": "127.0.0.1:6379"}}',
            },
        },
    },
    "mlflow": {
        "connection-type": "mlflow",
        "hook-class-name": "mlops_provider.hooks.mlflow.MLflowHook",
        "hook-name": "MLflow",
        "conn-fields": {
            "registry_uri": {
                "label": "Registry URI",
                "description": "Model registry URI; defaults to the tracking URI.",
                "schema": {"type": ["string", "null"]},
            },
            "artifact_location": {
                "label": "Artifact location",
                "description": "Artifact root of experiments the provider creates (e.g. s3://bucket/mlflow).",
                "schema": {"type": ["string", "null"]},
            },
            "ui_url": {
                "label": "Web UI URL",
                "description": "Base URL of the MLflow UI for run links; defaults to "
                "an http(s) tracking URI.",
                "schema": {"type": ["string", "null"]},
            },
            "token": {
                "label": "Token",
                "description": "Bearer token, exported as MLFLOW_TRACKING_TOKEN inside tasks.",
                "schema": {"type": ["string", "null"], "format": "password"},
            },
        },
        "ui-field-behaviour": {
            "hidden-fields": ["schema", "extra"],
            "relabeling": {"host": "Tracking URI", "login": "Username", "password": "Password"},
            "placeholders": {
                "host": "http://mlflow:5000 (empty: $MLFLOW_TRACKING_URI or the embedded sqlite store)",
                "port": "5000 (when the host has no port)",
                "login": "basic-auth user",
                "registry_uri": "postgresql://mlflow@db:5432/mlflow",
                "artifact_location": "s3://bucket/mlflow",
                "ui_url": "https://mlflow.example.com",
            },
        },
    },
    "bentoml": {
        "hook-class-name": "mlops_provider.hooks.bentoml.BentoMLHook",
        "hook-name": "BentoML",
        "connection-type": "bentoml",
        "conn-fields": {
            "bentoml_home": {
                "label": "BentoML home",
                "description": "BENTOML_HOME of packaging and local serving (default <MLOPS_HOME>/bentoml).",
                "schema": {"type": ["string", "null"]},
            },
            "api_token": {
                "label": "API token",
                "description": "Bearer token sent to the endpoint.",
                "schema": {"type": ["string", "null"], "format": "password"},
            },
        },
        "ui-field-behaviour": {
            "hidden-fields": ["login", "extra"],
            "relabeling": {"host": "Endpoint URL", "schema": "Scheme", "password": "API token (alt.)"},
            "placeholders": {
                "host": "http://127.0.0.1:3000 (empty: the deploy task reports the local URL)",
                "schema": "http",
                "port": "3000 (when the host has no port)",
                "bentoml_home": "/opt/airflow/bentoml",
            },
        },
    },
    "bentocloud": {
        "hook-class-name": "mlops_provider.hooks.bentocloud.BentoCloudHook",
        "hook-name": "BentoCloud",
        "connection-type": "bentocloud",
        "conn-fields": {
            "api_token": {
                "label": "API token",
                "description": "BentoCloud API key (alternative to the password field).",
                "schema": {"type": ["string", "null"], "format": "password"},
            },
        },
        "ui-field-behaviour": {
            "hidden-fields": ["login", "port", "extra"],
            "relabeling": {"host": "Endpoint", "schema": "Scheme", "password": "API key"},
            "placeholders": {
                "host": "https://<org>.cloud.bentoml.com (empty: $BENTO_CLOUD_API_ENDPOINT or the CLI login)",
                "schema": "https",
                "password": "BentoCloud API key",
            },
        },
    },
}


def _render_extra_placeholders(types: dict[str, dict[str, Any]]) -> None:
    """Airflow 3's React form shows a placeholder only for the standard fields (host, port, login, ...);
    an extra field (``conn-fields``) shows its description and its schema's ``examples`` (a suggestion
    list). So each extra field's placeholder becomes an example and is named in its description."""
    for spec in types.values():
        placeholders = spec["ui-field-behaviour"]["placeholders"]
        for name, field in spec["conn-fields"].items():
            example = placeholders.get(name)
            if not example or field["schema"].get("format") == "password":
                continue
            field["schema"].setdefault("examples", [example])
            if example not in field["description"]:
                field["description"] = f"{field['description']} Example: {example}"


_render_extra_placeholders(CONNECTION_TYPES)


def ui_field_behaviour(conn_type: str) -> dict[str, Any]:
    """The classic ``get_ui_field_behaviour()`` shape (snake_case keys) of one connection type."""
    b = CONNECTION_TYPES[conn_type]["ui-field-behaviour"]
    return {
        "hidden_fields": list(b["hidden-fields"]),
        "relabeling": dict(b["relabeling"]),
        "placeholders": dict(b["placeholders"]),
    }


def conn_fields(conn_type: str) -> dict[str, dict[str, Any]]:
    return CONNECTION_TYPES[conn_type]["conn-fields"]


def legacy_form_widgets(conn_type: str) -> dict[str, Any]:
    """``get_connection_form_widgets()`` for UIs that still render FAB/wtforms forms; ``{}`` without wtforms."""
    try:
        from wtforms import PasswordField, StringField
    except ImportError:  # Airflow 3 without FAB: the UI renders conn-fields from the provider info
        return {}
    return {
        name: (PasswordField if spec["schema"].get("format") == "password" else StringField)(spec["label"])
        for name, spec in conn_fields(conn_type).items()
    }
