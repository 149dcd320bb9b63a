"""The Kubernetes API client of the kubernetes deployment target, from a cncf.kubernetes connection (light).

The deploy operator (apply) and the rollout trigger (triggerer) resolve the client the same way; the
cncf.kubernetes provider is imported only when the connection exists.
"""

from __future__ import annotations

from typing import Any


def kubernetes_api_client(conn_id: str | None) -> Any | None:
    """The cncf.kubernetes provider's ApiClient for ``conn_id``; None when the connection does not exist."""
    if not conn_id:
        return None
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return None
    try:
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
    except ImportError as e:
        from mlops_provider.exceptions import MissingDependencyError

        raise MissingDependencyError("apache-airflow-providers-cncf-kubernetes", "kubernetes") from e
    return KubernetesHook(conn_id=conn_id).api_client
