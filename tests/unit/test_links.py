"""Every extra link is a URL Airflow 3.3's UI renders and a logged-in user can open (http(s) or same-origin)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from mlops_provider.get_provider_info import get_provider_info
from mlops_provider.links.base import is_openable, plugin_url
from mlops_provider.links.bentoml import BentoEndpointLink
from mlops_provider.links.drift import DriftReportLink
from mlops_provider.links.gate import GateVerdictLink, ModelCardLink
from mlops_provider.links.mlflow import MLflowRunLink
from mlops_provider.links.validation import ValidationReportLink


class _TI:
    def __init__(self) -> None:
        self.pushed: dict[str, str] = {}
        self.dag_id, self.run_id = "flights_delay__monitor", "manual__1"

    def xcom_push(self, key: str, value: str) -> None:
        self.pushed[key] = value


def _ctx(dag_id: str = "flights_delay__monitor") -> dict:
    ti = _TI()
    ti.dag_id = dag_id
    return {"ti": ti, "dag_run": SimpleNamespace(dag_id=dag_id, run_id="manual__1")}


def test_plugin_urls_are_same_origin_paths(monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://127.0.0.1:8080")
    assert plugin_url("models", "m", "versions", 3, "card") == "/mlops/models/m/versions/3/card"
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://example.com/airflow/")
    assert plugin_url("runs", "abc") == "/airflow/mlops/runs/abc"
    assert plugin_url("models", "m", "reports", "drift", "a b:c.html") == "/airflow/mlops/models/m/reports/drift/a%20b%3Ac.html"


@pytest.mark.parametrize("url,ok", [("file:///x/report.html", False), ("runs:/abc", False), ("s3://b/k", False),
                                    ("http://mlflow:5000/#/x", True), ("/mlops/x", True), ("//evil/x", False)])
def test_only_openable_urls_are_pushed(url, ok) -> None:
    assert is_openable(url) is ok
    ctx = _ctx()
    DriftReportLink.push(ctx, url)
    assert (DriftReportLink.key in ctx["ti"].pushed) is ok


def test_links_with_and_without_an_mlflow_web_ui(monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://127.0.0.1:8080")
    assert MLflowRunLink.url(None, "r1") == "/mlops/runs/r1"
    assert MLflowRunLink.url("https://mlflow.example.com/", "r1", "7") == "https://mlflow.example.com/#/experiments/7/runs/r1"
    assert ModelCardLink.url("m", 3) == "/mlops/models/m/versions/3/card"
    assert ModelCardLink.url("m", 3, "https://mlflow.example.com") == "https://mlflow.example.com/#/models/m/versions/3"
    ctx = _ctx("m__training")
    GateVerdictLink.push_all(ctx, "m", 3)
    assert ctx["ti"].pushed == {"gate_verdict_url": "/mlops/models/m/versions/3/verdict",
                                "model_card_url": "/mlops/models/m/versions/3/card"}


def test_report_links_name_the_model_and_the_file(monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://127.0.0.1:8080")
    ctx = _ctx("flights_delay__monitor")
    DriftReportLink.persist(ctx, "/home/x/.mlops/reports/flights_delay/drift/drift__flights_delay__v1__a__b.html")
    assert ctx["ti"].pushed["drift_report_url"] == "/mlops/models/flights_delay/reports/drift/drift__flights_delay__v1__a__b.html"
    ctx = _ctx("flights_delay__features")
    ValidationReportLink.persist(ctx, "s3://bucket/reports/validation/landing__r1.html")
    assert ctx["ti"].pushed["validation_report_url"] == "/mlops/models/flights_delay/reports/validation/landing__r1.html"
    ctx = _ctx("flights_delay__deploy")
    BentoEndpointLink.persist(ctx, "http://127.0.0.1:3000")
    assert ctx["ti"].pushed["bento_endpoint_url"] == "/mlops/models/flights_delay/endpoint"


def test_mlflow_hook_run_url_is_never_a_runs_uri(monkeypatch) -> None:
    from mlops_provider.hooks.mlflow import MLflowHook

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(MLflowHook, "_lookup_connection", lambda self: None)
    assert MLflowHook("x").run_url("abc", "1").endswith("/mlops/runs/abc")


def test_every_link_class_is_registered() -> None:
    links = get_provider_info()["extra-links"]
    for cls in (MLflowRunLink, ModelCardLink, GateVerdictLink, DriftReportLink, ValidationReportLink,
                BentoEndpointLink):
        assert f"{cls.__module__}.{cls.__name__}" in links
