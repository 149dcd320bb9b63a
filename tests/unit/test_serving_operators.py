"""BentoML hook (no connection needed), operators' construction contract and the endpoint link."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops_provider.hooks.bentoml import BentoMLConfig, BentoMLHook
from mlops_provider.links.bentoml import BENTO_ENDPOINT_XCOM_KEY, BentoEndpointLink
from mlops_provider.operators.bentoml import BentoDeployOperator, BentoPackageOperator, BentoSmokeTestOperator
from mlops_provider.paths import ModelPaths


def test_hook_metadata() -> None:
    assert BentoMLHook.conn_name_attr == "bentoml_conn_id"
    assert BentoMLHook.default_conn_name == "bentoml_default"
    assert BentoMLHook.conn_type == "bentoml" and BentoMLHook.hook_name == "BentoML"
    ui = BentoMLHook.get_ui_field_behaviour()
    assert "host" in ui["relabeling"] and "bentoml_home" in ui["placeholders"]


def test_hook_without_connection_uses_the_embedded_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BENTOML_HOME", raising=False)
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    hook = BentoMLHook()
    assert hook.bentoml_home == str(ModelPaths.for_model("x", tmp_path).bentoml_home)
    assert hook.url is None and hook.headers() == {}
    assert hook.env() == {"BENTOML_HOME": hook.bentoml_home}
    assert hook.get_conn().source == "embedded"
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "custom"))
    assert BentoMLHook().bentoml_home == str(tmp_path / "custom")


def test_hook_reads_a_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_BENTOML_TEST",
        '{"conn_type": "bentoml", "host": "serving.internal", "port": 3000, '
        '"extra": {"bentoml_home": "/srv/bentoml", "api_token": "s3cr3t"}}',
    )
    cfg = BentoMLHook("bentoml_test").get_conn()
    assert cfg.url == "http://serving.internal:3000" and cfg.bentoml_home == "/srv/bentoml"
    assert cfg.headers() == {"Authorization": "Bearer s3cr3t"}
    assert "s3cr3t" not in repr(cfg) and "s3cr3t" not in str(cfg.public())


def test_config_repr_hides_token() -> None:
    assert "tok" not in repr(BentoMLConfig(bentoml_home="/h", api_token="tok"))


def test_operators_store_arguments_only() -> None:
    pkg = BentoPackageOperator(
        task_id="package", model_name="flights_delay", feature_repo="/nonexistent/repo",
        feature_service="flights_delay_v1", features={"categorical": ["origin"], "numeric": ["temp"]},
        inference_log_dir="/nonexistent/log",
    )
    assert pkg.alias == "champion" and pkg.mlflow_conn_id == "mlflow_default"
    assert {"feature_repo", "inference_log_dir"} <= set(pkg.template_fields)
    dep = BentoDeployOperator(task_id="deploy", bento_tag="{{ ti.xcom_pull('package')['bento_tag'] }}",
                              state_dir="/nonexistent/state")
    assert "bento_tag" in dep.template_fields and dep.port == 3000 and dep.host == "127.0.0.1"
    assert any(isinstance(link, BentoEndpointLink) for link in dep.operator_extra_links)
    smoke = BentoSmokeTestOperator(task_id="smoke", url="{{ x }}", request={"origin": "JFK"})
    assert {"url", "request"} <= set(smoke.template_fields)


def test_endpoint_link() -> None:
    link = BentoEndpointLink()
    assert link.name == "BentoML endpoint" and link.xcom_key == BENTO_ENDPOINT_XCOM_KEY
    assert link.get_link(None, ti_key=None) == ""  # never breaks the UI


def test_bentocloud_hook_resolves_the_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops_provider.hooks.bentocloud import BentoCloudHook

    assert BentoCloudHook.default_conn_name == "bentocloud_default" and BentoCloudHook.conn_type == "bentocloud"
    assert BentoCloudHook("bentocloud_not_configured").settings().api_key is None  # env / CLI login then
    monkeypatch.setenv(
        "AIRFLOW_CONN_BENTOCLOUD_TEST",
        '{"conn_type": "bentocloud", "host": "acme.cloud.bentoml.com", "password": "k3y"}',
    )
    s = BentoCloudHook("bentocloud_test").settings()
    assert s.api_key == "k3y" and s.endpoint == "https://acme.cloud.bentoml.com"
    assert "k3y" not in repr(s) and "k3y" not in str(s.public())
    monkeypatch.setenv(
        "AIRFLOW_CONN_BENTOCLOUD_TEST",
        '{"conn_type": "bentoml", "host": "http://cloud.internal/", "password": "p", "extra": {"api_token": "t"}}',
    )
    s = BentoCloudHook("bentocloud_test").settings()
    assert s.api_key == "t" and s.endpoint == "http://cloud.internal"  # extra wins; older type still read
