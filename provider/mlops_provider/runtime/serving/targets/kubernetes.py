"""Kubernetes deployment target: render Deployment / Service / HPA for a bento image, apply them.

:func:`render_manifests` returns plain dicts (``apps/v1`` Deployment, ``v1`` Service,
``autoscaling/v2`` HorizontalPodAutoscaler):

- the container runs the bento image (``bentoml containerize`` tags it ``<bento name>:<version>``;
  ``image`` overrides it, ``image_registry`` prefixes it) and listens on port 3000;
- ``readinessProbe`` = ``GET /readyz`` (the service is ready only once the model and the feature
  store are loaded), ``livenessProbe`` = ``GET /livez``, ``startupProbe`` = ``GET /livez`` with a
  generous budget for model loading;
- rolling update with ``maxUnavailable: 0`` / ``maxSurge: 1``: a new pod takes traffic only once
  ready, an old one goes only after that, so a bad version never reduces capacity;
- labels carry the model name and version and the bento tag (sanitised to label syntax),
  annotations the full bento tag; the pod template changes only when the bento does, so a re-apply
  of the same bento is a no-op rollout.

:func:`validate_manifests` deserialises every manifest into the Kubernetes API models
(``V1Deployment``, ``V1Service``, ``V2HorizontalPodAutoscaler``) and checks the fields the cluster
would reject or that this target relies on.

:func:`apply_manifests` creates or patches each object through a ``kubernetes`` ``ApiClient``. The client
is resolved by the caller (the deploy operator, from the cncf.kubernetes provider's ``KubernetesHook``
when the connection exists) and passed in; without one the deploy is render-only.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlops_provider.exceptions import DeploymentError
from mlops_provider.runtime.io.atomic import atomic_write

log = logging.getLogger(__name__)

CONTAINER_PORT = 3000
_LABEL = re.compile(r"[^A-Za-z0-9_.-]+")


def label_value(value: str) -> str:
    """A valid label value: <= 63 chars of ``[A-Za-z0-9_.-]``, alphanumeric at both ends."""
    v = _LABEL.sub("-", str(value))[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", v)


def dns_name(value: str) -> str:
    """An RFC 1123 name (lowercase alnum and '-', <= 63)."""
    v = re.sub(r"[^a-z0-9-]+", "-", str(value).lower())[:63].strip("-")
    if not v:
        raise DeploymentError(f"Cannot derive a Kubernetes object name from {value!r}")
    return v


def default_image(bento_tag: str, registry: str | None = None) -> str:
    """The image ``bentoml containerize <bento_tag>`` produces (optionally under a registry)."""
    image = bento_tag if ":" in bento_tag else f"{bento_tag}:latest"
    return f"{registry.rstrip('/')}/{image}" if registry else image


def render_manifests(
    *,
    name: str,
    bento_tag: str,
    model_name: str,
    model_version: str | None = None,
    namespace: str = "default",
    image: str | None = None,
    image_registry: str | None = None,
    replicas: int = 2,
    max_replicas: int | None = None,
    target_cpu_utilization: int = 70,
    resources: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    service_type: str = "ClusterIP",
    service_port: int = 80,
    image_pull_policy: str = "IfNotPresent",
) -> list[dict[str, Any]]:
    """Deployment, Service and HPA for ``bento_tag`` (module docstring)."""
    if replicas < 1:
        raise DeploymentError(f"kubernetes.replicas must be >= 1 (got {replicas}); 0 would serve nothing")
    obj = dns_name(name)
    max_r = max(max_replicas or replicas * 2, replicas)
    selector = {"app.kubernetes.io/name": obj, "app.kubernetes.io/component": "model-server"}
    labels = {
        **selector,
        "app.kubernetes.io/managed-by": "airflow-provider-mlops",
        "mlops/model": label_value(model_name),
        "mlops/bento-version": label_value(bento_tag.split(":", 1)[-1]),
    }
    if model_version:
        labels["mlops/model-version"] = label_value(str(model_version))
    annotations = {"mlops/bento-tag": bento_tag}
    res = dict(resources or {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}})
    container = {
        "name": "bento",
        "image": image or default_image(bento_tag, image_registry),
        "imagePullPolicy": image_pull_policy,
        "ports": [{"name": "http", "containerPort": CONTAINER_PORT, "protocol": "TCP"}],
        "env": [{"name": k, "value": str(v)} for k, v in sorted((env or {}).items())],
        "resources": res,
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
            "successThreshold": 1,
        },
        "livenessProbe": {
            "httpGet": {"path": "/livez", "port": "http"},
            "periodSeconds": 10,
            "timeoutSeconds": 3,
            "failureThreshold": 3,
        },
        "startupProbe": {
            "httpGet": {"path": "/livez", "port": "http"},
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 60,
        },
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": obj, "namespace": namespace, "labels": labels, "annotations": annotations},
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 5,
            "minReadySeconds": 5,
            "progressDeadlineSeconds": 600,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {"containers": [container], "terminationGracePeriodSeconds": 30},
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": obj, "namespace": namespace, "labels": labels},
        "spec": {
            "type": service_type,
            "selector": selector,
            "ports": [{"name": "http", "port": service_port, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": obj, "namespace": namespace, "labels": labels},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": obj},
            "minReplicas": replicas,
            "maxReplicas": max_r,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": target_cpu_utilization},
                    },
                }
            ],
        },
    }
    return [deployment, service, hpa]


MODEL_CLASSES = {
    "Deployment": "V1Deployment",
    "Service": "V1Service",
    "HorizontalPodAutoscaler": "V2HorizontalPodAutoscaler",
}


def to_model(manifest: Mapping[str, Any]) -> Any:
    """Deserialise a manifest dict into its ``kubernetes.client`` model (what the API client sends)."""
    from kubernetes.client import ApiClient

    kind = str(manifest.get("kind"))
    if kind not in MODEL_CLASSES:
        raise DeploymentError(f"Unsupported manifest kind {kind!r}; expected one of {sorted(MODEL_CLASSES)}")

    class _Resp:
        data = json.dumps(dict(manifest))

    return ApiClient().deserialize(_Resp(), MODEL_CLASSES[kind])


def validate_manifests(manifests: Sequence[Mapping[str, Any]]) -> list[Any]:
    """Deserialise into the API models and check what the cluster / this target needs; returns the models."""
    from kubernetes.client import ApiClient

    problems: list[str] = []
    models = []
    api = ApiClient()
    for m in manifests:
        obj = to_model(m)
        models.append(obj)
        # a round trip must not lose any field (an unknown / misspelt key would vanish here)
        if api.sanitize_for_serialization(obj) != json.loads(json.dumps(dict(m))):
            problems.append(f"{m.get('kind')}: fields not in the API model (typo?)")
        name = obj.metadata.name if obj.metadata else None
        if not name or name != dns_name(name):
            problems.append(f"{m.get('kind')}: metadata.name {name!r} is not an RFC 1123 name")
        for k, v in ((obj.metadata.labels or {}) if obj.metadata else {}).items():
            if v != label_value(v):
                problems.append(f"{m.get('kind')}: label {k}={v!r} is not a valid label value")
        if m.get("kind") == "Deployment":
            spec = obj.spec
            tpl_labels = spec.template.metadata.labels or {}
            if not all(tpl_labels.get(k) == v for k, v in spec.selector.match_labels.items()):
                problems.append("Deployment: selector does not match the pod template labels")
            ru = spec.strategy.rolling_update if spec.strategy else None
            if not ru or ru.max_unavailable != 0:
                problems.append("Deployment: rolling update must have maxUnavailable 0")
            for c in spec.template.spec.containers:
                if not c.image:
                    problems.append(f"Deployment: container {c.name} has no image")
                if not (c.readiness_probe and c.readiness_probe.http_get):
                    problems.append(f"Deployment: container {c.name} has no HTTP readiness probe")
                if not (c.liveness_probe and c.liveness_probe.http_get):
                    problems.append(f"Deployment: container {c.name} has no HTTP liveness probe")
        if m.get("kind") == "HorizontalPodAutoscaler":
            spec = obj.spec
            if spec.min_replicas is None or spec.max_replicas < spec.min_replicas:
                problems.append("HPA: maxReplicas must be >= minReplicas")
    if problems:
        raise DeploymentError("Invalid Kubernetes manifests: " + "; ".join(problems))
    return models


def manifests_yaml(manifests: Sequence[Mapping[str, Any]]) -> str:
    import yaml

    return yaml.safe_dump_all([dict(m) for m in manifests], sort_keys=False)


def write_manifests(manifests: Sequence[Mapping[str, Any]], directory: str | Path) -> str:
    """Write the manifests as one multi-document YAML (``manifests.yaml``); returns the path."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    out = d / "manifests.yaml"
    atomic_write(out, manifests_yaml(manifests))
    return str(out)


