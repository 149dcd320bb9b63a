"""Offline batch scoring (the batch inference pipeline): a dataset window -> the registered model -> parquet.

:func:`batch_predict` resolves ``models:/<model>@<alias>`` (or takes a pinned ``version``) once,
reads the source, keeps the rows whose ``timestamp_column`` falls in ``[window_start, window_end)``,
scores them with ``mlflow.pyfunc`` in chunks, and writes

    <output_root>/<model>/v<version>/<window key>.parquet

with every source column plus ``prediction`` (probability), ``model_name``, ``model_version``. The
window key is ``<start>__<end>`` (``%Y%m%dT%H%M%SZ``) or ``all``.

Sources: a snapshot directory (``data.parquet`` + ``manifest.json``, local or ``s3://``), a parquet
file, or a directory of parquet files (local); ``s3://`` parquet files are downloaded first.

**Idempotent per (interval, model version):** an existing output file is left untouched and its
row count returned (``created: False``); a new file is written atomically (a temporary sibling
renamed into place; on S3 a single ``PUT`` of the finished file), so a crashed run leaves nothing a
reader would use. A re-run after the champion moved writes the new version's file beside the old one.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops_provider.exceptions import BatchPredictionError, ModelRegistryError
from mlops_provider.runtime.io import objstore
from mlops_provider.runtime.io.objstore import ObjectStore

log = logging.getLogger(__name__)

WINDOW_FMT = "%Y%m%dT%H%M%SZ"


def _ts(value: str | datetime | None) -> datetime | None:
    if value is None or value == "":
        return None
    dt = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def window_key(start: datetime | None, end: datetime | None) -> str:
    if start is None and end is None:
        return "all"
    return f"{start.strftime(WINDOW_FMT) if start else 'min'}__{end.strftime(WINDOW_FMT) if end else 'max'}"


def output_path(output_root: str, model_name: str, version: str, key: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", model_name)
    if objstore.is_s3(output_root):
        return objstore.join_s3(output_root, name, f"v{version}", f"{key}.parquet")
    return str(Path(output_root).expanduser().resolve() / name / f"v{version}" / f"{key}.parquet")


def _read_source(source: str, store: ObjectStore) -> Any:
    import pandas as pd

    from mlops_provider.runtime.features.snapshot import MANIFEST_FILE, load_snapshot

    if objstore.is_s3(source):
        if source.rstrip("/").endswith(".parquet"):
            with store.localized([source]) as [local]:
                return pd.read_parquet(local)
        return load_snapshot(source, store=store)[0]
    p = Path(source).expanduser()
    if (p / MANIFEST_FILE).is_file() or (
        p.name in ("data.parquet", MANIFEST_FILE) and (p.parent / MANIFEST_FILE).is_file()
    ):
        return load_snapshot(p)[0]
    if p.is_file() or p.is_dir():
        return pd.read_parquet(p)
    raise BatchPredictionError(
        f"batch source {source} does not exist. Pass a snapshot directory, a parquet file or a directory of "
        "parquet files (local or s3://)."
    )


def _rows_of(path: str, store: ObjectStore) -> int:
    import pyarrow.parquet as pq

    with store.localized([path]) as [local]:
        return int(pq.ParquetFile(local).metadata.num_rows)


def model_input(frame: Any, categorical: list[str], numeric: list[str]) -> Any:
    """The pyfunc's input: categoricals as strings (missing -> ""), numerics as float64 (the gate's encoding)."""
    import pandas as pd

    x = pd.DataFrame(
        {c: frame[c].astype(object).where(frame[c].notna(), "").astype(str) for c in categorical},
        index=frame.index,
    )
    for c in numeric:
        x[c] = pd.to_numeric(frame[c], errors="coerce").astype("float64")
    return x


def batch_predict(
    model_name: str,
    source: str,
    output_root: str,
    features: Mapping[str, list[str]],
    *,
    alias: str = "champion",
    version: str | None = None,
    window_start: str | datetime | None = None,
    window_end: str | datetime | None = None,
    timestamp_column: str = "event_timestamp",
    chunk_rows: int = 50_000,
    mlflow_tracking_uri: str | None = None,
    mlflow_registry_uri: str | None = None,
    store: ObjectStore | None = None,
) -> dict[str, Any]:
    """Score ``source`` in the window with the registered model (module docstring); returns a summary.

    ``store`` reads and writes ``s3://`` locations (None: the process's default store).
    """
    import mlflow
    import numpy as np
    import pandas as pd
    from mlflow import MlflowClient

    registry = mlflow_registry_uri or mlflow_tracking_uri
    if mlflow_tracking_uri:
        mlflow.set_tracking_uri(mlflow_tracking_uri)
    if registry:
        mlflow.set_registry_uri(registry)
    if version is None:
        client = MlflowClient(tracking_uri=mlflow_tracking_uri, registry_uri=registry)
        try:
            version = str(client.get_model_version_by_alias(model_name, alias).version)
        except Exception as e:  # noqa: BLE001 - MlflowException has no finer "not found"
            raise ModelRegistryError(
                f"batch_predict: MLflow has no {model_name}@{alias} ({e}). Promote a model first or pass version=."
            ) from e
    version = str(version)
    start, end = _ts(window_start), _ts(window_end)
    key = window_key(start, end)
    target = output_path(output_root, model_name, version, key)
    summary: dict[str, Any] = {
        "model_name": model_name,
        "model_version": version,
        "source": str(source),
        "output": target,
        "window": {"start": start.isoformat() if start else None, "end": end.isoformat() if end else None},
    }
    store = store if store is not None else objstore.DEFAULT_STORE
    if store.exists(target):
        rows = _rows_of(target, store)
        log.info("%s already scored (%d rows); nothing to do", target, rows)
        return {**summary, "rows": rows, "created": False}

    categorical, numeric = list(features.get("categorical") or []), list(features.get("numeric") or [])
    df = _read_source(str(source), store)
    missing = [c for c in [*categorical, *numeric] if c not in df.columns]
    if missing:
        raise BatchPredictionError(
            f"batch source {source} lacks the model's feature columns {missing}; score a dataset built from the "
            "model's feature service (e.g. a training snapshot) or fix model.features in the YAML."
        )
    if start is not None or end is not None:
        if timestamp_column not in df.columns:
            raise BatchPredictionError(
                f"batch source {source} has no timestamp column {timestamp_column!r} to cut the window {key} from."
            )
        ts = pd.to_datetime(df[timestamp_column], utc=True)
        mask = pd.Series(True, index=df.index)
        if start is not None:
            mask &= ts >= pd.Timestamp(start)
        if end is not None:
            mask &= ts < pd.Timestamp(end)
        df = df[mask.to_numpy()]
    df = df.reset_index(drop=True)

    model_uri = f"models:/{model_name}/{version}"
    preds = np.empty(len(df), dtype="float64")
    if len(df):
        try:
            model = mlflow.pyfunc.load_model(model_uri)
        except Exception as e:  # noqa: BLE001
            raise ModelRegistryError(f"batch_predict: cannot load {model_uri}: {e}") from e
        for lo in range(0, len(df), max(1, chunk_rows)):
            chunk = df.iloc[lo : lo + chunk_rows]
            p = np.asarray(model.predict(model_input(chunk, categorical, numeric)), dtype="float64").reshape(
                -1
            )
            if p.shape != (len(chunk),) or not np.all(np.isfinite(p)):
                raise BatchPredictionError(
                    f"{model_uri} returned {p.shape[0]} predictions for {len(chunk)} rows or non-finite values "
                    f"(rows {lo}..{lo + len(chunk) - 1} of {source}); nothing was written."
                )
            preds[lo : lo + len(chunk)] = p
    out = df.copy()
    out["prediction"] = preds
    out["model_name"] = model_name
    out["model_version"] = version

    with tempfile.TemporaryDirectory(prefix="mlops-batch-") as tmp:
        local = Path(tmp) / "part.parquet"
        out.to_parquet(local, index=False)
        store.upload(local, target)  # one PUT on S3; a local target is replaced atomically
    log.info("Scored %d rows of %s with %s into %s", len(out), source, model_uri, target)
    return {**summary, "rows": int(len(out)), "created": True}
