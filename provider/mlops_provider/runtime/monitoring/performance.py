"""Live model performance once delayed labels land (runtime module).

A logged request's outcome is known only later: when its row lands in the feature pipeline's label
partitions (``<lake>/labels/...parquet``, written by the model's transform: entity keys, request fields,
``event_timestamp`` and the label). :func:`join_outcomes` matches each request to its outcome:

* by ``request_id`` when the label frame carries one (an outcome feed keyed by request), else
* by the ``join_keys`` (the entity keys and request fields of the model) and time: the first outcome
  event at or after the request, within ``time_tolerance_hours`` (``pandas.merge_asof``).

:func:`performance_report` then computes the realized metrics of the champion's task (binary: ROC AUC,
log loss, Brier, accuracy, calibration; multiclass: log loss, accuracy, macro-F1, top-label ECE; regression:
RMSE, MAE, R²; :mod:`~mlops_provider.runtime.monitoring.task_metrics`) overall, per UTC day and per slice,
compares them with the champion's validation metrics, and flags a worsening beyond the YAML bounds
(``max_drop``; a retraining trigger like drift). When the log carries online-experiment columns
(``champion_prediction`` / ``challenger_prediction``, ``variant``), champion and challenger are compared on
the same live traffic with a seeded bootstrap confidence (:mod:`~mlops_provider.runtime.monitoring.variants`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mlops_provider.exceptions import DriftError
from mlops_provider.runtime.io import objstore
from mlops_provider.runtime.io.objstore import ObjectStore
from mlops_provider.runtime.monitoring.live_metrics import binary_live_metrics, calibration_table
from mlops_provider.runtime.monitoring.task_metrics import MonitorTask
from mlops_provider.runtime.monitoring.variants import (  # noqa: F401 - names kept for callers
    CHALLENGER_PREDICTION,
    CHAMPION_PREDICTION,
    METRIC_TEXT,
    VARIANT,
    compare_variants,
    with_scores,
)
from mlops_provider.runtime.monitoring.window import open_parquet

log = logging.getLogger(__name__)

PREDICTION = "prediction"
REQUEST_ID = "request_id"
EPS = 1e-7
#: regression's fixed bound on the R² drop when ``max_drop`` sets none (R² has no unit, like ROC AUC)
DEFAULT_R2_DROP = 0.05


# --------------------------------------------------------------------------------- key handling
def _norm_key(s: pd.Series) -> pd.Series:
    """Join keys as text; integral numbers as ``"17"`` whether logged as 17, 17.0 or "17"."""
    num = pd.to_numeric(s, errors="coerce")
    if s.notna().any() and num.notna().sum() == s.notna().sum():
        return num.map(
            lambda v: None if pd.isna(v) else (str(int(v)) if float(v).is_integer() else repr(float(v)))
        )
    return s.map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))


# -------------------------------------------------------------------------------------- labels
def read_labels(
    labels_dir: str | os.PathLike[str],
    *,
    label: str,
    keys: Sequence[str],
    start: Any = None,
    end: Any = None,
    timestamp: str = "event_timestamp",
    store: ObjectStore | None = None,
) -> pd.DataFrame:
    """Label rows with ``start <= event_timestamp < end`` (only the needed columns are read).

    ``labels_dir``: a directory / ``s3://`` prefix of ``*.parquet`` partitions, or one file, read through
    ``store``. Missing directory or no partition -> empty frame (labels have not landed yet: no verdict).
    """
    store = store or objstore.DEFAULT_STORE
    files = labels_files(labels_dir, store)
    frames = []
    for f in files:
        pf = open_parquet(f, store)
        names = set(pf.schema_arrow.names)
        if label not in names or timestamp not in names:
            raise DriftError(
                f"label partition {f} lacks {label!r} or {timestamp!r} (it has {sorted(names)}); set "
                "training.label / monitoring.performance.join_keys to the label frame's columns."
            )
        cols = [c for c in dict.fromkeys([timestamp, label, REQUEST_ID, *keys]) if c in names]
        df = pf.read(columns=cols).to_pandas()
        df[timestamp] = pd.to_datetime(df[timestamp], utc=True)
        if start is not None:
            df = df[df[timestamp] >= pd.Timestamp(start)]
        if end is not None:
            df = df[df[timestamp] < pd.Timestamp(end)]
        frames.append(df)
    if not frames:
        return pd.DataFrame(columns=[timestamp, label, *keys])
    return pd.concat(frames, ignore_index=True)


def labels_files(labels_dir: str | os.PathLike[str], store: ObjectStore | None = None) -> list[str]:
    """The ``*.parquet`` label partitions directly under ``labels_dir`` (sorted), or ``[labels_dir]`` when
    it is one file; none when it does not exist. Local paths and ``s3://`` URLs alike."""
    store = store or objstore.DEFAULT_STORE
    files = list(store.list(labels_dir, "*.parquet"))
    if not files and store.head(labels_dir) is not None:
        files = [str(labels_dir)]
    return files


