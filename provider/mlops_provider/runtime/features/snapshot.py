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

Object storage: ``root`` (and the ``path`` given to :func:`load_snapshot`) may be an ``s3://bucket/prefix``
URL, reached through an :class:`~mlops_provider.runtime.io.objstore.ObjectStore` (``store``; the operator
builds it from its ``aws`` connection, None is the process default). The snapshot is
built in a local temporary directory exactly as above (same hash), then published under
``<root>/<hash>/``: ``data.parquet`` first, ``manifest.json`` last and only if absent (a conditional
``PUT If-None-Match: *``), so a snapshot without a manifest is treated as absent (a crashed writer
leaves nothing a reader would use) and an existing snapshot is never overwritten.

:func:`log_snapshot_input` records a snapshot as an MLflow dataset input of a run (source = the
snapshot path, digest = its hash).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from mlops_provider.exceptions import DataValidationError
from mlops_provider.runtime.io import objstore
from mlops_provider.runtime.io.objstore import ObjectStore

log = logging.getLogger(__name__)

DATA_FILE = "data.parquet"
MANIFEST_FILE = "manifest.json"
HASH_LEN = 16  # hex characters of the hash shown in messages
MLFLOW_DIGEST_LEN = 36  # MLflow's limit on a dataset digest


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
    df: pd.DataFrame,
    manifest_fields: dict[str, Any],
    root: str | os.PathLike[str],
    *,
    store: ObjectStore | None = None,
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
    if objstore.is_s3(root):
        with tempfile.TemporaryDirectory(prefix="mlops-snapshot-") as local_root:
            local, _ = write_snapshot(df, manifest_fields, local_root)
            return publish_snapshot(local, str(root), store=store)
    root_path = Path(root)
    root_path.mkdir(parents=True, exist_ok=True)
    # Not runtime.io.atomic.atomic_path: the target directory is named by the content hash, known only
    # once the data is written into the temporary directory, and an existing target is reused (a
    # concurrent writer's rename wins), never replaced -- so the directory rename stays here.
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


def publish_snapshot(
    local_dir: str | os.PathLike[str], root: str, *, store: ObjectStore | None = None
) -> tuple[str, dict[str, Any]]:
    """Copy a local snapshot directory to ``<root>/<hash>/`` on S3; reuse the remote one when it exists.

    ``data.parquet`` is uploaded first and ``manifest.json`` last, with ``If-None-Match: *`` so a
    concurrent writer's manifest is never replaced (its snapshot is then returned).
    """
    store = _store(store)
    local = Path(local_dir)
    manifest = _read_manifest(local)
    target = objstore.join_s3(root, str(manifest["hash"]))
    if store.head(objstore.join_s3(target, MANIFEST_FILE)) is not None:
        log.info("snapshot %s already exists; reusing it", target)
        return target, _read_remote_manifest(target, store)
    store.upload(local / DATA_FILE, objstore.join_s3(target, DATA_FILE))
    if not store.write_bytes(objstore.join_s3(target, MANIFEST_FILE), (local / MANIFEST_FILE).read_bytes(),
                             if_absent=True):
        log.info("snapshot %s was written concurrently; reusing it", target)
        return target, _read_remote_manifest(target, store)
    log.info("published snapshot %s (%s rows)", target, manifest.get("rows"))
    return target, manifest


def _store(store: ObjectStore | None, aws_conn_id: str | None = None) -> ObjectStore:
    if store is not None:
        return store
    if aws_conn_id is not None:
        # Transitional, for callers outside the features area (serving's batch scoring and infra
        # validation) that still pass a connection id; goes with objstore's legacy functions.
        return objstore._legacy_store(aws_conn_id)
    return objstore.DEFAULT_STORE


def read_manifest(
    path: str | os.PathLike[str], *, store: ObjectStore | None = None, aws_conn_id: str | None = None
) -> dict[str, Any]:
    """The manifest of a snapshot (local directory or ``s3://`` URL) without reading its data.

    ``aws_conn_id`` is transitional (pass ``store``)."""
    if objstore.is_s3(path):
        return _read_remote_manifest(str(path).rstrip("/"), _store(store, aws_conn_id))
    return _read_manifest(Path(path))


