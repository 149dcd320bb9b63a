"""Live performance of the champion: realized once labels land, estimated before, watched day by day
(runtime module; :func:`live_performance` is the performance half of
:func:`~mlops_provider.runtime.monitoring.monitor.run_monitor`).

Every monitor run reads the live traffic of the last ``lookback_days`` (plus the current window) once and
computes, per UTC day, for the champion's task (``mlops.task`` of its model version; binary when untagged;
:mod:`~mlops_provider.runtime.monitoring.task_metrics`):

* **realized** metrics of the days whose outcomes have landed (``label_delay_hours`` old), the requests joined
  to their outcomes (:func:`~mlops_provider.runtime.monitoring.performance.join_outcomes`): binary ROC AUC, log
  loss, accuracy, Brier, ECE; multiclass log loss, accuracy, macro-F1, top-label ECE; regression RMSE, MAE, R²;
* **estimated** metrics of every day, labelled or not, from the served probabilities (CBPE,
  :mod:`~mlops_provider.runtime.monitoring.estimation`; multiclass: expected accuracy, log loss, macro-F1).
  Classification only: regression has no CBPE (a point prediction carries no estimate of its own error);
  before its labels land only its prediction drift is watched;
* the **detector** (:mod:`~mlops_provider.runtime.monitoring.detector`) over the realized days (and, with
  ``use_estimated``, the estimated days not labelled yet) of the champion's own traffic, on the task's primary
  metric by default (binary roc_auc, multiclass log_loss, regression rmse; ``detector.metric``), calibrated on
  the champion's validation and evaluation days (:func:`reference_performance`, cached per model version).

``degraded`` (the performance trigger) is the detector's alarm; without a calibrated detector (no scored
reference days, or ``detector.method: none``) it is the fixed bounds (``max_drop``) on the scored window
(:func:`~mlops_provider.runtime.monitoring.performance.performance_report`), as before the detector existed.
The scored window (``label_delay_hours`` before the monitor window) keeps its full report: overall, per day,
per slice, champion vs challenger.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_provider.runtime.io.atomic import atomic_write
from mlops_provider.runtime.io.objstore import ObjectStore
from mlops_provider.runtime.monitoring import detector as det
from mlops_provider.runtime.monitoring import performance as rp
from mlops_provider.runtime.monitoring.predictions import (  # noqa: F401 - names kept for callers
    LABEL,
    Predictor,
    load_predictor,
    model_input,
    score_reference,
)
from mlops_provider.runtime.monitoring.task_metrics import PROBA_PREFIX, MonitorTask
from mlops_provider.runtime.monitoring.variants import CHALLENGER_PREDICTION, CHAMPION_PREDICTION, with_scores
from mlops_provider.runtime.monitoring.window import open_log_window, open_parquet, window_frame

log = logging.getLogger(__name__)

#: the binary task's daily metrics (every task's: ``MonitorTask.metrics``)
METRICS = ("roc_auc", "log_loss", "accuracy", "brier")
#: label-partition columns that are never join keys
_NOT_KEYS = {"event_timestamp", "timestamp", rp.REQUEST_ID, "split"}


# ------------------------------------------------------------------------------ reference days
def daily_metrics(frame: pd.DataFrame, label: str | None, *, day_column: str = "day",
                  task: MonitorTask | None = None) -> list[dict[str, Any]]:
    """``[{"day", "n", "realized": {...} | None, "estimated": {...} | None}]`` per day of ``frame`` (the task's
    score columns, or the logged prediction columns)."""
    task = task or MonitorTask()
    frame = with_scores(task, frame)
    out = []
    for day, part in frame.groupby(day_column, sort=True):
        row: dict[str, Any] = {"day": str(day), "n": int(len(part)), "estimated": task.expected(part),
                               "realized": None}
        if label is not None and label in part.columns:
            y = task.labels(part[label])
            ok = np.array([v is not None for v in y], dtype=bool) if y.dtype == object else np.isfinite(y)
            if ok.any():
                m = task.realized(y[ok], part[ok])
                row["realized"] = {k: m.get(k) for k in ("n", *task.metrics)}
        out.append(row)
    return out


def reference_performance(
    client: Any,
    model: str,
    version: str,
    snapshot_path: str,
    *,
    features: Mapping[str, Sequence[str]],
    label: str,
    cache_dir: str | None,
    store: ObjectStore | None = None,
    predictor: Predictor | None = None,
    task: MonitorTask | None = None,
    scored: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Daily realized and estimated metrics of the champion on its own validation and evaluation days.

    The snapshot's non-training splits are scored by the champion (``predictor``, default the registered
    pyfunc; :func:`~mlops_provider.runtime.monitoring.predictions.score_reference`; ``scored``: already
    scored); cached as ``<cache_dir>/<model>/v<version>/performance_reference.json`` (a version and its
    snapshot never change). ``{"status": "ok" | "unavailable", "days": [...], "why"?}``.
    """
    task = task or MonitorTask()
    entry = Path(cache_dir) / model / f"v{version}" / "performance_reference.json" if cache_dir else None
    if entry is not None and entry.is_file():
        try:
            return dict(json.loads(entry.read_text()))
        except (OSError, ValueError):
            pass
    from mlops_provider.exceptions import MlopsError

    try:
        if scored is None:
            scored, task = score_reference(client, model, version, snapshot_path, features=features, label=label,
                                           task=task, cache_dir=cache_dir, store=store, predictor=predictor)
        if LABEL not in scored.columns:
            raise ValueError(f"snapshot {snapshot_path} lacks the label column {label!r}")
        days = scored.assign(day=pd.to_datetime(scored["event_timestamp"], utc=True).dt.strftime("%Y-%m-%d"))
        result: dict[str, Any] = {"status": "ok", "model_version": str(version), "task": task.name,
                                  "days": daily_metrics(days, LABEL, task=task),
                                  "splits": sorted(map(str, scored["split"].unique()))}
    except (MlopsError, ValueError, OSError, ImportError, RuntimeError) as e:
        log.warning("No reference days for the performance detector (models:/%s v%s): %s", model, version, e)
        return {"status": "unavailable", "why": f"{type(e).__name__}: {e}", "days": []}
    except Exception as e:  # noqa: BLE001 - a model that cannot load must not fail the monitor
        log.warning("Could not score the reference days of models:/%s v%s: %s", model, version, e)
        return {"status": "unavailable", "why": f"{type(e).__name__}: {e}", "days": []}
    if entry is not None:
        entry.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(entry, json.dumps(result, default=str))
    return result


