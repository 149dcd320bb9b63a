"""ObjectStoreHook: the Airflow ``aws`` connection resolved into the runtime's :class:`ObjectStore`.

Light module: the amazon provider and boto3 are imported only when an ``s3://`` location is used.
The connection is the amazon provider's (``aws_default``): login / password = access key / secret,
extra ``endpoint_url`` (MinIO, moto, Ceph) and ``region_name``. A missing connection falls back to
boto3's default credential chain, as the amazon provider's own hooks do.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseHook

DEFAULT_AWS_CONN_ID = "aws_default"


class ObjectStoreHook(BaseHook):
    """Resolves the connection into plain S3 settings for the runtime's ObjectStore.

    Operators hand the *bound method* to the store, so nothing is resolved until the store first
    touches ``s3://``: tasks on local paths never need the connection (nor the amazon provider)::

        store = ObjectStore(ObjectStoreHook(self.aws_conn_id).settings)   # inside execute()
    """

    conn_name_attr = "aws_conn_id"
    default_conn_name = DEFAULT_AWS_CONN_ID
    hook_name = "Object storage (S3)"

    def __init__(self, aws_conn_id: str | None = DEFAULT_AWS_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.aws_conn_id = aws_conn_id

    def settings(self) -> dict[str, Any]:
        """Endpoint, region and credentials of the connection (None values: boto3's default chain)."""
        from mlops_provider.exceptions import MissingDependencyError

        try:
            from airflow.providers.amazon.aws.hooks.s3 import S3Hook
        except ImportError as e:  # pragma: no cover - the amazon provider comes with the aws extra
            raise MissingDependencyError("apache-airflow-providers-amazon", "aws") from e
        hook = S3Hook(aws_conn_id=self.aws_conn_id)
        creds = hook.get_credentials()
        cfg = hook.conn_config
        return {
            "endpoint_url": cfg.endpoint_url if cfg is not None else None,
            "region_name": (cfg.region_name if cfg is not None else None) or hook.region_name,
            "access_key": creds.access_key if creds else None,
            "secret_key": creds.secret_key if creds else None,
            "session_token": creds.token if creds else None,
        }

    def get_conn(self) -> dict[str, Any]:
        return self.settings()