def join_outcomes(
    requests: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    label: str,
    keys: Sequence[str],
    time_tolerance_hours: float | None = 36.0,
    timestamp: str = "event_timestamp",
) -> pd.DataFrame:
    """Requests (inference log rows) with their outcome in column ``label`` (unmatched rows dropped)."""
    if requests.empty or labels.empty:
        return requests.iloc[0:0].assign(**{label: pd.Series(dtype="float64")})
    if REQUEST_ID in labels.columns and REQUEST_ID in requests.columns and labels[REQUEST_ID].notna().any():
        lab = labels.dropna(subset=[REQUEST_ID]).drop_duplicates(REQUEST_ID, keep="last")
        out = requests.merge(lab[[REQUEST_ID, label]], on=REQUEST_ID, how="inner")
        return out.dropna(subset=[label]).reset_index(drop=True)
    if not keys:
        raise DriftError(
            "cannot join outcomes: the label partitions carry no request_id and no join key is set. Set "
            "monitoring.performance.join_keys (columns both the inference log and the labels carry), or write "
            "the request_id into the label partitions."
        )
    missing = [k for k in keys if k not in requests.columns or k not in labels.columns]
    if missing:
        where = "inference log" if any(k not in requests.columns for k in missing) else "label partitions"
        raise DriftError(
            f"cannot join outcomes: join key(s) {missing} are missing from the {where}. Set "
            "monitoring.performance.join_keys to columns both the inference log and the labels carry."
        )
    req = requests.copy()
    lab = labels[[timestamp, label, *keys]].copy()
    for k in keys:
        req[k] = _norm_key(req[k])
        lab[k] = _norm_key(lab[k])
    req = req.dropna(subset=list(keys))
    lab = lab.dropna(subset=[*keys, label])
    if time_tolerance_hours is None:
        lab = lab.sort_values(timestamp, kind="stable").drop_duplicates(list(keys), keep="last")
        out = req.merge(lab[[*keys, label]], on=list(keys), how="inner")
    else:
        req["_ts"] = pd.to_datetime(req["timestamp"], utc=True).astype("datetime64[ns, UTC]")
        lab["_ts"] = pd.to_datetime(lab[timestamp], utc=True).astype("datetime64[ns, UTC]")
        out = pd.merge_asof(
            req.sort_values("_ts", kind="stable"),
            lab[["_ts", *keys, label]].sort_values("_ts", kind="stable"),
            on="_ts",
            by=list(keys),
            direction="forward",
            tolerance=pd.Timedelta(hours=float(time_tolerance_hours)),
        ).drop(columns=["_ts"])
    return out.dropna(subset=[label]).reset_index(drop=True)


# ------------------------------------------------------------------------------------- metrics
#: the binary metrics of before (names kept for callers): see task_metrics for every task
calibration = calibration_table
metrics = binary_live_metrics


def drop_bounds(
    task: MonitorTask,
    max_drop: Mapping[str, float] | None = None,
    max_roc_auc_drop: float = 0.05,
    max_log_loss_increase: float = 0.05,
) -> tuple[dict[str, float], list[str]]:
    """The fixed bounds of ``task`` (metric -> tolerated worsening) and the ``max_drop`` metrics it has not.

    ``max_drop`` wins; a metric it leaves unset keeps the bound of before: roc_auc ``max_roc_auc_drop``,
    log_loss ``max_log_loss_increase`` (binary and multiclass), and r2 :data:`DEFAULT_R2_DROP` (regression).
    """
    have = task.metrics
    bounds: dict[str, float] = {}
    if "roc_auc" in have:
        bounds["roc_auc"] = float(max_roc_auc_drop)
    if "log_loss" in have:
        bounds["log_loss"] = float(max_log_loss_increase)
    if "r2" in have:
        bounds["r2"] = DEFAULT_R2_DROP
    ignored = []
    for name, bound in dict(max_drop or {}).items():
        if name in have:
            bounds[name] = float(bound)
        else:
            ignored.append(name)
    return bounds, ignored


def _worse_text(metric: str, value: float, base: float, worsening: float, bound: float) -> str:
    where = "below" if MonitorTask.higher_is_better(metric) else "above"
    return (f"live {METRIC_TEXT.get(metric, metric)} {value:.4f} is {worsening:.4f} {where} the champion's "
            f"{base:.4f} (bound {bound})")