def reference_cached(cache_dir: str | None, model: str, version: str) -> bool:
    """Whether :func:`reference_performance` of this version is cached."""
    return bool(cache_dir) and (Path(str(cache_dir)) / model / f"v{version}" / "performance_reference.json").is_file()


# ------------------------------------------------------------------------------------- live days
def default_join_keys(labels_dir: str, label: str, store: ObjectStore | None) -> list[str]:
    """The label partitions' request columns (every column but the timestamp, the label and request_id):
    the keys a request is matched to its outcome by when ``performance.join_keys`` is unset."""
    files = rp.labels_files(labels_dir, store)
    if not files:
        return []
    names = open_parquet(files[0], store).schema_arrow.names
    return [c for c in names if c not in _NOT_KEYS and c != label]


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt is not None else None


def live_performance(
    client: Any,
    version: Any,
    start: str | None,
    end: str | None,
    tmp_dir: str | Path,
    *,
    config: Mapping[str, Any] | None,
    inference_log_dir: str,
    labels_dir: str | None,
    label_column: str | None,
    reference: Mapping[str, Any] | None = None,
    store: ObjectStore | None = None,
    task: MonitorTask | None = None,
) -> dict[str, Any] | None:
    """Live performance (None when not configured): the scored window's report plus ``daily`` (realized and
    estimated metrics per day of the lookback), ``detector`` and ``estimated`` (the current window, CBPE).

    ``version``: the champion's model version (its ``run_id`` gives the baseline metrics; its tags the task
    when ``task`` is None); ``reference``: the output of :func:`reference_performance` (None: the detector is
    uncalibrated and the fixed bounds decide).
    """
    cfg = dict(config or {})
    if not cfg or not cfg.get("enabled", True):
        return None
    if not labels_dir or not label_column:
        log.warning("performance is configured but labels_dir/label are not set; skipping it.")
        return None
    task = task or MonitorTask.from_version(version)
    settings, note = det.DetectorSettings.for_task(cfg.get("detector"), task.metrics, task.primary)
    delay = timedelta(hours=float(cfg.get("label_delay_hours", 48)))
    lookback = timedelta(days=int(cfg.get("lookback_days", 28)))
    end_dt = datetime.fromisoformat(end) if end else None
    start_dt = datetime.fromisoformat(start) if start else None
    p_start = p_end = None
    if end_dt is not None:
        p_end = end_dt - delay
        length = timedelta(hours=float(cfg["window_hours"])) if cfg.get("window_hours") else (
            end_dt - start_dt if start_dt is not None else None)
        p_start = p_end - length if length is not None else None
    read_start = None  # one read: the lookback of labelled days, the scored window and the current window
    if p_end is not None:
        read_start = min([p_end - lookback, *(d for d in (p_start, start_dt) if d is not None)])
    keys = list(cfg.get("join_keys") or []) or default_join_keys(labels_dir, label_column, store)
    slices = list(cfg.get("slices") or [])
    cols = {c: "string" for c in [rp.REQUEST_ID, rp.VARIANT, "model_version", *keys, *slices]}
    cols.update(task.log_columns())
    cols.update({CHAMPION_PREDICTION: task.experiment_type(), CHALLENGER_PREDICTION: task.experiment_type()})
    win = open_log_window(inference_log_dir, cols, _iso(read_start), end, tmp_dir, store=store, live_only=True)
    frame = with_scores(task, window_frame(win, list(cols)))
    if task.name == "multiclass" and not task.classes:  # untagged classes: those the log's probabilities name
        task = task.with_classes([c[len(PROBA_PREFIX):] for c in frame.columns if c.startswith(PROBA_PREFIX)])
    keys = [k for k in keys if k in frame.columns]
    if "timestamp" in frame.columns:
        ts = pd.to_datetime(frame["timestamp"], utc=True)
    else:
        ts = pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns, UTC]")
    in_scored = pd.Series(True, index=frame.index)
    if p_start is not None:
        in_scored &= ts >= pd.Timestamp(p_start)
    if p_end is not None:
        in_scored &= ts < pd.Timestamp(p_end)
    requests = frame[in_scored].reset_index(drop=True)
    tol = cfg.get("time_tolerance_hours", 36.0)
    label_end = _iso(p_end + timedelta(hours=float(tol or 0) + 24)) if p_end is not None else None
    labels = rp.read_labels(labels_dir, label=label_column, keys=keys, start=_iso(read_start), end=label_end,
                            store=store)
    baseline: dict[str, Any] = {}
    run_id = getattr(version, "run_id", None)
    if run_id:
        try:
            m = client.get_run(run_id).data.metrics
            baseline = {k: m.get(k) for k in task.metrics if m.get(k) is not None}
        except Exception as e:  # noqa: BLE001 - no baseline -> metrics only, no verdict on drops
            log.warning("No baseline metrics from run %s: %s", run_id, e)
    report = rp.performance_report(
        requests, labels, label=label_column, baseline=baseline, join_keys=keys, time_tolerance_hours=tol,
        slices=slices, min_labelled_rows=int(cfg.get("min_labelled_rows", 200)),
        max_roc_auc_drop=float(cfg.get("max_roc_auc_drop", 0.05)),
        max_log_loss_increase=float(cfg.get("max_log_loss_increase", 0.05)),
        max_calibration_error=cfg.get("max_calibration_error"), bootstrap=int(cfg.get("bootstrap", 500)),
        confidence=float(cfg.get("confidence", 0.95)), task=task, max_drop=cfg.get("max_drop"),
    )
    report["task"] = task.as_dict()
    report["window"] = {"start": _iso(p_start), "end": _iso(p_end)}
    report["join_keys"] = keys if not (rp.REQUEST_ID in labels.columns and labels[rp.REQUEST_ID].notna().any()) else [
        rp.REQUEST_ID]
    report["traffic_excluded"] = dict(win.excluded)
    # ---- the daily series of the champion's own traffic
    champion = str(getattr(version, "version", "") or "")
    series = frame.assign(_ts=ts)
    if champion and "model_version" in series.columns and (series["model_version"].astype(str) == champion).any():
        series = series[series["model_version"].astype(str) == champion]
    series = series[task.valid(series) & series["_ts"].notna()]
    if p_end is not None:
        series = series[series["_ts"] >= pd.Timestamp(p_end - lookback)]
    labelled_until = pd.Timestamp(p_end) if p_end is not None else None
    realized_part = series if labelled_until is None else series[series["_ts"] < labelled_until]
    joined = rp.join_outcomes(realized_part.drop(columns=["_ts"]), labels, label=label_column, keys=keys,
                              time_tolerance_hours=tol) if len(realized_part) else realized_part.iloc[0:0]
    est = daily_metrics(series.assign(day=series["_ts"].dt.strftime("%Y-%m-%d")), None, task=task)
    real = {d["day"]: d for d in daily_metrics(
        joined.assign(day=pd.to_datetime(joined["timestamp"], utc=True).dt.strftime("%Y-%m-%d")), label_column,
        task=task)
    } if len(joined) else {}
    daily = []
    for d in est:
        r = real.get(d["day"])
        daily.append({"day": d["day"], "n": d["n"], "labelled": (r or {}).get("realized", {}).get("n") if r else 0,
                      "realized": (r or {}).get("realized"), "estimated": d["estimated"]})
    report["daily"] = daily
    estimate = bool(cfg.get("estimate", True)) and task.has_cbpe
    if not task.has_cbpe:
        report["cbpe"] = ("not applicable: a regression's point prediction carries no estimate of its own error; "
                          "before labels land only its prediction drift is watched")
    if not estimate:  # CBPE off (the served probabilities are not calibrated), or regression
        for d in daily:
            d["estimated"] = None
    elif start_dt is not None and end_dt is not None:
        current = series[(series["_ts"] >= pd.Timestamp(start_dt)) & (series["_ts"] < pd.Timestamp(end_dt))]
        report["estimated"] = (task.expected(current) or {}) | {"window": {"start": start, "end": end}}
    # ---- the detector, calibrated on the champion's reference days
    ref_days = list((reference or {}).get("days") or [])
    metric = settings.metric
    realized_days = [{"day": d["day"], "n": d["labelled"], "value": (d["realized"] or {}).get(metric)}
                     for d in daily if d["realized"]]
    cal = det.calibrate([(d.get("realized") or {}).get(metric) for d in ref_days], settings)
    if reference is not None and reference.get("status") != "ok" and cal.get("status") == "uncalibrated":
        cal["why"] = f"no reference days: {reference.get('why')}"
    detectors = {"realized": det.run(realized_days, cal, settings, series="realized")}
    if settings.use_estimated and estimate:
        last = max((d["day"] for d in realized_days), default="")
        est_days = [{"day": d["day"], "n": d["n"], "value": (d["estimated"] or {}).get(metric)} for d in daily
                    if d["day"] > last]
        est_cal = det.calibrate([(d.get("estimated") or {}).get(metric) for d in ref_days], settings, seed=1)
        detectors["estimated"] = det.run(est_days, est_cal, settings, series="estimated")
    report["detector"] = {**detectors["realized"], "calibration": cal,
                          **({"estimated": detectors["estimated"]} if "estimated" in detectors else {}),
                          **({"note": note} if note else {})}
    calibrated = cal.get("status") == "ok"
    bounds_reasons = list(report["reasons"])
    report["bounds"]["exceeded"] = bounds_reasons
    if calibrated:
        fired = [k for k, s in detectors.items() if s["alarm"]]
        report["reasons"] = [f"{k} performance: {detectors[k]['why']}" for k in fired]
        report["degraded"] = bool(fired)
        report["decided_by"] = "detector"
    else:
        report["decided_by"] = "bounds"
        log.info("Performance detector not calibrated (%s): the fixed bounds decide", cal.get("why"))
    log.info("Performance window [%s, %s) (%s): status=%s labelled=%s degraded=%s (%s) %s", report["window"]["start"],
             report["window"]["end"], task.name, report["status"], report["n_labelled"], report["degraded"],
             report["decided_by"], report["reasons"])
    return report


__all__ = ["daily_metrics", "default_join_keys", "live_performance", "load_predictor", "model_input",
           "reference_cached", "reference_performance"]
