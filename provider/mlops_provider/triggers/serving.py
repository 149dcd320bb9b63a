"""Async triggers of :class:`~mlops_provider.operators.bentoml.BentoDeployOperator` (``deferrable=True``).

One trigger per wait of a remote deploy, so no worker slot is held while a platform rolls out:

* :class:`KubernetesRolloutTrigger`: the Deployment's new ReplicaSet is rolled out and available;
* :class:`BentoCloudDeploymentTrigger`: the BentoCloud deployment is running (its endpoint URL);
* :class:`EndpointReadyTrigger`: ``<url>/readyz`` answers 200 and ``<url>/health`` reports the deployed bento.

Each polls one blocking probe of :mod:`mlops_provider.runtime.serving` in a worker thread
(``asyncio.to_thread``, bounded per poll by ``poll_timeout``) so the triggerer's event loop never blocks;
the connection is resolved there too. The kubernetes / bentoml / httpx imports happen only in that thread.

Exactly one event is yielded:

* ``{"status": "success", "stage": <stage>, ...}`` with the stage's result (``rollout`` / ``deployment`` /
  ``live``);
* ``{"status": "error", "stage": <stage>, "error_type": str, "message": str, ...}`` for a failed rollout, a
  missed deadline (``"timeout": true``) and every exception.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class WaitFailed(Exception):
    """A terminal failure of the awaited thing (not worth polling again); becomes the error event."""

    def __init__(self, error_type: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.extra = extra


def _parse_deadline(deadline: str | None) -> datetime | None:
    if not deadline:
        return None
    ts = datetime.fromisoformat(deadline.replace("Z", "+00:00"))
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


class _PollingTrigger(BaseTrigger):
    """Poll :meth:`poll` (blocking, in a thread) until it returns a payload, fails, or ``deadline`` passes."""

    stage = ""

    def __init__(self, *, deadline: str | None = None, poll_interval: float = 10.0,
                 poll_timeout: float = 30.0) -> None:
        super().__init__()
        self.deadline = deadline
        self.poll_interval = float(poll_interval)
        self.poll_timeout = float(poll_timeout)
        self._last = ""

    def _common(self) -> dict[str, Any]:
        return {"deadline": self.deadline, "poll_interval": self.poll_interval, "poll_timeout": self.poll_timeout}

    def poll(self) -> dict[str, Any] | None:
        """One blocking probe: the success payload when done, None when not yet; raises WaitFailed when failed."""
        raise NotImplementedError

    def timeout_event(self, deadline: datetime) -> dict[str, Any]:
        return {"error_type": "DeploymentError",
                "message": f"{self.describe()} not done by {deadline.isoformat()}: {self._last or 'no answer'}"}

    def describe(self) -> str:
        return self.stage

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            deadline = _parse_deadline(self.deadline)
            while True:
                try:
                    payload = await asyncio.wait_for(asyncio.to_thread(self.poll), timeout=self.poll_timeout)
                except TimeoutError:
                    payload, self._last = None, f"a probe took longer than {self.poll_timeout:g}s"
                if payload is not None:
                    yield TriggerEvent({"status": "success", "stage": self.stage, **payload})
                    return
                now = datetime.now(UTC)
                if deadline is not None and now >= deadline:
                    yield TriggerEvent({"status": "error", "stage": self.stage, "timeout": True,
                                        **self.timeout_event(deadline)})
                    return
                self.log.info("waiting for %s: %s", self.describe(), self._last)
                wait = self.poll_interval
                if deadline is not None:
                    wait = max(0.0, min(wait, (deadline - now).total_seconds()))
                await asyncio.sleep(wait)
        except WaitFailed as e:
            yield TriggerEvent({"status": "error", "stage": self.stage, "error_type": e.error_type,
                                "message": str(e), **e.extra})
        except Exception as e:  # one error event for every failure; the operator raises a named error
            yield TriggerEvent({"status": "error", "stage": self.stage, "error_type": type(e).__name__,
                                "message": str(e)})


class KubernetesRolloutTrigger(_PollingTrigger):
    """Wait until Deployment ``namespace/name`` is rolled out (the cncf.kubernetes connection ``conn_id``).

    Fails at once when the rollout exceeds its progress deadline. Success payload:
    ``{"rollout": {"replicas", "available", "updated"}}``.
    """

    stage = "rollout"

    def __init__(self, *, name: str, namespace: str, conn_id: str, timeout: float = 600.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.name = name
        self.namespace = namespace
        self.conn_id = conn_id
        self.timeout = float(timeout)
        self._client: Any = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"name": self.name, "namespace": self.namespace, "conn_id": self.conn_id, "timeout": self.timeout,
             **self._common()},
        )

    def describe(self) -> str:
        return f"the rollout of {self.namespace}/{self.name}"

    def poll(self) -> dict[str, Any] | None:
        from mlops_provider.hooks.kubernetes import kubernetes_api_client
        from mlops_provider.runtime.serving.targets.kubernetes import rollout_failed_message, rollout_status

        if self._client is None:
            self._client = kubernetes_api_client(self.conn_id)
            if self._client is None:
                raise WaitFailed("DeploymentError", f"Kubernetes connection {self.conn_id!r} does not exist in the "
                                                    "triggerer (it must be visible to every Airflow component)")
        st = rollout_status(self._client, self.name, self.namespace, request_timeout=self.poll_timeout)
        if st["done"]:
            return {"rollout": {"replicas": st["replicas"], "available": st["available"], "updated": st["updated"]}}
        if st["failed"]:
            raise WaitFailed("DeploymentError", rollout_failed_message(self.namespace, self.name, st["failed"]))
        self._last = f"{st['updated']}/{st['replicas']} updated, {st['available']} available"
        return None

    def timeout_event(self, deadline: datetime) -> dict[str, Any]:
        from mlops_provider.runtime.serving.targets.kubernetes import rollout_timeout_message

        return {"error_type": "DeploymentError",
                "message": f"{rollout_timeout_message(self.namespace, self.name, self.timeout)} ({self._last})"}


class BentoCloudDeploymentTrigger(_PollingTrigger):
    """Wait until BentoCloud deployment ``name`` runs (credentials from the BentoCloud connection ``conn_id``).

    Fails at once on a failed / unhealthy / terminated state. Success payload:
    ``{"deployment": {"status", "url"}}``.
    """

    stage = "bentocloud"

    def __init__(self, *, name: str, cluster: str | None, conn_id: str, timeout: float = 900.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.name = name
        self.cluster = cluster
        self.conn_id = conn_id
        self.timeout = float(timeout)
        self._client: Any = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"name": self.name, "cluster": self.cluster, "conn_id": self.conn_id, "timeout": self.timeout,
             **self._common()},
        )

    def describe(self) -> str:
        return f"BentoCloud deployment {self.name}"

    def poll(self) -> dict[str, Any] | None:
        from mlops_provider.hooks.bentocloud import BentoCloudHook
        from mlops_provider.runtime.serving.targets.bentocloud import (
            cloud_client,
            deployment_status,
            not_ready_message,
        )

        if self._client is None:
            settings = BentoCloudHook(self.conn_id).settings()
            self._client = cloud_client(settings.api_key, settings.endpoint)
        st = deployment_status(self.name, self.cluster, client=self._client)
        if st["ready"]:
            return {"deployment": {"status": st["status"], "url": st["url"]}}
        if st["failed"]:
            raise WaitFailed("DeploymentError", not_ready_message(self.name, f"(status {st['status']})"))
        self._last = f"status {st['status']}"
        return None

    def timeout_event(self, deadline: datetime) -> dict[str, Any]:
        from mlops_provider.runtime.serving.targets.bentocloud import not_ready_message

        return {"error_type": "DeploymentError",
                "message": not_ready_message(self.name, f"within {self.timeout:.0f}s ({self._last or 'no status'})")}


class EndpointReadyTrigger(_PollingTrigger):
    """Wait until ``url`` is ready (``/readyz`` 200) and serves ``bento_tag`` (``/health``).

    ``bentoml_conn_id``: the BentoML connection whose token is sent (None: no auth header). At the deadline
    an endpoint that answers but serves another bento is a ``LiveVersionMismatch`` (with ``live``).
    Success payload: ``{"live": <what /health reports>, "url"}``.
    """

    stage = "ready"

    def __init__(self, *, url: str, bento_tag: str | None, bentoml_conn_id: str | None = None,
                 timeout: float = 180.0, **kw: Any) -> None:
        super().__init__(**kw)
        self.url = url
        self.bento_tag = bento_tag
        self.bentoml_conn_id = bentoml_conn_id
        self.timeout = float(timeout)
        self._headers: dict[str, str] | None = None
        self._mismatch: dict[str, Any] | None = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {"url": self.url, "bento_tag": self.bento_tag, "bentoml_conn_id": self.bentoml_conn_id,
             "timeout": self.timeout, **self._common()},
        )

    def describe(self) -> str:
        return f"endpoint {self.url}"

    def poll(self) -> dict[str, Any] | None:
        from mlops_provider.runtime.serving.checks import endpoint_readiness

        if self._headers is None:
            self._headers = {}
            if self.bentoml_conn_id:
                from mlops_provider.hooks.bentoml import BentoMLHook

                self._headers = BentoMLHook(self.bentoml_conn_id).headers()
        st = endpoint_readiness(self.url, bento_tag=self.bento_tag, headers=self._headers,
                                timeout=min(self.poll_timeout, 10.0))
        if st["ready"]:
            return {"live": st["live"], "url": self.url}
        self._mismatch = st["live"] if st["mismatch"] else None
        self._last = st["reason"]
        return None

    def timeout_event(self, deadline: datetime) -> dict[str, Any]:
        if self._mismatch is not None:
            return {"error_type": "LiveVersionMismatch", "message": self._last, "live": self._mismatch}
        return {"error_type": "DeploymentError",
                "message": f"{self.url} was not ready within {self.timeout:.0f}s: {self._last or 'no answer'}"}
