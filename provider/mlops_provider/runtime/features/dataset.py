"""The training dataset: labels read, deterministically sampled, joined point-in-time with a feature
service and written as an immutable snapshot (runtime module)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from mlops_provider.exceptions import DataValidationError, FeatureStoreError
from mlops_provider.runtime.features.materialize import parse_utc
from mlops_provider.runtime.features.snapshot import write_snapshot
from mlops_provider.runtime.io.objstore import ObjectStore


def _read_labels(labels_dir: str | os.PathLike[str]) -> pd.DataFrame:
    d = Path(labels_dir)
    files = sorted(d.glob("*.parquet")) if d.is_dir() else ([d] if d.is_file() else [])
    if not files:
        raise DataValidationError(
            f"no label partitions (*.parquet) under {d}. Run the feature pipeline (offline partition task) first."
        )
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def deterministic_sample(df: pd.DataFrame, n: int, key_cols: list[str]) -> pd.DataFrame:
    """The ``n`` rows with the smallest content hash of ``key_cols`` (same input -> same sample)."""
    if n >= len(df):
        return df
    h = pd.util.hash_pandas_object(df[key_cols], index=False).to_numpy()
    keep = sorted(pd.Series(h).nsmallest(n).index)  # nsmallest is stable on ties (keeps first)
    return df.iloc[keep]


def build_training_dataset(
    store: Any,
    *,
    feature_service: str,
    labels_dir: str,
    label: str,
    snapshot_root: str,
    validation_days: int = 21,
    end: str | None = None,
    max_rows: int | None = None,
    objects: ObjectStore | None = None,
) -> dict[str, Any]:
    """Point-in-time join of the label frame with ``feature_service``; write an immutable snapshot.

    ``store`` is the ``feast.FeatureStore``; ``objects`` the object store an ``s3://`` ``snapshot_root``
    is written through.

    Returns ``{"path", "hash", "rows": {"train", "validation"}, "split": {...}, "window": {...},
    "feature_service", "label"}``.
    """
    if validation_days < 1:
        raise DataValidationError(f"validation_days must be >= 1, got {validation_days}")
    labels = _read_labels(labels_dir)
    required = ["event_timestamp", label]
    missing = [c for c in required if c not in labels.columns]
    if missing:
        raise DataValidationError(f"label partitions under {labels_dir} lack column(s) {missing}")
    labels["event_timestamp"] = pd.to_datetime(labels["event_timestamp"], utc=True).astype("datetime64[ns, UTC]")
    if end:
        labels = labels[labels["event_timestamp"] < pd.Timestamp(parse_utc(end, "end"))]
    entity_cols = [c for c in labels.columns if c not in (label,)]
    labels = labels.sort_values(entity_cols, kind="stable").reset_index(drop=True)
    if max_rows:
        labels = deterministic_sample(labels, int(max_rows), entity_cols).reset_index(drop=True)
    if labels.empty:
        raise DataValidationError(f"no labelled rows under {labels_dir} before end={end!r}; nothing to train on")
    if labels[label].isna().any():  # the values' type is the task's business (training: runtime/training/heads)
        raise DataValidationError(f"label {label!r} must have no nulls; {int(labels[label].isna().sum())} found")

    try:
        fs = store.get_feature_service(feature_service)
    except Exception as e:
        raise FeatureStoreError(
            f"feature service {feature_service!r} is not in the Feast registry of {store.repo_path} ({e}). "
            "Run the feast apply task, or fix the feature service name in the model YAML."
        ) from e
    try:
        joined = store.get_historical_features(entity_df=labels, features=fs).to_df()
    except Exception as e:
        raise FeatureStoreError(f"point-in-time join for {feature_service!r} failed: {type(e).__name__}: {e}") from e
    # request-time features come back twice (entity frame input + on-demand output): keep the output
    joined = joined.loc[:, ~joined.columns.duplicated(keep="last")]
    feature_names = [f.name for proj in fs.feature_view_projections for f in proj.features]
    # event time first, then the label partition's own columns in their order (entity keys, request fields)
    key_cols = ["event_timestamp"]
    key_cols += [c for c in labels.columns if c not in key_cols and c not in feature_names and c != label]
    cols = list(dict.fromkeys([*key_cols, *feature_names, label]))
    df = joined[cols].sort_values(cols, kind="stable", na_position="last").reset_index(drop=True)
    if len(df) != len(labels):
        raise FeatureStoreError(f"point-in-time join returned {len(df)} rows for {len(labels)} label rows")

    ts = df["event_timestamp"]
    first, last = ts.min(), ts.max()
    # cut on the data's own clock: exactly validation_days before the last event (not at a UTC midnight)
    validation_start = last - pd.Timedelta(days=validation_days)
    df["split"] = (ts >= validation_start).map({True: "validation", False: "train"})
    rows = {"train": int((df["split"] == "train").sum()), "validation": int((df["split"] == "validation").sum())}
    if rows["train"] == 0 or rows["validation"] == 0:
        raise DataValidationError(
            f"time split leaves an empty side {rows}: the data spans {first} .. {last} and validation_days="
            f"{validation_days}. Land more data or lower validation_days."
        )
    split = {
        "method": "time",
        "train_end": validation_start.isoformat(),
        "validation_start": validation_start.isoformat(),
        "validation_end": last.isoformat(),
        "validation_days": int(validation_days),
    }
    window = {"start": first.isoformat(), "end": last.isoformat()}
    path, manifest = write_snapshot(
        df,
        {
            "feature_service": feature_service,
            "label": label,
            "rows": rows,
            "split": split,
            "window": window,
            "features": feature_names,
            "sample": {"max_rows": max_rows} if max_rows else None,
        },
        snapshot_root,
        store=objects,
    )
    return {
        "path": path,
        "hash": manifest["hash"],
        "rows": manifest["rows"],
        "split": manifest["split"],
        "window": manifest["window"],
        "feature_service": feature_service,
        "label": label,
    }


__all__ = ["build_training_dataset", "deterministic_sample"]
