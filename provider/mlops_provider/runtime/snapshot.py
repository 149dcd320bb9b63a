"""Immutable, content-addressed training snapshots (runtime module: heavy imports allowed).

A snapshot is a directory ``<root>/<hash>/`` (``root`` is usually ``ModelPaths.snapshots``)
holding two files:

``data.parquet``
    ``event_timestamp`` (UTC), entity columns, raw feature columns, the label and ``split``.
``manifest.json``
    ``{"hash", "feature_service", "label", "rows": {"train": n, "validation": n},
    "split": {...}, "window": {"start", "end"}, "schema": {col: dtype}, "created_at"}``
    plus any extra fields the writer passes.

The hash is the sha256 of a canonical encoding of the data (column names, dtypes and a
per-row hash of every value, independent of the parquet library version) together with the
feature service and the label. Identical inputs give the identical hash, hence the identical
path; a snapshot that already exists is reused, never overwritten. Writing is atomic: the files
are written to a temporary sibling directory which is then renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from mlops_provider.exceptions import DataValidationError

log = logging.getLogger(__name__)

DATA_FILE = "data.parquet"
MANIFEST_FILE = "manifest.json"
HASH_LEN = 16  # hex characters of the hash shown in messages


def _schema(df: pd.DataFrame) -> dict[str, str]:
    return {str(c): str(t) for c, t in df.dtypes.items()}


def content_hash(df: pd.DataFrame, feature_service: str, label: str) -> str:
    """sha256 of (schema, every value, feature service, label). Row order matters."""
    h = hashlib.sha256()
    h.update(json.dumps({"feature_service": feature_service, "label": label}, sort_keys=True).encode())
    h.update(json.dumps(list(_schema(df).items())).encode())
    h.update(str(len(df)).encode())
    if len(df):
        row_hashes = pd.util.hash_pandas_object(df.reset_index(drop=True), index=False)
        h.update(row_hashes.to_numpy(dtype="uint64").astype("<u8").tobytes())
    return h.hexdigest()


def _roundtrip(df: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Write ``df`` as parquet and read it back, so the hash is taken on exactly what readers see."""
    df.reset_index(drop=True).to_parquet(path, index=False, engine="pyarrow", compression="zstd")
    return pd.read_parquet(path, engine="pyarrow")


def write_snapshot(
    df: pd.DataFrame, manifest_fields: dict[str, Any], root: str | os.PathLike[str]
) -> tuple[str, dict[str, Any]]:
    """Write ``df`` as an immutable snapshot under ``root`` and return ``(path, manifest)``.

    ``manifest_fields`` must contain ``feature_service`` and ``label``; it usually also carries
    ``rows``, ``split`` and ``window``. ``hash``, ``schema`` and ``created_at`` are filled in here
    (``rows`` too, from the ``split`` column, when absent). When a snapshot with the same hash
    already exists its directory and manifest are returned unchanged.
    """
    for key in ("feature_service", "label"):
        if not manifest_fields.get(key):
            raise DataValidationError(
                f"write_snapshot: manifest_fields lacks {key!r}; pass the feature service name and the "
                "label column so the snapshot hash covers them."
            )
    label = str(manifest_fields["label"])
    if label not in df.columns:
        raise DataValidationError(
            f"write_snapshot: label column {label!r} is not in the data (columns: {list(df.columns)})."
        )
    root_path = Path(root)
    root_path.mkdir(parents=True, exist_ok=True)
    tmp = root_path / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        canonical = _roundtrip(df, tmp / DATA_FILE)
        digest = content_hash(canonical, str(manifest_fields["feature_service"]), label)
        target = root_path / digest
        if (target / MANIFEST_FILE).is_file():
            log.info("snapshot %s already exists; reusing it", target)
            return str(target), _read_manifest(target)

        manifest: dict[str, Any] = dict(manifest_fields)
        manifest["hash"] = digest
        manifest["schema"] = _schema(canonical)
        if "rows" not in manifest and "split" in canonical.columns:
            manifest["rows"] = {str(k): int(v) for k, v in canonical["split"].value_counts().sort_index().items()}
        manifest.setdefault("rows", {"total": len(canonical)})
        manifest["created_at"] = datetime.now(UTC).isoformat()
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
        try:
            os.rename(tmp, target)
        except OSError:
            # A concurrent writer won the race (the target now exists and is not empty): reuse its result.
            if (target / MANIFEST_FILE).is_file():
                log.info("snapshot %s was written concurrently; reusing it", target)
                return str(target), _read_manifest(target)
            raise
        log.info("wrote snapshot %s (%d rows)", target, len(canonical))
        return str(target), manifest
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise DataValidationError(
            f"snapshot manifest {path} does not exist. Re-run the training-dataset task to rebuild it."
        ) from e
    except (OSError, ValueError) as e:
        raise DataValidationError(
            f"snapshot manifest {path} is unreadable or not JSON ({e}). Delete {directory} and re-run the "
            "training-dataset task."
        ) from e
    if not isinstance(manifest, dict) or "hash" not in manifest:
        raise DataValidationError(
            f"snapshot manifest {path} has no 'hash' field. Delete {directory} and re-run the "
            "training-dataset task."
        )
    return manifest


def load_snapshot(path: str | os.PathLike[str], *, verify: bool = True) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a snapshot directory (or its ``data.parquet`` / ``manifest.json``): ``(DataFrame, manifest)``.

    Raises :class:`DataValidationError` when the snapshot is missing, unreadable, or (with
    ``verify=True``, the default) when its data no longer matches the hash in its manifest.
    """
    directory = Path(path)
    if directory.name in (DATA_FILE, MANIFEST_FILE):
        directory = directory.parent
    if not directory.is_dir():
        raise DataValidationError(
            f"snapshot {directory} does not exist. Check the snapshot path passed through XCom / the model "
            "version tag 'snapshot_path', or re-run the training-dataset task."
        )
    manifest = _read_manifest(directory)
    data_path = directory / DATA_FILE
    try:
        df = pd.read_parquet(data_path, engine="pyarrow")
    except FileNotFoundError as e:
        raise DataValidationError(
            f"snapshot data {data_path} does not exist. Delete {directory} and re-run the training-dataset task."
        ) from e
    except Exception as e:  # pyarrow raises several types for truncated or garbled files
        raise DataValidationError(
            f"snapshot data {data_path} is corrupt ({type(e).__name__}: {e}). Delete {directory} and re-run "
            "the training-dataset task."
        ) from e
    if verify:
        digest = content_hash(df, str(manifest.get("feature_service", "")), str(manifest.get("label", "")))
        if digest != manifest["hash"]:
            raise DataValidationError(
                f"snapshot {directory} is corrupt: its data hashes to {digest[:HASH_LEN]} but the manifest says "
                f"{str(manifest['hash'])[:HASH_LEN]}. Delete the directory and re-run the training-dataset task."
            )
    return df, manifest
