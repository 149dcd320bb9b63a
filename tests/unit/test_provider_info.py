"""The provider metadata lists every component, and each listed path imports."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

from mlops_provider.get_provider_info import get_provider_info

PKG = Path(__file__).resolve().parents[2] / "provider" / "mlops_provider"


def _import(path: str):
    module, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return importlib.import_module(path)


def test_every_listed_module_and_class_imports() -> None:
    info = get_provider_info()
    for section in ("operators", "hooks", "sensors", "triggers"):
        for entry in info[section]:
            for mod in entry["python-modules"]:
                importlib.import_module(mod)
    for link in info["extra-links"]:
        assert _import(link).name
    from airflow.sdk import BaseNotifier

    assert info["notifications"], "the alert notifiers are registered"
    for notifier in info["notifications"]:
        assert issubclass(_import(notifier), BaseNotifier), notifier
    for conn in info["connection-types"]:
        hook = _import(conn["hook-class-name"])
        assert hook.conn_type == conn["connection-type"]
        assert hook.get_ui_field_behaviour()["hidden_fields"] == conn["ui-field-behaviour"]["hidden-fields"]


def test_every_module_on_disk_is_listed() -> None:
    info = get_provider_info()
    listed = {m for s in ("operators", "hooks", "sensors", "triggers") for e in info[s] for m in e["python-modules"]}
    for kind in ("operators", "hooks", "sensors", "triggers"):
        for f in (PKG / kind).glob("*.py"):
            if f.stem != "__init__":
                assert f"mlops_provider.{kind}.{f.stem}" in listed, f"{kind}/{f.name} missing from get_provider_info"
    notifier_modules = {n.rsplit(".", 1)[0] for n in info["notifications"]}
    for f in (PKG / "notifications").glob("*.py"):
        if f.stem != "__init__":
            assert f"mlops_provider.notifications.{f.stem}" in notifier_modules, f"notifications/{f.name} not listed"
    links = {link.rsplit(".", 1)[0] for link in info["extra-links"]}
    for f in (PKG / "links").glob("*.py"):
        if f.stem not in ("__init__", "base"):  # base: the shared XComUrlLink, not a link itself
            assert f"mlops_provider.links.{f.stem}" in links


def test_airflow_cli_shows_the_provider(tmp_path: Path) -> None:
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow")}
    out = subprocess.run(
        [sys.executable, "-m", "airflow", "providers", "get", "airflow-provider-mlops", "--full", "-o", "json"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    data = json.loads(out.stdout[out.stdout.index("["):])
    info = data[0] if isinstance(data, list) else data
    text = json.dumps(info)
    for needle in ("FeastHook", "MLflowHook", "BentoMLHook", "mlops_provider.triggers.data_arrival", "MLflowRunLink",
                   "mlops_provider.operators.training", "\"connection-type\": \"mlflow\"", "WebhookAlertNotifier"):
        assert needle in text or needle in text.lower(), needle


def test_hooks_give_form_widgets_without_fab() -> None:
    """Legacy form widgets never raise: {} without wtforms, one field per conn-field with it."""
    from mlops_provider.connection_forms import CONNECTION_TYPES

    for conn in get_provider_info()["connection-types"]:
        widgets = _import(conn["hook-class-name"]).get_connection_form_widgets()
        assert widgets == {} or set(widgets) == set(CONNECTION_TYPES[conn["connection-type"]]["conn-fields"])