def _read_remote_manifest(target: str, store: ObjectStore) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mlops-snapshot-") as tmp:
        store.download(objstore.join_s3(target, MANIFEST_FILE), Path(tmp, MANIFEST_FILE))
        return _read_manifest(Path(tmp))


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


def load_snapshot(
    path: str | os.PathLike[str],
    *,
    verify: bool = True,
    store: ObjectStore | None = None,
    aws_conn_id: str | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a snapshot directory (or its ``data.parquet`` / ``manifest.json``): ``(DataFrame, manifest)``.

    ``path`` may be an ``s3://`` URL read through ``store`` (a snapshot whose manifest is missing counts
    as absent; ``aws_conn_id`` is transitional: pass ``store``).
    Raises :class:`DataValidationError` when the snapshot is missing, unreadable, or (with
    ``verify=True``, the default) when its data no longer matches the hash in its manifest.
    """
    if objstore.is_s3(path):
        return _load_remote(str(path), verify=verify, store=_store(store, aws_conn_id))
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


def _load_remote(url: str, *, verify: bool, store: ObjectStore) -> tuple[pd.DataFrame, dict[str, Any]]:
    url = _remote_dir(url)
    with tempfile.TemporaryDirectory(prefix="mlops-snapshot-") as tmp:
        local = Path(tmp, "snapshot")
        try:
            _download(url, local, store)
            return load_snapshot(local, verify=verify)
        except DataValidationError as e:
            raise DataValidationError(str(e).replace(str(local), url)) from e


def _remote_dir(url: str) -> str:
    url = url.rstrip("/")
    return url.rsplit("/", 1)[0] if objstore.basename(url) in (DATA_FILE, MANIFEST_FILE) else url


def _download(url: str, local: Path, store: ObjectStore) -> None:
    if store.head(objstore.join_s3(url, MANIFEST_FILE)) is None:
        raise DataValidationError(
            f"snapshot {url} does not exist (no {MANIFEST_FILE}; an interrupted write leaves none). Check the "
            "snapshot path passed through XCom / the model version tag 'snapshot_path', or re-run the "
            "training-dataset task."
        )
    for name in (MANIFEST_FILE, DATA_FILE):
        store.download(objstore.join_s3(url, name), local / name)


def fetch_snapshot(path: str | os.PathLike[str], dest: str | os.PathLike[str], *,
                   store: ObjectStore | None = None) -> str:
    """A local directory holding the snapshot ``path``: ``path`` itself when it is local, else ``dest`` after
    its manifest and data were downloaded through ``store`` (for processes without the connection, e.g. the
    ranks of a distributed training run). The hash is checked by whoever loads it."""
    if not objstore.is_s3(path):
        return str(path)
    _download(_remote_dir(str(path)), Path(dest), _store(store))
    return str(dest)


def log_snapshot_input(
    client: Any, run_id: str, path: str, manifest: dict[str, Any], *, context: str = "training"
) -> dict[str, Any]:
    """Log the snapshot as an MLflow dataset input of ``run_id`` (source = ``path``, digest = its hash).

    MLflow caps a digest at 36 characters: the digest is the hash's first 36 hex characters and the
    full hash is in the dataset profile. Idempotent: a run that already has this (name, digest) input
    is left unchanged. Returns the dataset's ``{"name", "digest", "source"}``.
    """
    from mlflow.entities import Dataset, DatasetInput, InputTag

    digest = str(manifest["hash"])[:MLFLOW_DIGEST_LEN]
    name = f"{manifest.get('feature_service', 'snapshot')}-{digest[:HASH_LEN]}"
    info = {"name": name, "digest": digest, "source": str(path)}
    run = client.get_run(run_id)
    for existing in run.inputs.dataset_inputs or []:
        if existing.dataset.name == name and existing.dataset.digest == digest:
            log.info("snapshot %s is already an input of run %s", path, run_id)
            return info
    dataset = Dataset(
        name=name,
        digest=digest,
        source_type="s3" if objstore.is_s3(path) else "local",
        source=json.dumps({"uri": str(path)}),
        schema=json.dumps({"columns": manifest.get("schema", {})}),
        profile=json.dumps({"hash": manifest["hash"], "rows": manifest.get("rows"), "split": manifest.get("split"),
                            "window": manifest.get("window")}, default=str),
    )
    client.log_inputs(run_id, datasets=[DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)])])
    log.info("logged snapshot %s as dataset input %s of run %s", path, name, run_id)
    return info


# ----------------------------------------------------------------------------------------------------
# the gate's frozen evaluation split
# ----------------------------------------------------------------------------------------------------

EVALUATION_SPLIT = "evaluation"


def split_evaluation(
    df: pd.DataFrame, manifest: dict[str, Any], evaluation_days: int
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Relabel the last ``evaluation_days`` days of the validation split as ``split == "evaluation"``: the rows
    at or after ``max(event_timestamp) - evaluation_days``.

    The evaluation rows lie strictly after every train / validation row, so a model trained on the
    snapshot never saw them: the gate scores challenger and champion on them. Training code reads only
    ``train`` and ``validation`` and ignores the new split. Returns ``(data, manifest fields)`` to pass to
    :func:`write_snapshot` (hash, schema and created_at are recomputed there).
    """
    if evaluation_days < 1:
        raise DataValidationError(f"evaluation_days must be >= 1, got {evaluation_days}")
    if "split" not in df.columns or "event_timestamp" not in df.columns:
        raise DataValidationError("split_evaluation: the snapshot lacks the 'split' / 'event_timestamp' columns.")
    out = df.copy()
    ts = pd.to_datetime(out["event_timestamp"], utc=True)
    last = ts.max()
    # cut on the data's own clock: the window is [last event - evaluation_days, last event], exactly
    # evaluation_days long (a cut at UTC midnight left 6 days 4 hours of a 7-day window for data on local time)
    start = last - pd.Timedelta(days=int(evaluation_days))
    moved = (out["split"] == "validation") & (ts >= start)
    if (out["split"] == "train").to_numpy()[(ts >= start).to_numpy()].any():
        raise DataValidationError(
            f"split_evaluation: the last {evaluation_days} days reach into the train split; build the snapshot "
            "with validation_days + evaluation_days of validation."
        )
    out.loc[moved, "split"] = EVALUATION_SPLIT
    rows = {s: int((out["split"] == s).sum()) for s in ("train", "validation", EVALUATION_SPLIT)}
    if min(rows.values()) == 0:
        raise DataValidationError(
            f"time split leaves an empty side {rows}: the data spans {ts.min()} .. {last} and evaluation_days="
            f"{evaluation_days}. Land more data or lower training.evaluation_days / validation_days."
        )
    validation_ts = ts[out["split"] == "validation"]
    split = dict(manifest.get("split") or {})
    split.update({
        "validation_end": validation_ts.max().isoformat(),
        "validation_days": int(split.get("validation_days", 0)) - int(evaluation_days) or None,
        "training_end": start.isoformat(),  # exclusive: every train / validation row is before it
        "evaluation_start": start.isoformat(),
        "evaluation_end": last.isoformat(),
        "evaluation_days": int(evaluation_days),
    })
    fields = {k: v for k, v in manifest.items() if k not in ("hash", "schema", "created_at", "rows", "split")}
    fields.update({"rows": rows, "split": split})
    return out, fields