_API = {
    # kind: (API class, method suffix)
    "Deployment": ("AppsV1Api", "namespaced_deployment"),
    "Service": ("CoreV1Api", "namespaced_service"),
    "HorizontalPodAutoscaler": ("AutoscalingV2Api", "namespaced_horizontal_pod_autoscaler"),
}


def apply_manifests(manifests: Sequence[Mapping[str, Any]], api_client: Any) -> list[dict[str, str]]:
    """Create each object, or patch it when it exists (strategic merge); returns ``[{kind, name, action}]``."""
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException

    results = []
    for m in manifests:
        kind = str(m["kind"])
        cls_name, suffix = _API[kind]
        api = getattr(k8s, cls_name)(api_client)
        name, ns = m["metadata"]["name"], m["metadata"].get("namespace", "default")
        try:
            getattr(api, f"read_{suffix}")(name, ns)
            exists = True
        except ApiException as e:
            if e.status != 404:
                raise DeploymentError(
                    f"Kubernetes: reading {kind} {ns}/{name} failed: {e.status} {e.reason}"
                ) from e
            exists = False
        try:
            if exists:
                getattr(api, f"patch_{suffix}")(name, ns, dict(m))
            else:
                getattr(api, f"create_{suffix}")(ns, dict(m))
        except ApiException as e:
            raise DeploymentError(
                f"Kubernetes: {'patching' if exists else 'creating'} {kind} {ns}/{name} failed: {e.status} "
                f"{e.reason} {str(e.body)[:300]}"
            ) from e
        results.append(
            {"kind": kind, "name": name, "namespace": ns, "action": "patched" if exists else "created"}
        )
        log.info("Kubernetes %s %s/%s %s", kind, ns, name, results[-1]["action"])
    return results


