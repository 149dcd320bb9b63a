"""Live model performance once delayed labels land (runtime module).

A logged request's outcome is known only later: for the flights model, when the flight's row lands
in the feature pipeline's label partitions (``<lake>/labels/month=YYYY-MM.parquet``, written by
``feature_repo/transforms.py``: entity keys, request fields, ``event_timestamp`` = scheduled
departure, and the 0/1 label). :func:`join_outcomes` matches each request to its outcome:

* by ``request_id`` when the label frame carries one (an outcome feed keyed by request), else
* by the ``join_keys`` (e.g. origin, carrier, tailnum, sched_dep_hour) and time: the first outcome
  event at or after the request, within ``time_tolerance_hours`` (``pandas.merge_asof``).

:func:`performance_report` then computes ROC AUC, log loss, Brier score and calibration (expected
calibration error + reliability bins) overall, per UTC day and per slice, compares them with the
champion's validation metrics, and flags a drop beyond the YAML bounds (a retraining trigger like
drift). When the log carries online-experiment columns (``challenger_prediction`` in shadow mode,
or a ``variant`` per request in split mode), champion and challenger are compared on the same live
traffic with a seeded bootstrap confidence.
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
from mlops_provider.runtime.metrics import log_loss as _log_loss
from mlops_provider.runtime.metrics import roc_auc_or_none as _auc
from mlops_provider.runtime.monitoring.window import open_parquet

log = logging.getLogger(__name__)

PREDICTION = "prediction"
CHALLENGER_PREDICTION = "challenger_prediction"
VARIANT = "variant"
REQUEST_ID = "request_id"
EPS = 1e-7


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
def calibration(y: np.ndarray, p: np.ndarray, bins: int = 10) -> tuple[float, list[dict[str, Any]]]:
    """(expected calibration error, reliability bins) on equal-width probability bins."""
    idx = np.clip((p * bins).astype(int), 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        m = idx == b
        if not m.any():
            continue
        pred, obs = float(p[m].mean()), float(y[m].mean())
        ece += m.sum() / len(y) * abs(pred - obs)
        table.append(
            {"bin": [b / bins, (b + 1) / bins], "n": int(m.sum()), "mean_predicted": pred, "observed": obs}
        )
    return float(ece), table


def metrics(y: Sequence[float], p: Sequence[float], *, with_bins: bool = False) -> dict[str, Any]:
    """ROC AUC (None for one class), log loss, Brier, ECE, base rate and mean prediction."""
    ya, pa = np.asarray(y, dtype="float64"), np.asarray(p, dtype="float64")
    ok = np.isfinite(ya) & np.isfinite(pa)
    ya, pa = ya[ok], pa[ok]
    if len(ya) == 0:
        return {"n": 0, "positives": 0, "roc_auc": None, "log_loss": None, "brier": None, "accuracy": None,
                "ece": None}
    ece, table = calibration(ya, pa)
    out: dict[str, Any] = {
        "n": int(len(ya)),
        "positives": int(ya.sum()),
        "base_rate": float(ya.mean()),
        "mean_prediction": float(pa.mean()),
        "roc_auc": _auc(ya, pa),
        "log_loss": _log_loss(ya, pa),
        "brier": float(np.mean((pa - ya) ** 2)),
        "accuracy": float(np.mean((pa >= 0.5) == (ya >= 0.5))),
        "ece": ece,
    }
    if out["roc_auc"] is None:
        out["note"] = "one class of label in this window: ROC AUC undefined"
    if with_bins:
        out["calibration"] = table
    return out


# --------------------------------------------------------------------------- champion/challenger
def _bootstrap_delta(
    y: np.ndarray,
    p_a: np.ndarray,
    p_b: np.ndarray,
    *,
    n_boot: int,
    seed: int,
    paired: bool,
    y_b: np.ndarray | None = None,
) -> dict[str, Any]:
    """Bootstrap of ROC AUC(b) - ROC AUC(a) and log loss(b) - log loss(a)."""
    rng = np.random.default_rng(seed)
    yb = y if paired else y_b
    assert yb is not None
    d_auc, d_ll = [], []
    for _ in range(n_boot):
        ia = rng.integers(0, len(y), len(y))
        ib = ia if paired else rng.integers(0, len(yb), len(yb))
        a_auc, b_auc = _auc(y[ia], p_a[ia]), _auc(yb[ib], p_b[ib])
        if a_auc is not None and b_auc is not None:
            d_auc.append(b_auc - a_auc)
        d_ll.append(_log_loss(yb[ib], p_b[ib]) - _log_loss(y[ia], p_a[ia]))
    out: dict[str, Any] = {"resamples": n_boot}
    if d_auc:
        arr = np.asarray(d_auc)
        out.update(
            delta_roc_auc_ci95=[float(np.quantile(arr, 0.025)), float(np.quantile(arr, 0.975))],
            p_challenger_better_auc=float((arr > 0).mean() + 0.5 * (arr == 0).mean()),
        )
    ll = np.asarray(d_ll)
    out.update(
        delta_log_loss_ci95=[float(np.quantile(ll, 0.025)), float(np.quantile(ll, 0.975))],
        p_challenger_better_log_loss=float((ll < 0).mean() + 0.5 * (ll == 0).mean()),
    )
    return out


def compare_variants(
    joined: pd.DataFrame,
    *,
    label: str,
    n_boot: int = 500,
    confidence: float = 0.95,
    seed: int = 0,
    max_rows: int = 20_000,
) -> dict[str, Any] | None:
    """Champion vs challenger on the same live traffic; ``None`` when the log has no experiment columns.

    * shadow (``challenger_prediction`` logged beside ``prediction`` on the same rows): paired
      bootstrap over requests;
    * split (``variant`` per request, each answered by one model): independent bootstrap per arm.

    ``winner`` is ``"challenger"`` / ``"champion"`` when the bootstrap probability that the challenger's
    ROC AUC is higher is >= ``confidence`` / <= ``1 - confidence``, else ``"inconclusive"``.
    """
    rng = np.random.default_rng(seed)
    if (
        CHALLENGER_PREDICTION in joined.columns
        and pd.to_numeric(joined[CHALLENGER_PREDICTION], errors="coerce").notna().any()
    ):
        df = joined.assign(
            _c=pd.to_numeric(joined[CHALLENGER_PREDICTION], errors="coerce"),
            _p=pd.to_numeric(joined[PREDICTION], errors="coerce"),
        ).dropna(subset=["_c", "_p", label])
        if len(df) > max_rows:
            df = df.iloc[np.sort(rng.choice(len(df), max_rows, replace=False))]
        y, pa, pb = df[label].to_numpy("float64"), df["_p"].to_numpy("float64"), df["_c"].to_numpy("float64")
        out: dict[str, Any] = {
            "mode": "shadow (paired)",
            "n": int(len(y)),
            "champion": metrics(y, pa),
            "challenger": metrics(y, pb),
        }
        if len(y) >= 2:
            out.update(_bootstrap_delta(y, pa, pb, n_boot=n_boot, seed=seed, paired=True))
    elif VARIANT in joined.columns and joined[VARIANT].nunique(dropna=True) >= 2:
        values = sorted(map(str, joined[VARIANT].dropna().unique()))
        base = "champion" if "champion" in values else values[0]
        other = next(v for v in values if v != base)
        arms = {}
        for v in (base, other):
            part = joined[joined[VARIANT].astype(str) == v].dropna(subset=[label, PREDICTION])
            if len(part) > max_rows:
                part = part.iloc[np.sort(rng.choice(len(part), max_rows, replace=False))]
            arms[v] = (part[label].to_numpy("float64"), part[PREDICTION].to_numpy("float64"))
        (ya, pa), (yb, pb) = arms[base], arms[other]
        out = {
            "mode": "split (unpaired)",
            "variants": {base: "champion", other: "challenger"},
            "n": {base: int(len(ya)), other: int(len(yb))},
            "champion": metrics(ya, pa),
            "challenger": metrics(yb, pb),
        }
        if len(ya) >= 2 and len(yb) >= 2:
            out.update(_bootstrap_delta(ya, pa, pb, n_boot=n_boot, seed=seed, paired=False, y_b=yb))
    else:
        return None
    p_better = out.get("p_challenger_better_auc")
    if p_better is None:
        out["winner"] = "inconclusive"
        out["why"] = "ROC AUC undefined (one class of label or too few rows)"
    elif p_better >= confidence:
        out["winner"] = "challenger"
    elif p_better <= 1 - confidence:
        out["winner"] = "champion"
    else:
        out["winner"] = "inconclusive"
    out["confidence"] = confidence
    a, b = out["champion"].get("roc_auc"), out["challenger"].get("roc_auc")
    out["delta_roc_auc"] = (b - a) if a is not None and b is not None else None
    return out


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
) -> dict[str, Any]:
    """Live performance of logged requests whose outcome landed; ``degraded`` is the trigger.

    ``status``: ``ok`` | ``no_traffic`` (no request in the window) | ``no_labels`` (outcomes have not
    landed yet) | ``insufficient_labels`` (< ``min_labelled_rows`` joined rows) | ``one_class``
    (every outcome the same: AUC undefined, only log loss / calibration are judged).
    """
    baseline = {k: v for k, v in dict(baseline or {}).items() if v is not None and np.isfinite(v)}
    out: dict[str, Any] = {
        "status": "ok",
        "degraded": False,
        "reasons": [],
        "n_requests": int(len(requests)),
        "n_labelled": 0,
        "baseline": baseline,
        "bounds": {
            "max_roc_auc_drop": max_roc_auc_drop,
            "max_log_loss_increase": max_log_loss_increase,
            "max_calibration_error": max_calibration_error,
        },
        "overall": None,
        "per_day": {},
        "per_slice": {},
        "experiment": None,
    }
    if requests.empty:
        out["status"] = "no_traffic"
        return out
    if labels.empty:
        out["status"] = "no_labels"
        return out
    joined = join_outcomes(
        requests, labels, label=label, keys=join_keys, time_tolerance_hours=time_tolerance_hours
    )
    joined = (
        joined.assign(**{PREDICTION: pd.to_numeric(joined.get(PREDICTION), errors="coerce")}).dropna(
            subset=[PREDICTION]
        )
        if len(joined)
        else joined
    )
    out["n_labelled"] = int(len(joined))
    out["label_coverage"] = float(len(joined) / len(requests))
    if len(joined) < min_labelled_rows:
        out["status"] = "no_labels" if len(joined) == 0 else "insufficient_labels"
        return out
    y, p = joined[label].to_numpy("float64"), joined[PREDICTION].to_numpy("float64")
    overall = metrics(y, p, with_bins=True)
    out["overall"] = overall
    days = pd.to_datetime(joined["timestamp"], utc=True).dt.strftime("%Y-%m-%d")
    for day, idx in joined.groupby(days).groups.items():
        part = joined.loc[idx]
        out["per_day"][str(day)] = metrics(part[label], part[PREDICTION])
    for col in slices:
        if col not in joined.columns:
            out["per_slice"][col] = {"skipped": "column not in the inference log"}
            continue
        sl: dict[str, Any] = {}
        for value, idx in joined.groupby(joined[col].astype(str)).groups.items():
            if len(idx) >= min_slice_rows:
                part = joined.loc[idx]
                sl[str(value)] = metrics(part[label], part[PREDICTION])
        out["per_slice"][col] = sl
    if overall["roc_auc"] is None:
        out["status"] = "one_class"
    reasons: list[str] = []
    if overall["roc_auc"] is not None and "roc_auc" in baseline:
        drop = baseline["roc_auc"] - overall["roc_auc"]
        out["roc_auc_drop"] = float(drop)
        if drop > max_roc_auc_drop:
            reasons.append(
                f"live ROC AUC {overall['roc_auc']:.4f} is {drop:.4f} below the champion's "
                f"{baseline['roc_auc']:.4f} (bound {max_roc_auc_drop})"
            )
    if "log_loss" in baseline and overall["log_loss"] is not None:
        rise = overall["log_loss"] - baseline["log_loss"]
        out["log_loss_increase"] = float(rise)
        if rise > max_log_loss_increase:
            reasons.append(
                f"live log loss {overall['log_loss']:.4f} is {rise:.4f} above the champion's "
                f"{baseline['log_loss']:.4f} (bound {max_log_loss_increase})"
            )
    if (
        max_calibration_error is not None
        and overall["ece"] is not None
        and overall["ece"] > max_calibration_error
    ):
        reasons.append(f"expected calibration error {overall['ece']:.4f} > {max_calibration_error}")
    out["reasons"] = reasons
    out["degraded"] = bool(reasons)
    out["experiment"] = compare_variants(
        joined, label=label, n_boot=bootstrap, confidence=confidence, seed=seed
    )
    return out
