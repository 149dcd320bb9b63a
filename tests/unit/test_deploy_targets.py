"""Deploy targets without a cluster or a cloud: Kubernetes manifests validated against the API models and
applied through the cncf.kubernetes KubernetesHook to a loopback stand-in of the API server; BentoCloud
call building; containerize without a Docker engine; live-version verification; the deploy DAG shape
per target and the optional batch DAG."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_stubs import FakeKubernetesApi as _FakeApiServer

from mlops_provider.exceptions import (
    BentoCloudNotConfigured,
    ContainerEngineUnavailable,
    DeploymentError,
    LiveVersionMismatch,
)

REPO = Path(__file__).resolve().parents[2]
TAG = "flights_delay_service:v3-0123456789ab"


# ---------------------------------------------------------------------------- kubernetes: render + validate
def _render(**kw: Any) -> list[dict[str, Any]]:
    from mlops_provider.runtime.serving.targets.kubernetes import render_manifests

    args: dict[str, Any] = dict(
        name="flights_delay-serving", bento_tag=TAG, model_name="flights_delay", model_version="3", namespace="ml"
    )
    args.update(kw)
    return render_manifests(**args)


def test_manifests_deserialize_into_the_kubernetes_api_models() -> None:
    from kubernetes.client import V1Deployment, V1Service, V2HorizontalPodAutoscaler

    from mlops_provider.runtime.serving.targets.kubernetes import validate_manifests

    dep, svc, hpa = validate_manifests(_render(replicas=3, image_registry="registry.example.com/ml"))
    assert isinstance(dep, V1Deployment) and isinstance(svc, V1Service)
    assert isinstance(hpa, V2HorizontalPodAutoscaler)
    assert dep.metadata.name == "flights-delay-serving" and dep.metadata.namespace == "ml"
    assert dep.spec.replicas == 3
    assert dep.spec.strategy.type == "RollingUpdate"
    assert dep.spec.strategy.rolling_update.max_unavailable == 0 and dep.spec.strategy.rolling_update.max_surge == 1
    (c,) = dep.spec.template.spec.containers
    assert c.image == f"registry.example.com/ml/{TAG}"
    assert c.readiness_probe.http_get.path == "/readyz" and c.liveness_probe.http_get.path == "/livez"
    assert c.ports[0].container_port == 3000 and c.resources.requests["cpu"] == "500m"
    assert dep.spec.selector.match_labels.items() <= dep.spec.template.metadata.labels.items()
    assert dep.spec.template.metadata.labels["mlops/model-version"] == "3"
    assert dep.spec.template.metadata.annotations["mlops/bento-tag"] == TAG
    assert svc.spec.selector == dep.spec.selector.match_labels and svc.spec.ports[0].target_port == "http"
    assert hpa.spec.scale_target_ref.name == dep.metadata.name
    assert hpa.spec.min_replicas == 3 and hpa.spec.max_replicas == 6
    assert hpa.spec.metrics[0].resource.target.average_utilization == 70


def test_invalid_manifests_are_rejected() -> None:
    from mlops_provider.runtime.serving.targets.kubernetes import validate_manifests

    dep, svc, hpa = _render()
    typo = {**dep, "spec": {**dep["spec"], "replicaz": 2}}
    with pytest.raises(DeploymentError, match="not in the API model"):
        validate_manifests([typo])
    unsafe = json.loads(json.dumps(dep))
    unsafe["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] = 1
    with pytest.raises(DeploymentError, match="maxUnavailable 0"):
        validate_manifests([unsafe])
    no_probe = json.loads(json.dumps(dep))
    del no_probe["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    with pytest.raises(DeploymentError, match="readiness probe"):
        validate_manifests([no_probe])
    with pytest.raises(DeploymentError, match="replicas"):
        _render(replicas=0)


def test_label_values_are_sanitised() -> None:
    from mlops_provider.runtime.serving.targets.kubernetes import label_value

    v = label_value("weird model:v1+local/" + "x" * 80)
    assert len(v) <= 63 and v[0].isalnum() and v[-1].isalnum() and ":" not in v and "/" not in v


def test_render_only_without_a_connection(tmp_path: Path) -> None:
    from mlops_provider.operators.bentoml import kubernetes_api_client
    from mlops_provider.runtime.serving.targets.kubernetes import deploy_kubernetes

    assert kubernetes_api_client("kubernetes_not_configured") is None  # the operator resolves no client
    out = deploy_kubernetes(
        bento_tag=TAG, model_name="flights_delay", model_version="3", out_dir=tmp_path,
        api_client=None, conn_id="kubernetes_not_configured", namespace="ml",
    )
    assert out["mode"] == "render-only" and out["applied"] == []
    docs = list(yaml.safe_load_all(Path(out["manifests_path"]).read_text()))
    assert [d["kind"] for d in docs] == ["Deployment", "Service", "HorizontalPodAutoscaler"]
    assert docs == _render(name="flights_delay-serving")  # the file is exactly what was validated


@pytest.fixture
def k8s_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[_FakeApiServer]:
    server = _FakeApiServer()
    kubeconfig = {
        "apiVersion": "v1", "kind": "Config", "current-context": "t",
        "clusters": [{"name": "t", "cluster": {"server": server.url}}],
        "contexts": [{"name": "t", "context": {"cluster": "t", "user": "t"}}],
        "users": [{"name": "t", "user": {"token": "dummy"}}],
    }
    monkeypatch.setenv(
        "AIRFLOW_CONN_KUBERNETES_TEST",
        json.dumps({"conn_type": "kubernetes", "extra": {"kube_config": json.dumps(kubeconfig)}}),
    )
    yield server
    server.httpd.shutdown()


def test_apply_through_the_kubernetes_hook_creates_then_patches(k8s_api: _FakeApiServer, tmp_path: Path) -> None:
    from mlops_provider.operators.bentoml import kubernetes_api_client
    from mlops_provider.runtime.serving.targets.kubernetes import deploy_kubernetes

    kw: dict[str, Any] = dict(bento_tag=TAG, model_name="flights_delay", model_version="3", out_dir=tmp_path,
                              api_client=kubernetes_api_client("kubernetes_test"), namespace="ml", replicas=2)
    first = deploy_kubernetes(**kw)
    assert first["mode"] == "applied"
    assert [(a["kind"], a["action"]) for a in first["applied"]] == [
        ("Deployment", "created"), ("Service", "created"), ("HorizontalPodAutoscaler", "created")]
    assert first["rollout"] == {"replicas": 2, "available": 2, "updated": 2}
    dep = k8s_api.objects["/apis/apps/v1/namespaces/ml/deployments/flights-delay-serving"]
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert "/apis/autoscaling/v2/namespaces/ml/horizontalpodautoscalers/flights-delay-serving" in k8s_api.objects
    second = deploy_kubernetes(**kw)
    assert [a["action"] for a in second["applied"]] == ["patched"] * 3
    assert sum(1 for m, _ in k8s_api.calls if m == "POST") == 3


# ---------------------------------------------------------------------------- bentocloud
def test_bentocloud_call_building() -> None:
    from mlops_provider.runtime.serving.targets.bentocloud import deployment_kwargs

    kw = deployment_kwargs(name="flights-delay-serving", bento_tag=TAG, cluster="gcp-us", scaling_min=1,
                           scaling_max=4, instance_type="cpu.2", envs={"B": "2", "A": "1"}, labels={"model": "fd"})
    assert kw == {
        "name": "flights-delay-serving", "bento": TAG, "scaling_min": 1, "scaling_max": 4, "cluster": "gcp-us",
        "instance_type": "cpu.2", "strategy": "RollingUpdate", "access_authorization": True,
        "envs": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
        "labels": [{"key": "model", "value": "fd"}],
    }
    with pytest.raises(DeploymentError, match="scaling"):
        deployment_kwargs(name="x", bento_tag=TAG, scaling_min=3, scaling_max=2)


def test_bentocloud_without_credentials_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlops_provider.runtime.serving.package import bentoml_home
    from mlops_provider.runtime.serving.targets.bentocloud import cloud_client

    for var in ("BENTO_CLOUD_API_KEY", "BENTO_CLOUD_API_ENDPOINT", "BENTOML_CLOUD_CONTEXT"):
        monkeypatch.delenv(var, raising=False)
    with bentoml_home(tmp_path), pytest.raises(BentoCloudNotConfigured, match="BENTO_CLOUD_API_KEY"):
        from bentoml._internal.configuration.containers import BentoMLContainer

        with BentoMLContainer.cloud_config.patch(tmp_path / ".yatai.yaml"):
            cloud_client()


def test_bentocloud_creates_then_updates() -> None:
    from bentoml.exceptions import NotFound

    from mlops_provider.runtime.serving.targets.bentocloud import deploy_bentocloud, deployment_kwargs

    class Deployment:
        def wait_until_ready(self, timeout: int) -> int:
            return 0

        def get_endpoint_urls(self) -> list[str]:
            return ["https://fd.example.bentoml.ai"]

    class Api:
        def __init__(self) -> None:
            self.calls: list[tuple[str, dict[str, Any]]] = []
            self.exists = False

        def get(self, **kw: Any) -> Deployment:
            self.calls.append(("get", kw))
            if not self.exists:
                raise NotFound("no such deployment")
            return Deployment()

        def create(self, **kw: Any) -> Deployment:
            self.calls.append(("create", kw))
            self.exists = True
            return Deployment()

        def update(self, **kw: Any) -> Deployment:
            self.calls.append(("update", kw))
            return Deployment()

    api, client = Api(), object()
    kw = deployment_kwargs(name="fd", bento_tag=TAG)
    first = deploy_bentocloud(kw, client=client, api=api, push=False)
    second = deploy_bentocloud(kw, client=client, api=api, push=False)
    assert (first["action"], second["action"]) == ("created", "updated")
    assert first["url"] == "https://fd.example.bentoml.ai"
    create = [c for n, c in api.calls if n == "create"][0]
    assert create["bento"] == TAG and create["_cloud_client"] is client


# ---------------------------------------------------------------------------- containerize
def test_containerize_without_a_docker_engine_skips_with_the_reason(tmp_path: Path) -> None:
    from airflow.sdk.exceptions import AirflowSkipException

    from mlops_provider.operators.bentoml import BentoContainerizeOperator
    from mlops_provider.runtime.serving.containerize import containerize, docker_engine

    available, detail = docker_engine()
    if available:
        pytest.skip(f"a Docker engine answers here ({detail})")
    with pytest.raises(ContainerEngineUnavailable, match="no Docker engine") as err:
        containerize(TAG, bentoml_home_dir=tmp_path)
    assert f"bentoml containerize {TAG}" in str(err.value)  # says what to run where an engine exists
    op = BentoContainerizeOperator(task_id="containerize", bento_tag=TAG)
    with pytest.raises(AirflowSkipException, match="no Docker engine"):
        op.execute({})  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- live version
@pytest.fixture
def health_server() -> Iterator[tuple[str, dict[str, Any]]]:
    reported: dict[str, Any] = {"status": "ok", "bento_tag": TAG, "model_version": "3"}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            data = json.dumps(reported).encode()
            self.send_response(200 if self.path == "/health" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", reported
    httpd.shutdown()


def test_live_version_is_verified(health_server: tuple[str, dict[str, Any]]) -> None:
    from mlops_provider.runtime.serving.checks import verify_live_version

    url, reported = health_server
    assert verify_live_version(url, bento_tag=TAG, model_version="3")["bento_tag"] == TAG
    reported["bento_tag"] = "flights_delay_service:v2-aaaaaaaaaaaa"  # the platform rolled back silently
    with pytest.raises(LiveVersionMismatch, match="silent rollback") as err:
        verify_live_version(url, bento_tag=TAG)
    assert err.value.live["bento_tag"].startswith("flights_delay_service:v2")
    with pytest.raises(DeploymentError, match="Cannot ask"):
        verify_live_version("http://127.0.0.1:9", bento_tag=TAG, timeout=2)


def test_deploy_operator_rejects_an_unknown_target() -> None:
    from mlops_provider.operators.bentoml import BentoDeployOperator

    op = BentoDeployOperator(task_id="deploy", bento_tag=TAG, state_dir="/nonexistent", target="mainframe")
    with pytest.raises(DeploymentError, match="Unknown deployment target 'mainframe'"):
        op.execute({})  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- DAG shape per target
@pytest.fixture(scope="module")
def cfg():
    from mlops_provider.config import load_config

    return load_config(REPO / "dags" / "flights_delay.yaml")


def _with_serving(cfg: Any, **serving: Any) -> Any:
    from mlops_provider.config import ServingConfig

    return cfg.model_copy(update={"serving": ServingConfig.parse({**cfg.serving.model_dump(), **serving})})


def _chain(dag: Any) -> list[str]:
    order, task = [], next(t for t in dag.tasks if not t.upstream_task_ids)
    while task is not None:
        order.append(task.task_id)
        nxt = sorted(task.downstream_task_ids)
        task = dag.get_task(nxt[0]) if nxt else None
    return order


def test_deploy_dag_per_target(cfg: Any) -> None:
    from mlops_provider.factory import PipelineAssets, build_deploy_dag

    local = build_deploy_dag(cfg, PipelineAssets(cfg))
    assert _chain(local) == ["package", "infra_validate", "deploy", "smoke_test"]
    assert local.get_task("smoke_test").expected_bento_tag.startswith("{{")
    k8s_cfg = _with_serving(cfg, target="kubernetes", kubernetes={"namespace": "ml", "replicas": 3})
    k8s = build_deploy_dag(k8s_cfg, PipelineAssets(k8s_cfg))
    assert _chain(k8s) == ["package", "infra_validate", "containerize", "deploy"]
    dep = k8s.get_task("deploy")
    assert dep.target == "kubernetes" and dep.kubernetes["replicas"] == 3 and dep.trigger_rule == "none_failed"
    assert [o.name for o in dep.outlets] == ["bento/flights_delay"]
    cloud_cfg = _with_serving(cfg, target="bentocloud", infra_validate={"enabled": False})
    cloud = build_deploy_dag(cloud_cfg, PipelineAssets(cloud_cfg))
    assert _chain(cloud) == ["package", "deploy"]


def test_batch_dag_only_when_configured(cfg: Any, tmp_path: Path) -> None:
    from mlops_provider.factory import build_dags

    assert "flights_delay__batch_predict" not in build_dags(cfg)
    with_batch = _with_serving(cfg, batch={"source": str(tmp_path / "src"), "output": "s3://bucket/scores",
                                           "window_hours": 6})
    dags = build_dags(with_batch)
    task = dags["flights_delay__batch_predict"].get_task("batch_predict")
    assert task.output_root == "s3://bucket/scores" and "hours=6" in task.window_start
    assert task.features == cfg.training.features.model_dump()


# ---------------------------------------------------------------------------- stable front (local target)
def _upstream(version: str) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            n = int(self.headers.get("Content-Length") or 0)
            sent = json.loads(self.rfile.read(n) or b"{}")
            data = json.dumps({"version": version, "path": self.path, "echo": sent}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def test_stable_front_switches_without_failed_requests(tmp_path: Path) -> None:
    import time

    import httpx

    from mlops_provider.runtime.serving.front import ensure_front, is_front, stop_front
    from mlops_provider.runtime.serving.process import free_port
    from mlops_provider.runtime.serving.state import write_state

    blue, green = _upstream("1"), _upstream("2")
    write_state(tmp_path, {"bento_tag": "b:1", "url": f"http://127.0.0.1:{blue.server_address[1]}"})
    front = ensure_front("127.0.0.1", free_port(), tmp_path)
    try:
        assert ensure_front("127.0.0.1", front["port"], tmp_path)["pid"] == front["pid"]  # idempotent
        seen: list[str] = []
        failures: list[str] = []
        stop = threading.Event()

        def client() -> None:
            with httpx.Client(timeout=10) as http:
                while not stop.is_set():
                    try:
                        r = http.post(f"{front['url']}/predict?x=1", json={"requests": [1]})
                        assert r.json()["path"] == "/predict?x=1" and r.json()["echo"] == {"requests": [1]}
                        seen.append(r.json()["version"])
                    except Exception as e:  # noqa: BLE001
                        failures.append(repr(e))

        threads = [threading.Thread(target=client) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        write_state(tmp_path, {"bento_tag": "b:2", "url": f"http://127.0.0.1:{green.server_address[1]}"})
        time.sleep(0.5)  # drain
        blue.shutdown()
        blue.server_close()
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        assert failures == []
        assert seen[0] == "1" and seen[-1] == "2" and "2" in seen
        assert httpx.get(f"{front['url']}/__front__", timeout=5).json()["upstream"].endswith(str(green.server_address[1]))
    finally:
        stop_front(tmp_path)
        green.shutdown()
    assert not is_front(front["pid"], front["proc_start"])
    assert not (tmp_path / "front.json").exists()
