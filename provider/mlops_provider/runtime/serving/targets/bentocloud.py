"""BentoCloud deployment target through BentoML's deployment API (``bentoml.deployment``).

Credentials, first hit wins: the ``api_key`` / ``endpoint`` passed in (resolved by the
provider's ``BentoCloudHook`` from the BentoCloud connection: password or extra ``api_token`` = API
key, host = endpoint; this module never reads a connection), then
``$BENTO_CLOUD_API_KEY`` / ``$BENTO_CLOUD_API_ENDPOINT``, then the context saved by
``bentoml cloud login``. With none, :class:`~mlops_provider.exceptions.BentoCloudNotConfigured`
says how to configure one; nothing is sent.

:func:`deployment_kwargs` builds the call (a pure function, unit-tested); :func:`deploy_bentocloud`
pushes the bento (idempotent: BentoCloud skips a bento it already has), then ``update``s the named
deployment when it exists or ``create``s it, waits until it is running and returns its endpoint URL.
:func:`mlops_provider.runtime.serving.deploy.deploy_bento` then verifies the live version at that URL.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from mlops_provider.exceptions import BentoCloudNotConfigured, DeploymentError

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://cloud.bentoml.com"


def deployment_kwargs(
    *,
    name: str,
    bento_tag: str,
    cluster: str | None = None,
    scaling_min: int = 1,
    scaling_max: int = 2,
    instance_type: str | None = None,
    strategy: str | None = "RollingUpdate",
    access_authorization: bool | None = True,
    envs: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
    secrets: list[str] | None = None,
) -> dict[str, Any]:
    """Keyword arguments of ``bentoml.deployment.create`` / ``update`` for one model deployment."""
    if scaling_min < 0 or scaling_max < max(1, scaling_min):
        raise DeploymentError(
            f"bentocloud scaling must satisfy 0 <= min <= max and max >= 1 (got min={scaling_min}, max={scaling_max})"
        )
    kw: dict[str, Any] = {
        "name": name,
        "bento": bento_tag,
        "scaling_min": scaling_min,
        "scaling_max": scaling_max,
    }
    for key, value in (
        ("cluster", cluster),
        ("instance_type", instance_type),
        ("strategy", strategy),
        ("access_authorization", access_authorization),
        ("secrets", list(secrets) if secrets else None),
    ):
        if value is not None:
            kw[key] = value
    if envs:
        kw["envs"] = [{"name": k, "value": str(v)} for k, v in sorted(envs.items())]
    if labels:
        kw["labels"] = [{"key": k, "value": str(v)} for k, v in sorted(labels.items())]
    return kw


def resolve_credentials(api_key: str | None = None, endpoint: str | None = None) -> tuple[str, str] | None:
    """``(api_key, endpoint)`` from the arguments or the environment; None means 'use the CLI login context'."""
    key = api_key or os.environ.get("BENTO_CLOUD_API_KEY")
    if key:
        return key, endpoint or os.environ.get("BENTO_CLOUD_API_ENDPOINT") or DEFAULT_ENDPOINT
    return None


def cloud_client(api_key: str | None = None, endpoint: str | None = None) -> Any:
    """A ``BentoCloudClient``; raises BentoCloudNotConfigured when no credentials exist anywhere."""
    from bentoml._internal.cloud import BentoCloudClient

    creds = resolve_credentials(api_key, endpoint)
    if creds is not None:
        return BentoCloudClient(api_key=creds[0], endpoint=creds[1])  # type: ignore[call-arg]
    try:
        return BentoCloudClient()  # type: ignore[call-arg]  # the `bentoml cloud login` context
    except Exception as e:  # noqa: BLE001 - CloudRESTApiClientError / missing config file
        raise BentoCloudNotConfigured(
            "Deployment target 'bentocloud' has no BentoCloud credentials: set the API key as the password (or "
            "extra 'api_token') of the connection named in serving.bentocloud.conn_id (host = endpoint, default "
            f"{DEFAULT_ENDPOINT}), or export BENTO_CLOUD_API_KEY, or run `bentoml cloud login` for the worker's "
            f"user. ({type(e).__name__}: {e})"
        ) from e


def deploy_bentocloud(
    kwargs: Mapping[str, Any],
    *,
    client: Any,
    api: Any = None,
    bentoml_home_dir: str | None = None,
    push: bool = True,
    wait_timeout: int = 900,
) -> dict[str, Any]:
    """Push the bento, create or update the deployment, wait until it runs; ``{"name", "url", "action"}``.

    ``api`` defaults to the ``bentoml.deployment`` module; every call passes ``_cloud_client=client``.
    """
    import bentoml
    from bentoml.exceptions import NotFound

    from mlops_provider.runtime.serving.package import bentoml_home

    api = api or bentoml.deployment
    name = str(kwargs["name"])
    if push:
        with bentoml_home(bentoml_home_dir):
            bento = bentoml.bentos.get(str(kwargs["bento"]))
            log.info("Pushing %s to BentoCloud (skipped there when already uploaded)", bento.tag)
            client.bento.push(bento)
    try:
        api.get(name=name, cluster=kwargs.get("cluster"), _cloud_client=client)
        exists = True
    except NotFound:
        exists = False
    call = api.update if exists else api.create
    deployment = call(**dict(kwargs), _cloud_client=client)
    if wait_timeout > 0:
        status = deployment.wait_until_ready(timeout=wait_timeout)
        if status not in (0, None):
            raise DeploymentError(not_ready_message(name, f"within {wait_timeout}s (status {status})"))
    try:
        urls = list(deployment.get_endpoint_urls())
    except Exception:  # noqa: BLE001 - "endpoint url is not ready" / no public endpoint
        urls = []
    url = urls[0] if urls else None
    return {
        "name": name,
        "url": url,
        "action": "updated" if exists else "created",
        "cluster": kwargs.get("cluster"),
    }


#: BentoCloud deployment states (``bentoml``'s ``DeploymentStatus`` values) that end a wait.
READY_STATES = ("running", "scaled-to-zero")
FAILED_STATES = ("failed", "image-build-failed", "terminated", "terminating", "unhealthy")


def not_ready_message(name: str, why: str) -> str:
    return (
        f"BentoCloud deployment {name} did not become ready {why}; BentoCloud keeps the previous revision "
        "serving. Check the deployment in the BentoCloud console."
    )


def deployment_status(name: str, cluster: str | None, *, client: Any, api: Any = None) -> dict[str, Any]:
    """One read of the deployment: ``{"status", "ready", "failed", "url"}`` (what ``wait_until_ready`` polls).

    ``ready`` for ``running`` / ``scaled-to-zero``; ``failed`` for the states ``wait_until_ready`` gives up
    on; ``url``: the endpoint once BentoCloud reports exactly one (else None). The deploy operator's
    deferrable trigger polls this.
    """
    import bentoml

    api = api or bentoml.deployment
    deployment = api.get(name=name, cluster=cluster, _cloud_client=client)
    status = str(deployment.get_status(refetch=False).status)
    try:
        urls = list(deployment.get_endpoint_urls(refetch=False))
    except Exception:  # noqa: BLE001 - "endpoint url is not ready" / no public endpoint
        urls = []
    return {
        "status": status,
        "ready": status in READY_STATES,
        "failed": status in FAILED_STATES,
        "url": urls[0] if urls else None,
    }
