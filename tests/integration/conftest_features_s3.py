"""A real moto S3 server on loopback for the features-area S3 tests (imported explicitly).

``moto_s3`` starts one ``ThreadedMotoServer`` per test module on a free port, points the Airflow
connection ``aws_default`` at it (env ``AIRFLOW_CONN_AWS_DEFAULT`` with ``endpoint_url``) with dummy
credentials, and yields a helper with a boto3 client; ``bucket`` gives each test its own bucket; ``s3_store`` is the runtime ObjectStore built from that connection.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest


@dataclass
class MotoS3:
    endpoint: str
    client: Any

    def put(self, bucket: str, key: str, body: bytes) -> str:
        self.client.put_object(Bucket=bucket, Key=key, Body=body)
        return f"s3://{bucket}/{key}"

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sorted(o["Key"] for p in pages for o in p.get("Contents", []) or [])


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[MotoS3]:
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        with pytest.MonkeyPatch.context() as mp:
            for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
                mp.delenv(var, raising=False)
            mp.setenv("AWS_ACCESS_KEY_ID", "testing")
            mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
            mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
            mp.setenv(
                "AIRFLOW_CONN_AWS_DEFAULT",
                json.dumps({"conn_type": "aws", "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"}}),
            )
            yield MotoS3(endpoint, boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1"))
    finally:
        server.stop()


@pytest.fixture
def s3_store(moto_s3: MotoS3) -> Any:
    """The runtime's ObjectStore as an operator builds it: from the ``aws_default`` connection (moto)."""
    from mlops_provider.hooks.objstore import ObjectStoreHook
    from mlops_provider.runtime.io.objstore import ObjectStore

    return ObjectStore(ObjectStoreHook().settings)


@pytest.fixture
def bucket(moto_s3: MotoS3) -> str:
    name = f"mlops-{uuid.uuid4().hex[:12]}"
    moto_s3.client.create_bucket(Bucket=name)
    return name
