"""The gate's evaluation set: the frozen ``evaluation`` split of a snapshot and the leakage window (runtime module).

The evaluation split is a time window after every row the challenger trained or early-stopped on
(``training.evaluation_days``; written by the training_dataset task). :func:`evaluation_frame` turns it
into the pyfunc's input (strings / doubles), its labels and its side columns (slice / behavioral columns
that are no model input, plus ``event_timestamp``). :func:`model_window` reads a version's training window
from the manifest of the snapshot its ``snapshot_path`` tag names; :func:`overlaps` tells whether an
evaluation window reaches into it (the scores would be inflated).
"""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd
from mlflow import MlflowClient

from mlops_provider.exceptions import ConfigError, GateInputError, MlopsError

log = logging.getLogger(__name__)

EVALUATION_SPLIT = "evaluation"


def evaluation_frame(
    df: pd.DataFrame,
    categorical: list[str],
    numeric: list[str],
    label: str,
    where: str,
    *,
    split: str = EVALUATION_SPLIT,
    extra: list[str] | None = None,
) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame]:
    """The evaluation split as the pyfunc's input (strings / doubles), its raw labels (encoded per task by
    :func:`~.scoring.encode_labels` once the model is known), and its extra columns (slice columns that are
    no model input, plus ``event_timestamp``)."""
    missing = [c for c in [*categorical, *numeric, label, "split"] if c not in df.columns]
    if missing:
        raise ConfigError(
            f"gate: snapshot {where} lacks columns {missing}; check model.features in the YAML."
        )
    if split not in set(df["split"].unique()):
        raise GateInputError(
            f"gate: snapshot {where} has no {split!r} split (splits: {sorted(df['split'].unique())}). The gate "
            "scores on a frozen later window: set training.evaluation_days >= 1 so the training_dataset task "
            "writes one."
        )
    ev = df[df["split"] == split].reset_index(drop=True)
    x = pd.DataFrame({c: ev[c].astype(object).where(ev[c].notna(), "").astype(str) for c in categorical})
    for c in numeric:
        x[c] = pd.to_numeric(ev[c], errors="coerce").astype("float64")
    others = [
        c
        for c in dict.fromkeys([*(extra or []), "event_timestamp"])
        if c in ev.columns and c not in x.columns
    ]
    side = ev[others].copy()
    for c in others:
        if c != "event_timestamp" and not pd.api.types.is_numeric_dtype(side[c]):
            side[c] = side[c].astype(object).where(side[c].notna(), "").astype(str)
    return x, ev[label], side


def utc(value: Any) -> pd.Timestamp | None:
    if value is None or value == "":
        return None
    t = pd.Timestamp(value)
    return t.tz_convert("UTC") if t.tzinfo else t.tz_localize("UTC")


def model_window(client: MlflowClient, model_name: str, version: str, *, store: Any = None) -> dict[str, Any] | None:
    """The training window of a version, from the manifest of the snapshot its ``snapshot_path`` tag names
    (read through ``store`` when on ``s3://``; None when the tag or the manifest is missing)."""
    from mlops_provider.runtime.features.snapshot import read_manifest, training_window

    mv = client.get_model_version(model_name, version)
    path = (mv.tags or {}).get("snapshot_path")
    if not path:
        return None
    try:
        manifest = read_manifest(path, store=store)
    except MlopsError as e:
        log.warning(
            "cannot read the snapshot manifest of %s v%s (%s): training window unknown",
            model_name,
            version,
            e,
        )
        return None
    start, end, inclusive = training_window(manifest)
    return {
        "start": start,
        "end": end,
        "end_inclusive": inclusive,
        "snapshot_hash": manifest.get("hash"),
        "snapshot_path": path,
    }


def overlaps(window: dict[str, Any] | None, eval_start: pd.Timestamp, eval_end: pd.Timestamp) -> bool:
    """True when the evaluation window starts before the training window ends (and ends after it starts)."""
    if not window or window.get("end") is None:
        return False
    end = window["end"]
    before_end = eval_start <= end if window["end_inclusive"] else eval_start < end
    after_start = window.get("start") is None or eval_end >= window["start"]
    return bool(before_end and after_start)


def iso_window(window: dict[str, Any] | None) -> dict[str, Any] | None:
    if window is None:
        return None
    return {k: (v.isoformat() if isinstance(v, pd.Timestamp) else v) for k, v in window.items()}


__all__ = ["EVALUATION_SPLIT", "evaluation_frame", "iso_window", "model_window", "overlaps", "utc"]
