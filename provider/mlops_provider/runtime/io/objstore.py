"""``s3://`` support for landings, validation, transforms and snapshots (runtime module).

Objects are reached through the amazon provider's ``S3Hook`` (boto3) with an Airflow connection
(``aws_conn_id``, default ``aws_default``; its extras may carry ``endpoint_url`` for MinIO / moto and
``region_name``). Every consumer that needs a local file (pandas readers, user transforms) gets one
through :func:`localized`, which downloads the objects into a temporary directory keeping their
file names (the transforms classify landed files by name).

Why not ``ObjectStoragePath``: its ``s3`` filesystem needs ``s3fs`` (the amazon provider's ``s3fs``
extra), which this provider does not require; boto3 comes with the amazon provider itself.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from mlops_provider.exceptions import DataValidationError, MissingDependencyError

log = logging.getLogger(__name__)

S3_SCHEME = "s3://"
DEFAULT_AWS_CONN_ID = "aws_default"


def is_s3(path: Any) -> bool:
    return str(path).startswith(S3_SCHEME)


def split_s3(url: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> ``("bucket", "some/key")``."""
    if not is_s3(url):
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, key = url[len(S3_SCHEME):].partition("/")
    if not bucket:
        raise ValueError(f"s3 URL without a bucket: {url!r}")
    return bucket, key


def join_s3(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])


def basename(path: str) -> str:
    return str(path).rstrip("/").rsplit("/", 1)[-1]


def client(aws_conn_id: str | None = DEFAULT_AWS_CONN_ID) -> Any:
    """A boto3 S3 client for the connection (``None`` -> boto3's default credential chain)."""
    try:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    except ImportError as e:  # pragma: no cover - the amazon provider is a dependency of the s3 extra
        raise MissingDependencyError("apache-airflow-providers-amazon", "aws") from e
    return S3Hook(aws_conn_id=aws_conn_id).get_conn()


@dataclass(frozen=True)
class ObjectInfo:
    url: str
    size: int
    etag: str
    last_modified: datetime | None

    @property
    def fingerprint(self) -> str:
        return f"{self.size}:{self.etag}"


def list_objects(prefix_url: str, pattern: str = "*", *, aws_conn_id: str | None = DEFAULT_AWS_CONN_ID,
                 s3: Any = None) -> dict[str, ObjectInfo]:
    """Objects directly under ``prefix_url`` (non-recursive, like a directory) whose name matches ``pattern``."""
    bucket, prefix = split_s3(prefix_url)
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    s3 = s3 or client(aws_conn_id)
    out: dict[str, ObjectInfo] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        for obj in page.get("Contents", []) or []:
            key = obj["Key"]
            name = key[len(prefix):]
            if not name or "/" in name or not fnmatch.fnmatch(name, pattern):
                continue
            out[f"{S3_SCHEME}{bucket}/{key}"] = ObjectInfo(
                url=f"{S3_SCHEME}{bucket}/{key}", size=int(obj.get("Size", 0)),
                etag=str(obj.get("ETag", "")).strip('"'), last_modified=obj.get("LastModified"),
            )
    return out


def head(url: str, *, aws_conn_id: str | None = DEFAULT_AWS_CONN_ID, s3: Any = None) -> ObjectInfo | None:
    """Size / etag of one object, or None when it does not exist."""
    from botocore.exceptions import ClientError

    bucket, key = split_s3(url)
    s3 = s3 or client(aws_conn_id)
    try:
        r = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as e:
        if str(e.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound", "NoSuchBucket"):
            return None
        raise
    return ObjectInfo(url=url, size=int(r.get("ContentLength", 0)), etag=str(r.get("ETag", "")).strip('"'),
                      last_modified=r.get("LastModified"))


def download(url: str, dest: str | os.PathLike[str], *, aws_conn_id: str | None = DEFAULT_AWS_CONN_ID,
             s3: Any = None) -> Path:
    """Download one object to the local file ``dest`` (atomically); a missing object is a DataValidationError."""
    bucket, key = split_s3(url)
    s3 = s3 or client(aws_conn_id)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    try:
        s3.download_file(bucket, key, str(tmp))
    except Exception as e:
        tmp.unlink(missing_ok=True)
        if head(url, s3=s3) is None:
            raise DataValidationError(
                f"object {url} does not exist (moved or deleted after it landed?); land it again to reprocess."
            ) from e
        raise
    tmp.replace(dest)
    return dest


def upload(local: str | os.PathLike[str], url: str, *, aws_conn_id: str | None = DEFAULT_AWS_CONN_ID,
           s3: Any = None) -> None:
    bucket, key = split_s3(url)
    (s3 or client(aws_conn_id)).upload_file(str(local), bucket, key)


@contextlib.contextmanager
def localized(paths: list[str], *, aws_conn_id: str | None = DEFAULT_AWS_CONN_ID) -> Iterator[list[str]]:
    """Yield local paths for ``paths``: local ones unchanged, ``s3://`` ones downloaded to a temp dir.

    Downloads keep the object's file name; the temp dir is removed on exit. Order is preserved.
    """
    remote = [p for p in paths if is_s3(p)]
    if not remote:
        yield list(paths)
        return
    names = [basename(p) for p in remote]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataValidationError(
            f"several landed objects share the file name(s) {dupes}; land each table/month once per run."
        )
    s3 = client(aws_conn_id)
    with tempfile.TemporaryDirectory(prefix="mlops-s3-") as tmp:
        local: list[str] = []
        for p in paths:
            if is_s3(p):
                dest = download(p, Path(tmp, basename(p)), s3=s3)
                log.info("downloaded %s (%d bytes) to %s", p, dest.stat().st_size, dest)
                local.append(str(dest))
            else:
                local.append(p)
        yield local
