"""Deferrable remote deploys: the Kubernetes rollout, BentoCloud deployment and endpoint readiness triggers
(exact serialization; run against loopback stand-ins of the Kubernetes and BentoCloud APIs and a real HTTP
endpoint), and BentoDeployOperator deferring to them and completing with the blocking path's result."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred
from deploy_stubs import DelayedEndpoint, FakeBentoCloud, FakeKubernetesApi

from mlops_provider.exceptions import DeploymentError, LiveVersionMismatch
from mlops_provider.triggers.serving import (
    BentoCloudDeploymentTrigger,
    EndpointReadyTrigger,
    KubernetesRolloutTrigger,
)

FUTURE = "2999-01-01T00:00:00+00:00"  # serialization cases only
BENTO = "tiny:v1"
pytestmark = pytest.mark.timeout(180)


def _soon(seconds: float = 60) -> str:
    """A deadline that bounds every trigger run of these tests (none may wait forever)."""
    return (datetime.now(UTC) + timedelta(seconds=seconds)).isoformat()


def _past() -> str:
    return (datetime.now(UTC) - timedelta(seconds=1)).isoformat()


async def _collect(trigger: Any, limit: int = 3) -> list[dict[str, Any]]:
    out = []
    async for ev in trigger.run():
        out.append(ev.payload)
        if len(out) >= limit:
            break
    return out


def events(trigger: Any) -> list[dict[str, Any]]:
    return asyncio.run(_collect(trigger))


# ---------------------------------------------------------------------------- exact serialization
CASES = [
    (KubernetesRolloutTrigger, "mlops_provider.triggers.serving.KubernetesRolloutTrigger",
     {"name": "fd-serving", "namespace": "ml", "conn_id": "k8s_prod", "timeout": 600.0,
      "deadline": FUTURE, "poll_interval": 5.0, "poll_timeout": 30.0}),
    (BentoCloudDeploymentTrigger, "mlops_provider.triggers.serving.BentoCloudDeploymentTrigger",
     {"name": "fd-serving", "cluster": "gcp-us", "conn_id": "bentocloud_prod", "timeout": 900.0,
      "deadline": FUTURE, "poll_interval": 10.0, "poll_timeout": 30.0}),
    (EndpointReadyTrigger, "mlops_provider.triggers.serving.EndpointReadyTrigger",
     {"url": "https://fd.example", "bento_tag": BENTO, "bentoml_conn_id": "bentoml_prod", "timeout": 180.0,
      "deadline": None, "poll_interval": 2.0, "poll_timeout": 15.0}),
]


@pytest.mark.parametrize(("cls", "path", "kwargs"), CASES, ids=lambda v: getattr(v, "__name__", ""))
def test_trigger_serializes_exactly_and_round_trips(cls: type, path: str, kwargs: dict[str, Any]) -> None:
    trigger = cls(**kwargs)
    assert trigger.serialize() == (path, kwargs)
    module, _, name = path.rpartition(".")
    again = getattr(__import__(module, fromlist=[name]), name)(**json.loads(json.dumps(kwargs)))
    assert again.serialize() == (path, kwargs)


# ---------------------------------------------------------------------------- kubernetes rollout
@pytest.fixture
def k8s(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKubernetesApi]:
    server = FakeKubernetesApi()
    kubeconfig = {
        "apiVersion": "v1", "kind": "Config", "current-context": "t",
        "clusters": [{"name": "t", "cluster": {"server": server.url}}],
        "contexts": [{"name": "t", "context": {"cluster": "t", "user": "t"}}],
        "users": [{"name": "t", "user": {"token": "dummy"}}],
    }
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_TEST",
                       json.dumps({"conn_type": "kubernetes", "extra": {"kube_config": json.dumps(kubeconfig)}}))
    yield server
    server.httpd.shutdown()


DEP = "/apis/apps/v1/namespaces/ml/deployments/fd-serving"


def _seed(k8s: FakeKubernetesApi, replicas: int = 2) -> None:
    k8s.objects[DEP] = {"apiVersion": "apps/v1", "kind": "Deployment",
                        "metadata": {"name": "fd-serving", "namespace": "ml"},
                        "spec": {"replicas": replicas, "selector": {"matchLabels": {"a": "b"}},
                                 "template": {"metadata": {"labels": {"a": "b"}},
                                              "spec": {"containers": [{"name": "c", "image": "i"}]}}}}


def _rollout(**kw: Any) -> KubernetesRolloutTrigger:
    return KubernetesRolloutTrigger(**{"name": "fd-serving", "namespace": "ml", "conn_id": "kubernetes_test",
                                       "deadline": _soon(), "poll_interval": 0.05, **kw})


def test_rollout_trigger_polls_the_api_until_rolled_out(k8s: FakeKubernetesApi) -> None:
    _seed(k8s)
    k8s.pending = [{"updated": 1}, {"updated": 1}, {"updated": 2}]  # three reads mid-rollout, then rolled out
    assert events(_rollout()) == [
        {"status": "success", "stage": "rollout", "rollout": {"replicas": 2, "available": 2, "updated": 2}}]
    assert sum(1 for m, p in k8s.calls if m == "GET" and p.startswith(DEP + "/status")) == 4


def test_rollout_trigger_reports_a_stuck_rollout_and_a_missed_deadline(k8s: FakeKubernetesApi) -> None:
    _seed(k8s)
    k8s.pending = [{"updated": 1}, {"stuck": True}]
    (ev,) = events(_rollout())
    assert (ev["status"], ev["error_type"]) == ("error", "DeploymentError")
    assert "exceeded its progress deadline" in ev["message"] and "timed out progressing" in ev["message"]
    k8s.pending = [{"updated": 1}]
    (ev,) = events(_rollout(deadline=_past(), timeout=600))
    assert ev["status"] == "error" and ev["timeout"] is True
    assert "not complete within 600s" in ev["message"] and "1/2 updated" in ev["message"]


def test_rollout_trigger_error_events(k8s: FakeKubernetesApi) -> None:
    (ev,) = events(_rollout(conn_id="kubernetes_absent"))
    assert ev["status"] == "error" and "'kubernetes_absent' does not exist" in ev["message"]
    (ev,) = events(_rollout())  # no such Deployment: the API's 404 becomes one error event
    assert (ev["status"], ev["error_type"]) == ("error", "DeploymentError")
    assert "status of Deployment ml/fd-serving failed: 404" in ev["message"]


# ---------------------------------------------------------------------------- bentocloud
@pytest.fixture
def cloud(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBentoCloud]:
    server = FakeBentoCloud(["image-building", "deploying", "running"])
    monkeypatch.setenv("AIRFLOW_CONN_BENTOCLOUD_TEST", json.dumps(
        {"conn_type": "bentocloud", "host": server.endpoint, "password": "cloud-key"}))
    yield server
    server.httpd.shutdown()


def _cloud_trigger(**kw: Any) -> BentoCloudDeploymentTrigger:
    return BentoCloudDeploymentTrigger(**{"name": "fd-serving", "cluster": "gcp-us", "conn_id": "bentocloud_test",
                                          "deadline": _soon(), "poll_interval": 0.05, **kw})


def test_bentocloud_trigger_waits_until_running(cloud: FakeBentoCloud) -> None:
    assert events(_cloud_trigger()) == [{"status": "success", "stage": "bentocloud",
                                         "deployment": {"status": "running", "url": cloud.url}}]
    assert len(cloud.calls) == 3
    assert cloud.calls[0] == ("/api/v2/deployments/fd-serving?cluster=gcp-us", "cloud-key")  # the connection's key


def test_bentocloud_trigger_failed_state_and_deadline(cloud: FakeBentoCloud) -> None:
    cloud.statuses = ["deploying", "image-build-failed"]
    (ev,) = events(_cloud_trigger())
    assert ev["status"] == "error" and "status image-build-failed" in ev["message"]
    assert "keeps the previous revision serving" in ev["message"]
    cloud.statuses = ["deploying"]
    (ev,) = events(_cloud_trigger(deadline=_past(), timeout=900))
    assert ev["status"] == "error" and ev["timeout"] and "within 900s (status deploying)" in ev["message"]


# ---------------------------------------------------------------------------- endpoint readiness
@pytest.fixture
def endpoint() -> Iterator[DelayedEndpoint]:
    server = DelayedEndpoint(BENTO, delay=0.5, not_ready=2)
    yield server
    server.close()


def _ready(url: str, **kw: Any) -> EndpointReadyTrigger:
    return EndpointReadyTrigger(**{"url": url, "bento_tag": BENTO, "deadline": _soon(), "poll_interval": 0.1, **kw})


def test_ready_trigger_waits_for_a_late_endpoint(endpoint: DelayedEndpoint) -> None:
    (ev,) = events(_ready(endpoint.url))
    assert ev == {"status": "success", "stage": "ready", "url": endpoint.url,
                  "live": {"status": "ok", "bento_tag": BENTO, "model_version": "3"}}
    assert endpoint.readyz_calls == 3  # two 503s, then 200


def test_ready_trigger_names_a_silent_rollback_and_a_dead_endpoint(endpoint: DelayedEndpoint) -> None:
    endpoint.not_ready = 0
    endpoint.bento_tag = "tiny:v0"  # the platform kept the old version
    (ev,) = events(_ready(endpoint.url, deadline=(datetime.now(UTC) + timedelta(seconds=3)).isoformat()))
    assert ev["status"] == "error" and ev["error_type"] == "LiveVersionMismatch"
    assert ev["live"]["bento_tag"] == "tiny:v0" and "silent rollback" in ev["message"]
    (ev,) = events(_ready("http://127.0.0.1:9", deadline=_past(), timeout=60))
    assert ev["status"] == "error" and ev["error_type"] == "DeploymentError"
    assert "not ready within 60s" in ev["message"] and "unreachable" in ev["message"]


# ---------------------------------------------------------------------------- the operator
@pytest.fixture(scope="module")
def bento_home(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real (tiny) bento carrying the provider's bento_config.json, as the package task leaves it."""
    import bentoml

    from mlops_provider.runtime.serving.package import bentoml_home

    ctx = tmp_path_factory.mktemp("ctx")
    (ctx / "svc.py").write_text("import bentoml\n\n\n@bentoml.service\nclass Tiny:\n    @bentoml.api\n"
                                "    def ping(self) -> str:\n        return 'ok'\n")
    (ctx / "bento_config.json").write_text(json.dumps({"model_name": "fd", "model_version": "3"}))
    home = str(tmp_path_factory.mktemp("bentoml"))
    with bentoml_home(home):
        bentoml.bentos.build(service="svc:Tiny", name="tiny", version="v1", build_ctx=str(ctx),
                             include=["svc.py", "bento_config.json"])
    return home


