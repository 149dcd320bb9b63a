"""Deploy a bento to its target and verify what is live: the deploy task's one entry point (runtime module).

:func:`deploy_bento` dispatches on ``target``:

- ``local``: :func:`~mlops_provider.runtime.serving.targets.local.deploy_local` (a stable front on
  ``port``, ``bentoml serve`` blue/green on free loopback ports behind it);
- ``kubernetes``: :func:`~mlops_provider.runtime.serving.targets.kubernetes.deploy_kubernetes`
  (Deployment / Service / HPA rendered, validated, written under ``<state_dir>/kubernetes``; applied
  through the ``kubernetes`` API client the operator resolved from its connection, render-only
  without one);
- ``bentocloud``: :func:`~mlops_provider.runtime.serving.targets.bentocloud.deploy_bentocloud`
  (credentials resolved by the operator's BentoCloud hook).

Then, when the target gives a URL (the stable front's when there is one), the endpoint's ``/health``
must report the deployed bento tag, else :class:`~mlops_provider.exceptions.LiveVersionMismatch`.
The pieces live in their own modules: packaging (``package``), server processes (``process``), the
stable front (``front``), the state file (``state``), HTTP checks (``checks``), images
(``containerize``), targets (``targets/``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mlops_provider.exceptions import DeploymentError

log = logging.getLogger(__name__)

TARGETS = ("local", "kubernetes", "bentocloud")
#: ``serving.kubernetes`` options passed on to the manifests.
_K8S_RENDER_KEYS = (
    "namespace", "name", "replicas", "max_replicas", "target_cpu_utilization", "resources", "image",
    "image_registry", "env", "service_type",
)


def deploy_bento(
    bento_tag: str,
    *,
    target: str = "local",
    state_dir: str | os.PathLike[str],
    bentoml_home_dir: str | os.PathLike[str] | None = None,
    host: str = "127.0.0.1",
    port: int = 3000,
    ready_timeout: float = 120.0,
    smoke_request: Mapping[str, Any] | None = None,
    drain_seconds: float = 2.0,
    front_port: int | None = None,
    kubernetes: Mapping[str, Any] | None = None,
    kubernetes_api_client: Any = None,
    bentocloud: Mapping[str, Any] | None = None,
    bentocloud_api_key: str | None = None,
    bentocloud_endpoint: str | None = None,
    verify_version: bool = True,
    headers: Mapping[str, str] | None = None,
    on_endpoint: Callable[[str], None] | None = None,
    wait: bool = True,
) -> dict[str, Any]:
    """Deploy ``bento_tag`` to ``target`` and verify the live version (module docstring).

    ``kubernetes`` / ``bentocloud``: the YAML's ``serving.kubernetes`` / ``serving.bentocloud``.
    ``headers``: sent to a remote endpoint's ``/health`` (not to the local target).
    ``smoke_request``: local target only; ``{}`` sends the smoke request bundled in the bento, None none.
    ``on_endpoint`` is called with the endpoint URL as soon as it is known, before the live-version
    check (the operator pushes it for the UI link, so the link works even when the check fails).
    ``wait=False`` (remote targets; the local target always waits, its servers belong to the task): return
    right after the apply / create-or-update, without the rollout wait and the live-version check; the
    deferrable deploy operator waits for both in the triggerer and completes the result (no ``live`` key).
    Returns ``{"target", "url", "bento_tag", "changed", "previous_bento_tag", "live", ...}``.
    """
    if target not in TARGETS:
        raise DeploymentError(f"Unknown deployment target {target!r}; use one of {', '.join(TARGETS)}.")
    if target == "local":
        if smoke_request is not None and not smoke_request:
            from mlops_provider.runtime.serving.package import bento_config

            smoke_request = bento_config(bento_tag, bentoml_home_dir).get("smoke_request") or None
        result = _deploy_local(
            bento_tag, state_dir=state_dir, bentoml_home_dir=bentoml_home_dir, host=host, port=port,
            ready_timeout=ready_timeout, smoke_request=smoke_request, drain_seconds=drain_seconds,
            front_port=front_port, verify_version=verify_version,
        )
    elif target == "kubernetes":
        k = dict(kubernetes or {})
        if not wait:
            k["wait"] = False
        result = _deploy_kubernetes(bento_tag, k, kubernetes_api_client, state_dir, bentoml_home_dir)
    else:
        b = dict(bentocloud or {})
        if not wait:
            b["wait_timeout"] = 0
        result = _deploy_bentocloud(bento_tag, b, bentocloud_api_key, bentocloud_endpoint, bentoml_home_dir)
    result["target"] = target
    url = endpoint_url(result)
    if url and on_endpoint is not None:
        on_endpoint(url)
    if not wait and target != "local":
        return result
    if url and verify_version:
        from mlops_provider.runtime.serving.checks import verify_live_version

        result["live"] = verify_live_version(url, bento_tag=bento_tag, headers=headers if target != "local" else {})
        log.info("Live version at %s: %s", url, result["live"])
    elif not url:
        log.info("No endpoint URL for target %s: live version not verified", target)
    return result


def endpoint_url(result: Mapping[str, Any]) -> str | None:
    """The URL callers use: the stable front when there is one, else the deployment's own."""
    url = result.get("front_url") or result.get("url")
    return str(url) if url else None