def rollout_status(
    api_client: Any, name: str, namespace: str, request_timeout: float | None = None
) -> dict[str, Any]:
    """One read of the Deployment's status: ``{"done", "failed", "replicas", "available", "updated"}``.

    ``done``: the new ReplicaSet is fully rolled out and available; ``failed``: the progress-deadline
    message when the rollout exceeded it (else None). :func:`wait_rollout` and the deploy operator's
    deferrable trigger both poll this.
    """
    from kubernetes import client as k8s
    from kubernetes.client.exceptions import ApiException

    kw = {"_request_timeout": request_timeout} if request_timeout else {}
    try:
        dep = k8s.AppsV1Api(api_client).read_namespaced_deployment_status(name, namespace, **kw)
    except ApiException as e:
        raise DeploymentError(
            f"Kubernetes: reading the status of Deployment {namespace}/{name} failed: {e.status} {e.reason}"
        ) from e
    st, want = dep.status, dep.spec.replicas or 0
    done = (
        st is not None
        and (st.observed_generation or 0) >= (dep.metadata.generation or 0)
        and (st.updated_replicas or 0) >= want
        and (st.available_replicas or 0) >= want
        and (st.replicas or 0) == (st.updated_replicas or 0)
    )
    failed = None
    for cond in (st.conditions or []) if st else []:
        if cond.type == "Progressing" and cond.reason == "ProgressDeadlineExceeded":
            failed = str(cond.message or cond.reason)
    return {
        "done": bool(done),
        "failed": None if done else failed,
        "replicas": want,
        "available": st.available_replicas if st else None,
        "updated": st.updated_replicas if st else None,
    }


def rollout_failed_message(namespace: str, name: str, why: str) -> str:
    return (
        f"Kubernetes rollout of {namespace}/{name} exceeded its progress deadline ({why}); "
        "the old pods keep serving (maxUnavailable 0). Check `kubectl describe deployment`."
    )


def rollout_timeout_message(namespace: str, name: str, timeout: float) -> str:
    return (
        f"Kubernetes rollout of {namespace}/{name} not complete within {timeout:.0f}s; the old pods keep "
        "serving (maxUnavailable 0)."
    )


def wait_rollout(
    api_client: Any, name: str, namespace: str, timeout: float = 600.0, poll: float = 5.0
) -> dict[str, Any]:
    """Wait until the Deployment's new ReplicaSet is fully rolled out and available (blocking)."""
    deadline = time.monotonic() + timeout
    while True:
        st = rollout_status(api_client, name, namespace)
        if st["done"]:
            return {"replicas": st["replicas"], "available": st["available"], "updated": st["updated"]}
        if st["failed"]:
            raise DeploymentError(rollout_failed_message(namespace, name, st["failed"]))
        if time.monotonic() > deadline:
            raise DeploymentError(rollout_timeout_message(namespace, name, timeout))
        time.sleep(poll)


def deploy_kubernetes(
    *,
    bento_tag: str,
    model_name: str,
    model_version: str | None,
    out_dir: str | Path,
    api_client: Any = None,
    conn_id: str | None = None,
    wait: bool = True,
    rollout_timeout: float = 600.0,
    **render_kwargs: Any,
) -> dict[str, Any]:
    """Render + validate the manifests, write them under ``out_dir``; apply them through ``api_client``.

    ``api_client``: a ``kubernetes.client.ApiClient`` (None: render only); ``conn_id`` names the
    connection it came from (for the log only).

    Returns ``{"mode": "applied" | "render-only", "manifests_path", "objects", "applied"}``.
    """
    name = render_kwargs.pop("name", None) or f"{model_name}-serving"
    manifests = render_manifests(
        name=name, bento_tag=bento_tag, model_name=model_name, model_version=model_version, **render_kwargs
    )
    validate_manifests(manifests)
    path = write_manifests(manifests, Path(out_dir) / label_value(bento_tag.replace(":", "-")))
    result: dict[str, Any] = {
        "mode": "render-only",
        "manifests_path": path,
        "objects": [
            {"kind": m["kind"], "name": m["metadata"]["name"], "namespace": m["metadata"]["namespace"]}
            for m in manifests
        ],
        "applied": [],
        "namespace": manifests[0]["metadata"]["namespace"],
        "name": manifests[0]["metadata"]["name"],
    }
    if api_client is None:
        log.info(
            "No Kubernetes connection %r: rendered %s only (apply it with kubectl apply -f)", conn_id, path
        )
        return result
    result["applied"] = apply_manifests(manifests, api_client)
    result["mode"] = "applied"
    if wait:
        result["rollout"] = wait_rollout(
            api_client, result["name"], result["namespace"], timeout=rollout_timeout
        )
    return result