# ---------------------------------------------------------------------------------- the report
def performance_report(
    requests: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    label: str,
    baseline: Mapping[str, float | None] | None = None,
    join_keys: Sequence[str] = (),
    time_tolerance_hours: float | None = 36.0,
    slices: Sequence[str] = (),
    min_labelled_rows: int = 200,
    min_slice_rows: int = 50,
    max_roc_auc_drop: float = 0.05,
    max_log_loss_increase: float = 0.05,
    max_calibration_error: float | None = None,
    bootstrap: int = 500,
    confidence: float = 0.95,
    seed: int = 0,
    task: MonitorTask | None = None,
    max_drop: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Live performance of logged requests whose outcome landed; ``degraded`` is the trigger.

    ``task``: the champion's task (default binary); its realized metrics overall, per UTC day and per slice
    (:meth:`~mlops_provider.runtime.monitoring.task_metrics.MonitorTask.realized`), the fixed bounds of
    :func:`drop_bounds` against the champion's ``baseline`` (``drops``: the worsening per metric), the ECE bound
    (classification), and champion vs challenger (:func:`~mlops_provider.runtime.monitoring.variants.compare_variants`).

    ``status``: ``ok`` | ``no_traffic`` (no request in the window) | ``no_labels`` (outcomes have not
    landed yet) | ``insufficient_labels`` (< ``min_labelled_rows`` joined rows) | ``one_class``
    (binary: every outcome the same: AUC undefined, only log loss / calibration are judged).
    """
    task = task or MonitorTask()
    baseline = {k: float(v) for k, v in dict(baseline or {}).items() if v is not None and np.isfinite(v)}
    bounds, ignored = drop_bounds(task, max_drop, max_roc_auc_drop, max_log_loss_increase)
    out: dict[str, Any] = {
        "status": "ok",
        "task": task.name,
        "degraded": False,
        "reasons": [],
        "n_requests": int(len(requests)),
        "n_labelled": 0,
        "baseline": baseline,
        "bounds": {
            "max_drop": bounds,
            "max_roc_auc_drop": max_roc_auc_drop,
            "max_log_loss_increase": max_log_loss_increase,
            "max_calibration_error": max_calibration_error,
            **({"ignored": ignored} if ignored else {}),
        },
        "overall": None,
        "per_day": {},
        "per_slice": {},
        "experiment": None,
    }
    if ignored:
        log.warning("monitoring.performance.max_drop names %s, not metrics of the champion's %s task %s: ignored",
                    ignored, task.name, sorted(task.metrics))
    if requests.empty:
        out["status"] = "no_traffic"
        return out
    if labels.empty:
        out["status"] = "no_labels"
        return out
    joined = join_outcomes(
        requests, labels, label=label, keys=join_keys, time_tolerance_hours=time_tolerance_hours
    )
    if len(joined):
        joined = with_scores(task, joined)
        y_all = task.labels(joined[label])
        ok = task.valid(joined).to_numpy() & (np.array([v is not None for v in y_all], dtype=bool)
                                               if y_all.dtype == object else np.isfinite(y_all))
        joined = joined[ok].reset_index(drop=True)
    out["n_labelled"] = int(len(joined))
    out["label_coverage"] = float(len(joined) / len(requests))
    if len(joined) < min_labelled_rows:
        out["status"] = "no_labels" if len(joined) == 0 else "insufficient_labels"
        return out

    def scored(part: pd.DataFrame, detail: bool = False) -> dict[str, Any]:
        return task.realized(task.labels(part[label]), part, detail=detail)

    overall = scored(joined, detail=True)
    out["overall"] = overall
    days = pd.to_datetime(joined["timestamp"], utc=True).dt.strftime("%Y-%m-%d")
    for day, idx in joined.groupby(days).groups.items():
        out["per_day"][str(day)] = scored(joined.loc[idx])
    for col in slices:
        if col not in joined.columns:
            out["per_slice"][col] = {"skipped": "column not in the inference log"}
            continue
        sl: dict[str, Any] = {}
        for value, idx in joined.groupby(joined[col].astype(str)).groups.items():
            if len(idx) >= min_slice_rows:
                sl[str(value)] = scored(joined.loc[idx])
        out["per_slice"][col] = sl
    if task.name == "binary" and overall.get("roc_auc") is None:
        out["status"] = "one_class"
    reasons: list[str] = []
    drops: dict[str, float] = {}
    for metric in task.metrics:  # the worsening of every metric with a baseline; the bounded ones judge
        value, base = overall.get(metric), baseline.get(metric)
        if value is None or base is None:
            continue
        worsening = (base - value) if task.higher_is_better(metric) else (value - base)
        drops[metric] = float(worsening)
        if metric in bounds and worsening > bounds[metric]:
            reasons.append(_worse_text(metric, value, base, worsening, bounds[metric]))
    out["drops"] = drops
    if "roc_auc" in drops:  # the binary keys of before
        out["roc_auc_drop"] = drops["roc_auc"]
    if "log_loss" in drops:
        out["log_loss_increase"] = drops["log_loss"]
    ece = overall.get("ece")
    if max_calibration_error is not None and ece is not None and ece > max_calibration_error:
        reasons.append(f"expected calibration error {ece:.4f} > {max_calibration_error}")
    out["reasons"] = reasons
    out["degraded"] = bool(reasons)
    out["experiment"] = compare_variants(
        joined, label=label, task=task, n_boot=bootstrap, confidence=confidence, seed=seed
    )
    return out