def _deploy_local(
    bento_tag: str,
    *,
    state_dir: str | os.PathLike[str],
    bentoml_home_dir: str | os.PathLike[str] | None,
    host: str,
    port: int,
    ready_timeout: float,
    smoke_request: Mapping[str, Any] | None,
    drain_seconds: float,
    front_port: int | None,
    verify_version: bool,
) -> dict[str, Any]:
    from mlops_provider.runtime.serving.targets.local import deploy_local

    result = deploy_local(
        bento_tag,
        host=host,
        port=int(port),
        state_dir=state_dir,
        timeout=float(ready_timeout),
        bentoml_home_dir=bentoml_home_dir,
        smoke_request=smoke_request,
        drain_seconds=float(drain_seconds),
        verify_version=bool(verify_version),
        front_port=int(front_port) if front_port else None,
    )
    previous = result.pop("previous", None) or {}
    result["previous_bento_tag"] = previous.get("bento_tag")
    return result


def _deploy_kubernetes(
    bento_tag: str,
    k: dict[str, Any],
    api_client: Any,
    state_dir: str | os.PathLike[str],
    bentoml_home_dir: str | os.PathLike[str] | None,
) -> dict[str, Any]:
    from mlops_provider.runtime.serving.package import bento_config
    from mlops_provider.runtime.serving.targets.kubernetes import deploy_kubernetes

    cfg = bento_config(bento_tag, bentoml_home_dir)
    render = {key: k[key] for key in _K8S_RENDER_KEYS if k.get(key) is not None}
    result = deploy_kubernetes(
        bento_tag=bento_tag,
        model_name=str(cfg.get("model_name", "model")),
        model_version=str(cfg.get("model_version", "")) or None,
        out_dir=Path(state_dir) / "kubernetes",
        api_client=api_client,
        conn_id=k.get("conn_id", "kubernetes_default"),
        wait=bool(k.get("wait", True)),
        **render,
    )
    log.info("Kubernetes manifests %s (%s)", result["manifests_path"], result["mode"])
    result["url"] = k.get("url") if result["mode"] == "applied" else None
    result["bento_tag"] = bento_tag
    result["changed"] = result["mode"] == "applied"
    return result


def _deploy_bentocloud(
    bento_tag: str,
    b: dict[str, Any],
    api_key: str | None,
    endpoint: str | None,
    bentoml_home_dir: str | os.PathLike[str] | None,
) -> dict[str, Any]:
    from mlops_provider.runtime.serving.package import bento_config
    from mlops_provider.runtime.serving.targets.bentocloud import (
        cloud_client,
        deploy_bentocloud,
        deployment_kwargs,
    )

    cfg = bento_config(bento_tag, bentoml_home_dir)
    client = cloud_client(api_key, endpoint)
    kwargs = deployment_kwargs(
        name=str(b.get("name") or f"{cfg.get('model_name', 'model')}-serving").replace("_", "-"),
        bento_tag=bento_tag,
        cluster=b.get("cluster"),
        scaling_min=int(b.get("scaling_min", 1)),
        scaling_max=int(b.get("scaling_max", 2)),
        instance_type=b.get("instance_type"),
        access_authorization=b.get("access_authorization", True),
        envs=b.get("envs") or None,
        labels={"model": str(cfg.get("model_name", "")), "model_version": str(cfg.get("model_version", ""))},
    )
    result = deploy_bentocloud(
        kwargs,
        client=client,
        bentoml_home_dir=str(bentoml_home_dir) if bentoml_home_dir is not None else None,
        wait_timeout=int(b.get("wait_timeout", 900)),
    )
    result["bento_tag"] = bento_tag
    result["changed"] = True
    return result