def add_evaluation_split(
    path: str | os.PathLike[str],
    evaluation_days: int,
    root: str | os.PathLike[str],
    *,
    store: ObjectStore | None = None,
) -> tuple[str, dict[str, Any]]:
    """Write a copy of the snapshot at ``path`` with an evaluation split under ``root``: ``(path, manifest)``.

    Immutable and content-addressed like any snapshot: the same input gives the same hash and path.
    """
    df, manifest = load_snapshot(path, store=store)
    data, fields = split_evaluation(df, manifest, evaluation_days)
    return write_snapshot(data, fields, root, store=store)


def training_window(manifest: dict[str, Any]) -> tuple[pd.Timestamp | None, pd.Timestamp | None, bool]:
    """``(start, end, end_inclusive)`` of the rows a model trained on this snapshot saw (train + validation).

    With an evaluation split the end is its start (exclusive); otherwise the whole window (inclusive).
    """
    split = manifest.get("split") or {}
    window = manifest.get("window") or {}

    def ts(value: Any) -> pd.Timestamp | None:
        if not value:
            return None
        t = pd.Timestamp(value)
        return t.tz_convert("UTC") if t.tzinfo else t.tz_localize("UTC")

    if split.get("training_end"):
        return ts(window.get("start")), ts(split["training_end"]), False
    return ts(window.get("start")), ts(window.get("end")), True
