"""One object-store helper: local paths and ``s3://`` URLs behind one interface (runtime module).

:class:`ObjectStore` lists, reads, writes (atomically for local files), uploads, downloads and opens
``pyarrow`` file systems for both kinds of location. It never reads an Airflow connection: the
settings come resolved (:class:`S3Settings`, or a callable returning them, resolved at first use) from
:class:`mlops_provider.hooks.objstore.ObjectStoreHook` (``ObjectStore(ObjectStoreHook(conn_id).settings)``)
in tasks and triggers, or from the process
environment (boto3's default chain, ``AWS_ENDPOINT_URL``) inside a served bento.

Every consumer that needs a local file (pandas readers, user transforms) gets one through
:meth:`ObjectStore.localized`, which downloads the objects into a temporary directory keeping their
file names (the transforms classify landed files by name).

Why not ``ObjectStoragePath``: its ``s3`` filesystem needs ``s3fs`` (the amazon provider's ``s3fs``
extra), which this provider does not require; boto3 comes with the amazon provider itself, and pyarrow's
own S3 file system streams parquet without it.
"""

from __future__ import annotations

import builtins
import contextlib
import fnmatch
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops_provider.exceptions import DataValidationError
from mlops_provider.runtime.io.atomic import atomic_path, atomic_write

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


def join(base: str | os.PathLike[str], *parts: str) -> str:
    """Join path parts for a local path or an ``s3://`` URL alike."""
    return join_s3(str(base), *parts) if is_s3(base) else str(Path(base, *parts))


def basename(path: str) -> str:
    return str(path).rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class S3Settings:
    """Resolved S3 access: what a hook read from its connection (None everywhere: boto3's default chain)."""

    endpoint_url: str | None = None
    region_name: str | None = None
    access_key: str | None = None
    secret_key: str | None = None
    session_token: str | None = None

    def __repr__(self) -> str:  # never print secrets
        return f"S3Settings(endpoint_url={self.endpoint_url!r}, region_name={self.region_name!r})"

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3", endpoint_url=self.endpoint_url, region_name=self.region_name,
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            aws_session_token=self.session_token,
        )

    def arrow_filesystem(self) -> Any:
        from pyarrow import fs

        kwargs: dict[str, Any] = {}
        if self.endpoint_url:
            scheme, _, rest = self.endpoint_url.partition("://")
            kwargs["endpoint_override"] = rest or scheme
            kwargs["scheme"] = scheme if rest else "https"
        if self.region_name:
            kwargs["region"] = self.region_name
        if self.access_key:
            kwargs.update(access_key=self.access_key, secret_key=self.secret_key, session_token=self.session_token)
        return fs.S3FileSystem(**kwargs)


@dataclass(frozen=True)
class ObjectInfo:
    url: str
    size: int
    etag: str
    last_modified: datetime | None

    @property
    def fingerprint(self) -> str:
        return f"{self.size}:{self.etag}"


