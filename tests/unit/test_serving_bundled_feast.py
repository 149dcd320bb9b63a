"""The bento's bundled Feast YAML follows the feast connection (runtime.serving.package._bundle_connection):
the served process reads the registry and online store the tasks use, and no secret enters the bento."""

from __future__ import annotations

from pathlib import Path

import yaml

from mlops_provider.runtime.serving.package import (
    FEAST_ONLINE_STORE_PASSWORD_ENV,
    FEAST_PASSWORD_ENV,
    _bundle_connection,
)

YAML = {
    "project": "p",
    "provider": "local",
    "registry": {"registry_type": "sql", "path": "postgresql+psycopg://postgres@127.0.0.1:5432/test"},
    "online_store": {"type": "redis", "connection_string": "127.0.0.1:6379"},
    "entity_key_serialization_version": 3,
}


def _bundle(tmp_path: Path, overrides: dict | None, password: str | None = None) -> tuple[dict, list[str]]:
    path = tmp_path / "feature_store.production.yaml"
    path.write_text(yaml.safe_dump(YAML))
    needed = _bundle_connection(path, overrides, password)
    return yaml.safe_load(path.read_text()), needed


def test_the_connections_registry_and_online_store_reach_the_bundled_yaml(tmp_path) -> None:
    data, needed = _bundle(tmp_path, {"registry": {"path": "postgresql+psycopg://feast@db:5432/reg"},
                                      "online_store": {"connection_string": "redis:6379,db=3"}})
    assert data["registry"] == {"registry_type": "sql", "path": "postgresql+psycopg://feast@db:5432/reg"}
    assert data["online_store"] == {"type": "redis", "connection_string": "redis:6379,db=3"}
    assert needed == []


def test_secrets_become_environment_references(tmp_path) -> None:
    data, needed = _bundle(tmp_path, {"registry": {"path": "postgresql+psycopg://feast:s3cret@db:5432/reg"}},
                           password="hunter2")
    text = (tmp_path / "feature_store.production.yaml").read_text()
    assert "s3cret" not in text and "hunter2" not in text
    assert data["registry"]["path"] == f"postgresql+psycopg://feast:${{{FEAST_PASSWORD_ENV}}}@db:5432/reg"
    assert data["online_store"]["connection_string"] == f"127.0.0.1:6379,password=${{{FEAST_ONLINE_STORE_PASSWORD_ENV}}}"
    assert needed == sorted([FEAST_PASSWORD_ENV, FEAST_ONLINE_STORE_PASSWORD_ENV])


def test_references_and_inline_online_passwords_are_left_alone(tmp_path) -> None:
    data, needed = _bundle(tmp_path, {"registry": {"path": "postgresql+psycopg://feast:${REG_PW}@db:5432/reg"},
                                      "online_store": {"connection_string": "redis:6379,password=${RPW}"}},
                           password="hunter2")
    assert data["registry"]["path"] == "postgresql+psycopg://feast:${REG_PW}@db:5432/reg"
    assert data["online_store"]["connection_string"] == "redis:6379,password=${RPW}"
    assert needed == []