@pytest.fixture
def bentoml_conn(monkeypatch: pytest.MonkeyPatch, bento_home: str) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_BENTOML_TEST",
                       json.dumps({"conn_type": "bentoml", "extra": {"bentoml_home": bento_home}}))


class _Ctx(dict):
    """The few context keys the deploy operator touches outside a DAG run (no outlets, no model link)."""


def _op(tmp_path: Path, target: str, **kw: Any) -> Any:
    from mlops_provider.operators.bentoml import BentoDeployOperator

    return BentoDeployOperator(task_id="deploy", bento_tag=BENTO, state_dir=str(tmp_path), target=target,
                               bentoml_conn_id="bentoml_test", poll_interval=0.05, ready_timeout=30, **kw)


def _through_the_db(kwargs: dict[str, Any]) -> dict[str, Any]:
    """next_kwargs as the task runner stores them and hands them back (Airflow's serde)."""
    from airflow.sdk.serde import deserialize, serialize

    return dict(deserialize(json.loads(json.dumps(serialize(kwargs)))))


def _drive(op: Any, context: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Run the task as Airflow does: execute, then each trigger in turn and execute_complete with its event."""
    seen: list[str] = []
    try:
        return op.execute(context), seen
    except TaskDeferred as d:
        deferred = d
    while True:
        seen.append(type(deferred.trigger).__name__)
        assert deferred.method_name == "execute_complete" and deferred.timeout is not None
        (ev,) = events(deferred.trigger)
        kwargs = _through_the_db(deferred.kwargs or {})
        try:
            return op.execute_complete(context, event=ev, **kwargs), seen
        except TaskDeferred as d:
            deferred = d


@pytest.fixture
def link_pushes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    from mlops_provider.links.bentoml import BentoEndpointLink

    pushed: list[str] = []
    monkeypatch.setattr(BentoEndpointLink, "persist", classmethod(lambda cls, ctx, url: pushed.append(url)))
    return pushed


def test_kubernetes_deploy_defers_twice_and_returns_the_blocking_result(
    k8s: FakeKubernetesApi, endpoint: DelayedEndpoint, bentoml_conn: None, tmp_path: Path, link_pushes: list[str]
) -> None:
    kube = {"conn_id": "kubernetes_test", "namespace": "ml", "name": "fd-serving", "replicas": 2, "url": endpoint.url}
    op = _op(tmp_path, "kubernetes", kubernetes=kube, deferrable=True)
    k8s.pending = [{"updated": 1}, {"updated": 2}]
    deferred_result, seen = _drive(op, _Ctx())
    assert seen == ["KubernetesRolloutTrigger", "EndpointReadyTrigger"]
    blocking, none = _drive(_op(tmp_path, "kubernetes", kubernetes=kube, deferrable=False), _Ctx())
    assert none == []
    assert [a["action"] for a in deferred_result.pop("applied")] == ["created"] * 3
    assert [a["action"] for a in blocking.pop("applied")] == ["patched"] * 3  # the same objects, re-applied
    assert deferred_result == blocking  # otherwise the same XCom either way
    assert deferred_result["rollout"] == {"replicas": 2, "available": 2, "updated": 2}
    assert deferred_result["live"]["bento_tag"] == BENTO and deferred_result["url"] == endpoint.url
    assert link_pushes == [endpoint.url, endpoint.url]


def test_bentocloud_deploy_defers_and_learns_the_url(
    cloud: FakeBentoCloud, endpoint: DelayedEndpoint, bentoml_conn: None, tmp_path: Path, link_pushes: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The create-or-update itself needs BentoCloud's write API (not stood in here): resume from its result."""
    cloud.url = endpoint.url
    op = _op(tmp_path, "bentocloud", bentocloud={"conn_id": "bentocloud_test", "name": "fd-serving",
                                                 "cluster": "gcp-us"}, deferrable=True)
    created = {"name": "fd-serving", "url": None, "action": "created", "cluster": "gcp-us", "bento_tag": BENTO,
               "changed": True, "target": "bentocloud"}
    with pytest.raises(TaskDeferred) as d:
        op._defer_next(dict(created), after="deploy")
    assert isinstance(d.value.trigger, BentoCloudDeploymentTrigger)
    assert d.value.trigger.serialize()[1]["timeout"] == 900.0
    (ev,) = events(d.value.trigger)
    with pytest.raises(TaskDeferred) as d2:
        op.execute_complete(_Ctx(), event=ev, **_through_the_db(d.value.kwargs))
    assert isinstance(d2.value.trigger, EndpointReadyTrigger) and d2.value.trigger.url == endpoint.url
    (ev,) = events(d2.value.trigger)
    result = op.execute_complete(_Ctx(), event=ev, **_through_the_db(d2.value.kwargs))
    assert result == {**created, "url": endpoint.url, "live": {"status": "ok", "bento_tag": BENTO,
                                                               "model_version": "3"}}
    assert link_pushes == [endpoint.url]


def test_execute_complete_raises_named_errors(tmp_path: Path) -> None:
    op = _op(tmp_path, "kubernetes", deferrable=True)
    with pytest.raises(DeploymentError, match="the rollout wait in the triggerer failed: DeploymentError: stuck"):
        op.execute_complete(_Ctx(), event={"status": "error", "stage": "rollout", "error_type": "DeploymentError",
                                           "message": "stuck"}, result={})
    with pytest.raises(LiveVersionMismatch) as err:
        op.execute_complete(_Ctx(), event={"status": "error", "stage": "ready", "error_type": "LiveVersionMismatch",
                                           "message": "serves tiny:v0", "live": {"bento_tag": "tiny:v0"}},
                            result={})
    assert err.value.live == {"bento_tag": "tiny:v0"}
    with pytest.raises(DeploymentError):
        op.execute_complete(_Ctx(), event=None, result={})


def test_render_only_kubernetes_never_defers(bentoml_conn: None, tmp_path: Path) -> None:
    op = _op(tmp_path, "kubernetes", kubernetes={"conn_id": "kubernetes_absent"}, deferrable=True)
    result = op.execute(_Ctx())  # no connection: rendered only, nothing to wait for
    assert result["mode"] == "render-only" and "live" not in result


def test_deferrable_defaults_to_airflows_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from mlops_provider.sensors.feast import FeatureFreshnessSensor

    monkeypatch.delenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", raising=False)
    assert _op(tmp_path, "kubernetes").deferrable is False
    assert FeatureFreshnessSensor(task_id="f", repo_path="/r", feature_service="s").deferrable is False
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "true")
    assert _op(tmp_path, "kubernetes").deferrable is True
    assert FeatureFreshnessSensor(task_id="f", repo_path="/r", feature_service="s").deferrable is True
    assert _op(tmp_path, "kubernetes", deferrable=False).deferrable is False  # an explicit value wins


def test_the_yaml_sets_deferrable_on_the_deploy_task(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops_provider.config import ServingConfig, load_config
    from mlops_provider.factory import PipelineAssets, build_deploy_dag

    monkeypatch.delenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", raising=False)
    cfg = load_config(Path(__file__).resolve().parents[2] / "dags" / "flights_delay.yaml")
    for value, expected in ((None, False), (True, True), (False, False)):
        serving = ServingConfig.parse({**cfg.serving.model_dump(), "target": "kubernetes", "deferrable": value})
        c = cfg.model_copy(update={"serving": serving})
        assert build_deploy_dag(c, PipelineAssets(c)).get_task("deploy").deferrable is expected