class ObjectStore:
    """Local files and ``s3://`` objects behind one interface.

    ``settings``: S3 access (an :class:`S3Settings` or a mapping of its fields, or a callable returning
    one, called once at the first S3 operation, e.g. ``ObjectStoreHook(conn_id).settings``; None: boto3's
    default chain). ``client``: an existing boto3 S3 client (tests).
    """

    def __init__(self, settings: S3Settings | Mapping[str, Any] | Callable[[], S3Settings | Mapping[str, Any]] | None = None,
                 *, client: Any = None) -> None:
        self._settings = settings
        self._client = client
        self._lock = threading.Lock()

    @property
    def settings(self) -> S3Settings:
        with self._lock:
            if callable(self._settings):
                self._settings = self._settings()
            if self._settings is None:
                self._settings = S3Settings()
            elif not isinstance(self._settings, S3Settings):
                self._settings = S3Settings(**dict(self._settings))
            return self._settings

    def client(self) -> Any:
        """The boto3 S3 client (created once)."""
        if self._client is None:
            settings = self.settings
            with self._lock:
                if self._client is None:
                    self._client = settings.client()
        return self._client

    def arrow_fs(self, url: str | os.PathLike[str]) -> tuple[Any, str]:
        """``(pyarrow file system, path in it)`` for a local path or an ``s3://`` URL."""
        from pyarrow import fs

        if is_s3(url):
            return self.settings.arrow_filesystem(), str(url)[len(S3_SCHEME):]
        return fs.LocalFileSystem(), str(Path(url).resolve())

    # -- listing -------------------------------------------------------------------------------
    def list(self, url: str | os.PathLike[str], pattern: str = "*", *, recursive: bool = False) -> dict[str, ObjectInfo]:
        """Files under ``url`` whose name matches ``pattern`` (direct children unless ``recursive``).

        A missing directory or prefix is empty. Keys are full paths / URLs, sorted.
        """
        out: dict[str, ObjectInfo] = {}
        if is_s3(url):
            bucket, prefix = split_s3(str(url))
            if prefix and not prefix.endswith("/"):
                prefix += "/"
            kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix}
            if not recursive:
                kwargs["Delimiter"] = "/"
            for page in self.client().get_paginator("list_objects_v2").paginate(**kwargs):
                for obj in page.get("Contents", []) or []:
                    key = obj["Key"]
                    name = key[len(prefix):]
                    if not name or (not recursive and "/" in name) or not fnmatch.fnmatch(basename(name), pattern):
                        continue
                    u = f"{S3_SCHEME}{bucket}/{key}"
                    out[u] = ObjectInfo(url=u, size=int(obj.get("Size", 0)), etag=str(obj.get("ETag", "")).strip('"'),
                                        last_modified=obj.get("LastModified"))
            return dict(sorted(out.items()))
        root = Path(url)
        if not root.is_dir():
            return {}
        files = root.rglob(pattern) if recursive else root.glob(pattern)
        for p in files:
            if not p.is_file() or any(part.startswith(".") for part in p.relative_to(root).parts):
                continue  # hidden files are temporaries of atomic writers
            st = p.stat()
            out[str(p)] = ObjectInfo(url=str(p), size=st.st_size, etag=f"{st.st_mtime_ns}",
                                     last_modified=datetime.fromtimestamp(st.st_mtime, UTC))
        return dict(sorted(out.items()))

    def list_dirs(self, url: str | os.PathLike[str]) -> builtins.list[str]:
        """Names of the direct sub-directories (local) or common prefixes (S3) under ``url``, sorted."""
        if is_s3(url):
            bucket, prefix = split_s3(str(url))
            if prefix and not prefix.endswith("/"):
                prefix += "/"
            names: set[str] = set()
            pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/")
            for page in pages:
                for cp in page.get("CommonPrefixes", []) or []:
                    names.add(cp["Prefix"][len(prefix):].rstrip("/"))
            return sorted(names)
        root = Path(url)
        return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []

    def head(self, url: str | os.PathLike[str]) -> ObjectInfo | None:
        """Size / etag of one object or file, or None when it does not exist."""
        if not is_s3(url):
            p = Path(url)
            if not p.is_file():
                return None
            st = p.stat()
            return ObjectInfo(url=str(p), size=st.st_size, etag=f"{st.st_mtime_ns}",
                              last_modified=datetime.fromtimestamp(st.st_mtime, UTC))
        from botocore.exceptions import ClientError

        bucket, key = split_s3(str(url))
        try:
            r = self.client().head_object(Bucket=bucket, Key=key)
        except ClientError as e:
            if str(e.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound", "NoSuchBucket"):
                return None
            raise
        return ObjectInfo(url=str(url), size=int(r.get("ContentLength", 0)), etag=str(r.get("ETag", "")).strip('"'),
                          last_modified=r.get("LastModified"))

    def exists(self, url: str | os.PathLike[str]) -> bool:
        return self.head(url) is not None

    # -- whole objects -------------------------------------------------------------------------
    def read_bytes(self, url: str | os.PathLike[str]) -> bytes:
        if is_s3(url):
            bucket, key = split_s3(str(url))
            return bytes(self.client().get_object(Bucket=bucket, Key=key)["Body"].read())
        return Path(url).read_bytes()

    def read_json(self, url: str | os.PathLike[str]) -> Any:
        return json.loads(self.read_bytes(url))

    def write_bytes(self, url: str | os.PathLike[str], data: bytes | str, *, if_absent: bool = False) -> bool:
        """Write a whole object (local: atomically). ``if_absent``: only when it does not exist yet
        (S3: a conditional ``PUT If-None-Match: *``); returns False when it already existed."""
        payload = data.encode("utf-8") if isinstance(data, str) else data
        if is_s3(url):
            bucket, key = split_s3(str(url))
            kwargs: dict[str, Any] = {"IfNoneMatch": "*"} if if_absent else {}
            try:
                self.client().put_object(Bucket=bucket, Key=key, Body=payload, **kwargs)
            except Exception as e:  # botocore ClientError: 412 when the object exists
                code = str(getattr(e, "response", {}).get("Error", {}).get("Code", ""))
                if if_absent and code in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                    return False
                raise
            return True
        if if_absent and Path(url).exists():
            return False
        atomic_write(url, payload)
        return True

    def write_json(self, url: str | os.PathLike[str], obj: Any, *, if_absent: bool = False) -> bool:
        return self.write_bytes(url, json.dumps(obj, indent=2, sort_keys=True, default=str), if_absent=if_absent)

    def delete(self, url: str | os.PathLike[str]) -> None:
        if is_s3(url):
            bucket, key = split_s3(str(url))
            self.client().delete_object(Bucket=bucket, Key=key)
        else:
            Path(url).unlink(missing_ok=True)

    # -- files -----------------------------------------------------------------------------------
    def download(self, url: str, dest: str | os.PathLike[str]) -> Path:
        """Copy one object to the local file ``dest`` (atomically); a missing object is a DataValidationError."""
        dest = Path(dest)
        if not is_s3(url):
            if not Path(url).is_file():
                raise DataValidationError(f"file {url} does not exist (moved or deleted?)")
            with atomic_path(dest) as tmp:
                tmp.write_bytes(Path(url).read_bytes())
            return dest
        bucket, key = split_s3(url)
        try:
            with atomic_path(dest) as tmp:
                self.client().download_file(bucket, key, str(tmp))
        except Exception as e:
            if self.head(url) is None:
                raise DataValidationError(
                    f"object {url} does not exist (moved or deleted after it landed?); land it again to reprocess."
                ) from e
            raise
        return dest

    def upload(self, local: str | os.PathLike[str], url: str) -> None:
        """Copy a local file to ``url`` (an ``s3://`` URL, or a local path: copied atomically)."""
        if is_s3(url):
            bucket, key = split_s3(url)
            self.client().upload_file(str(local), bucket, key)
        else:
            with atomic_path(url) as tmp:
                tmp.write_bytes(Path(local).read_bytes())

    @contextlib.contextmanager
    def localized(self, paths: builtins.list[str]) -> Iterator[builtins.list[str]]:
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
        with tempfile.TemporaryDirectory(prefix="mlops-s3-") as tmp:
            local: list[str] = []
            for p in paths:
                if is_s3(p):
                    dest = self.download(p, Path(tmp, basename(p)))
                    log.info("downloaded %s (%d bytes) to %s", p, dest.stat().st_size, dest)
                    local.append(str(dest))
                else:
                    local.append(p)
            yield local


#: The store of a process without an Airflow connection (boto3's default chain for s3:// URLs).
DEFAULT_STORE = ObjectStore()


# --------------------------------------------------------------------------------------------------
# Transitional module-level API (callers still passing an Airflow connection id). Each domain moves to
# an ObjectStore handed over by its operator; these go once no caller is left.
# --------------------------------------------------------------------------------------------------


def _legacy_store(aws_conn_id: str | None, s3: Any = None) -> ObjectStore:
    if s3 is not None:
        return ObjectStore(client=s3)
    from mlops_provider.exceptions import MissingDependencyError

    try:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    except ImportError as e:  # pragma: no cover - the amazon provider is a dependency of the aws extra
        raise MissingDependencyError("apache-airflow-providers-amazon", "aws") from e
    return ObjectStore(client=S3Hook(aws_conn_id=aws_conn_id).get_conn())


def client(aws_conn_id: str | None = DEFAULT_AWS_CONN_ID) -> Any:
    return _legacy_store(aws_conn_id).client()


def list_objects(prefix_url: str, pattern: str = "*", *, aws_conn_id: str | None = DEFAULT_AWS_CONN_ID,
                 s3: Any = None) -> dict[str, ObjectInfo]:
    return _legacy_store(aws_conn_id, s3).list(prefix_url, pattern)


def head(url: str, *, aws_conn_id: str | None = DEFAULT_AWS_CONN_ID, s3: Any = None) -> ObjectInfo | None:
    return _legacy_store(aws_conn_id, s3).head(url)


def download(url: str, dest: str | os.PathLike[str], *, aws_conn_id: str | None = DEFAULT_AWS_CONN_ID,
             s3: Any = None) -> Path:
    return _legacy_store(aws_conn_id, s3).download(url, dest)


def upload(local: str | os.PathLike[str], url: str, *, aws_conn_id: str | None = DEFAULT_AWS_CONN_ID,
           s3: Any = None) -> None:
    _legacy_store(aws_conn_id, s3).upload(local, url)


@contextlib.contextmanager
def localized(paths: list[str], *, aws_conn_id: str | None = DEFAULT_AWS_CONN_ID) -> Iterator[list[str]]:
    if not any(is_s3(p) for p in paths):
        yield list(paths)
        return
    with _legacy_store(aws_conn_id).localized(paths) as local:
        yield local
