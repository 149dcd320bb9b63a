"""The monitor's one entry point: drift + live performance of one inference-log window (runtime module).

:func:`run_monitor` is everything the monitor DAG's drift task does, given plain values, an MLflow client
and an :class:`~mlops_provider.runtime.io.objstore.ObjectStore`;
:class:`mlops_provider.operators.drift.EvidentlyDriftOperator` only resolves its hooks, calls it and pushes
:func:`~mlops_provider.runtime.monitoring.reports.xcom_summary` of the result. The tests on real data call
it (or the operator), so they exercise the path the DAG runs:

1. **reference**: ``models:/<model>@<alias>`` -> its training snapshot through MLflow lineage; its
   statistics are cached per model version (:mod:`~mlops_provider.runtime.monitoring.reference`);
2. **current**: the inference-log rows of ``[window_start, window_end)``, read column by column from the
   window's ``date=`` partitions, local or ``s3://`` (:mod:`~mlops_provider.runtime.monitoring.window`);
3. **drift**: streamed exact statistics of the live traffic (smoke tests, infra validation, warm-up and
   shadow requests are left out) judged against per-feature thresholds calibrated on chunks of the reference
   (:mod:`~mlops_provider.runtime.monitoring.calibration`, cached with the reference statistics), or the fixed
   YAML thresholds; Evidently on stratified samples for the report
   (:mod:`~mlops_provider.runtime.monitoring.drift`);
4. **task**: the champion's version tags (``mlops.task``, default binary) decide the prediction columns and the
   metrics (:mod:`~mlops_provider.runtime.monitoring.task_metrics`); the champion scores its held-out days
   once per version (:mod:`~mlops_provider.runtime.monitoring.predictions`) for the next two steps;
5. **prediction drift**: the served predictions against the champion's held-out predictions, calibrated like
   the features (``drift.predictions``; part of ``drift`` only with ``trigger``);
6. **performance**: realized daily metrics of the last ``lookback_days`` once their outcomes landed,
   estimated ones (CBPE, classification) before, a CUSUM / EWMA detector on the task's primary metric
   calibrated on the champion's validation and evaluation days, and the full report of the window
   ``label_delay_hours`` earlier (:mod:`~mlops_provider.runtime.monitoring.live`);
7. **reports**: ``<report_dir>/drift__<model>__v<version>__<start>__<end>.{html,json}`` (local or
   ``s3://``, same window -> same files), logged as artifacts of the version's run, the verdict tagged on
   the version (both best effort).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from mlops_provider.runtime.io.objstore import ObjectStore, is_s3
from mlops_provider.runtime.monitoring import drift as rd
from mlops_provider.runtime.monitoring import live as rl
from mlops_provider.runtime.monitoring import predictions as rp
from mlops_provider.runtime.monitoring import reference as rr
from mlops_provider.runtime.monitoring import reports as rep
from mlops_provider.runtime.monitoring.calibration import natural_hours
from mlops_provider.runtime.monitoring.statistics import stream_current, window_means
from mlops_provider.runtime.monitoring.task_metrics import MonitorTask
from mlops_provider.runtime.monitoring.window import open_log_window

log = logging.getLogger(__name__)


def default_cache_dir(report_dir: str, reference_cache_dir: str | None = None) -> str:
    """Where reference statistics are cached: the given dir, else beside local reports, else a temp dir."""
    if reference_cache_dir:
        return reference_cache_dir
    if is_s3(report_dir):
        return str(Path(tempfile.gettempdir()) / "mlops-drift-reference-cache")
    return str(Path(report_dir) / "_reference_cache")


def run_monitor(
    *,
    model: str,
    inference_log_dir: str,
    features: Mapping[str, Sequence[str]],
    report_dir: str,
    client: Any,
    window_start: str | None = None,
    window_end: str | None = None,
    reference_alias: str = "champion",
    drift: Mapping[str, Any] | None = None,
    drift_share: float = 0.3,
    max_reference_rows: int | None = None,
    min_rows: int = 100,
    performance: Mapping[str, Any] | None = None,
    labels_dir: str | None = None,
    label_column: str | None = None,
    reference_cache_dir: str | None = None,
    store: ObjectStore | None = None,
    predictor: rl.Predictor | None = None,
) -> dict[str, Any]:
    """Drift (+ live performance) of the inference-log window vs ``models:/<model>@<reference_alias>``.

    ``features``: ``{"numeric": [...], "categorical": [...]}``; ``drift`` / ``performance``: the YAML's
    ``monitoring.drift`` / ``monitoring.performance`` as dicts; ``window_start`` / ``window_end``: ISO
    timestamps (None: open-ended); ``client``: an ``MlflowClient``; ``store``: reads ``s3://`` logs,
    snapshots and labels and publishes ``s3://`` reports; ``predictor``: scores the champion's held-out days
    for the performance detector (default: the registered pyfunc).

    Returns the full, JSON-serialisable result: ``drift``, ``trigger``, ``trigger_reasons``, ``reasons``,
    ``status`` (``ok`` | ``no_traffic`` | ``insufficient_data`` | ``no_testable_columns``), ``share``,
    ``threshold``, ``drifted_columns``, ``columns`` (per feature: method, score, p_value / distance,
    threshold, drifted, exact psi / js_distance, null and unseen shares), ``n_reference``,
    ``n_current``, ``n_sample``, ``window``, ``report`` (``{"html", "json"}``), ``performance``,
    ``model``, ``model_version``, ``reference_alias``, ``snapshot_path``, ``reference_cache_hit``,
    ``mlflow_logged``, ``calibration`` (thresholds in use), ``alarms`` (one line per drifted feature: statistic,
    threshold, effect), ``signals`` (``{"drift", "performance", "prediction_drift"}``), ``traffic_excluded``,
    ``task`` (the champion's task, primary metric, classes / quantiles), ``prediction_drift`` (None when
    disabled or too few rows). ``label_column`` defaults to the version's ``mlops.label`` tag. Raises :class:`~mlops_provider.exceptions.NothingToMonitorError` before the first
    promotion, :class:`~mlops_provider.exceptions.ReferenceSnapshotMissingError` /
    :class:`~mlops_provider.exceptions.DriftError` when the reference or a monitored column is missing.
    """
    numeric = list(features.get("numeric", []))
    categorical = list(features.get("categorical", []))
    rules = rd.DriftRules.from_config(drift, drift_share)
    if max_reference_rows is not None:
        rules = replace(rules, reference_rows=int(max_reference_rows))
    start, end = window_start, window_end
    log.info("Drift window [%s, %s) of %s", start or "-inf", end or "+inf", inference_log_dir)

    version = rr.reference_version(client, model, reference_alias)
    model_version = str(version.version)
    task = MonitorTask.from_version(version)
    label_column = label_column or task.label
    snapshot_path = rr.snapshot_from_lineage(client, version)
    log.info("Reference: models:/%s@%s (version %s), snapshot_path=%s", model, reference_alias, model_version,
             snapshot_path)
    rr.check_reference(snapshot_path, model=model, model_version=model_version, store=store)

    with tempfile.TemporaryDirectory(prefix="mlops-drift-") as tmp:
        columns = {c: "float" for c in numeric} | {c: "string" for c in categorical}
        columns |= {c: "string" for c in rules.stratify_by if c not in columns}
        win = open_log_window(inference_log_dir, columns, start, end, tmp, store=store, live_only=True)
        n_current = win.n_rows
        log.info("Current window: %d live inference record(s)", n_current)
        rules = replace(rules, window_hours=window_hours(start, end, win))
        snapshot = None
        cache_hit = None
        if 0 < n_current < min_rows:
            result = rd.empty_result(status="insufficient_data", n_current=n_current, drift_share=rules.drift_share,
                                     numeric=numeric, categorical=categorical)
            log.info("Only %d row(s) < min_rows=%d: no drift verdict.", n_current, min_rows)
        elif n_current == 0:
            result = rd.empty_result(status="no_traffic", drift_share=rules.drift_share, numeric=numeric,
                                     categorical=categorical)
            log.info("No traffic in the window: no drift verdict, no alarm.")
        else:
            ref, cache_hit = rr.load_reference_stats(
                snapshot_path, model=model, model_version=model_version, numeric=numeric,
                categorical=categorical, rules=rules, cache_dir=default_cache_dir(report_dir, reference_cache_dir),
                store=store,
            )
            cur = stream_current(win, ref, numeric, categorical, sample_rows=rules.sample_rows, seed=rules.seed,
                                 stratify_by=[c for c in rules.stratify_by if c in win.columns])
            previous = previous_means(inference_log_dir, numeric, start, end, Path(tmp) / "previous", rules,
                                      min_rows=min_rows, store=store)
            result, snapshot = rd.evaluate_drift(ref, cur, numeric, categorical, rules, previous_means=previous)
        result["reference_cache_hit"] = cache_hit
        result["traffic_excluded"] = dict(win.excluded)
        # ---- the champion's held-out days scored once per version: prediction drift and the detector use them
        cache_dir = default_cache_dir(report_dir, reference_cache_dir)
        pred_cfg = dict(dict(drift or {}).get("predictions") or {})
        watch_predictions = bool(pred_cfg.get("enabled", True)) and n_current >= min_rows
        perf_cfg = dict(performance or {})
        detector_cfg = dict(perf_cfg.get("detector") or {})
        watch_detector = bool(perf_cfg.get("enabled", True) and perf_cfg and labels_dir and label_column and (
            detector_cfg.get("method", "cusum") != "none"))
        scored, why = None, None
        if watch_predictions or watch_detector:
            scored, task, why = rp.try_score_reference(
                client, model, model_version, str(snapshot_path), features=features, label=label_column, task=task,
                cache_dir=cache_dir, store=store, predictor=predictor)
        result["task"] = task.as_dict()
        result["prediction_drift"] = rp.prediction_drift(
            task=task, scored=scored, unavailable=why, inference_log_dir=inference_log_dir, start=start, end=end,
            tmp_dir=Path(tmp) / "predictions", rules=rules, min_rows=min_rows, model=model, version=model_version,
            cache_dir=cache_dir, trigger=bool(pred_cfg.get("trigger", False)), store=store,
        ) if watch_predictions else None
        reference_perf = None
        if watch_detector:
            reference_perf = rl.reference_performance(
                client, model, model_version, str(snapshot_path), features=features, label=str(label_column),
                cache_dir=cache_dir, store=store, predictor=predictor, task=task, scored=scored,
            ) if scored is not None or rl.reference_cached(cache_dir, model, model_version) else {
                "status": "unavailable", "why": why, "days": []}
        result["performance"] = rl.live_performance(
            client, version, start, end, Path(tmp) / "perf", config=performance,
            inference_log_dir=inference_log_dir, labels_dir=labels_dir, label_column=label_column,
            reference=reference_perf, store=store, task=task,
        )
        perf = result["performance"] or {}
        preds = result["prediction_drift"] or {}
        if preds.get("drift") and preds.get("trigger"):  # monitoring.drift.predictions.trigger
            result["drift"] = True
            result["reasons"] = [*result.get("reasons", []), *(f"prediction drift: {r}" for r in preds["reasons"])]
            result["alarms"] = [*result.get("alarms", []), *preds.get("alarms", [])]
        reasons = [f"data drift: {r}" for r in result.get("reasons", [])] if result.get("drift") else []
        reasons += [f"performance: {r}" for r in perf.get("reasons", [])] if perf.get("degraded") else []
        result["signals"] = {"drift": bool(result.get("drift")), "performance": bool(perf.get("degraded")),
                             "prediction_drift": bool(preds.get("drift"))}
        result.update(
            model=model,
            model_version=model_version,
            reference_alias=reference_alias,
            snapshot_path=snapshot_path,
            window={"start": start, "end": end},
            min_rows=min_rows,
            trigger=bool(result.get("drift") is True or perf.get("degraded") is True),
            trigger_reasons=reasons,
        )
        result = json.loads(json.dumps(result, default=str))
        stem = rep.report_stem(model, model_version, start, end)
        local_dir = Path(tmp) / "reports" if is_s3(report_dir) else Path(report_dir)
        local = rep.write_report(snapshot, local_dir, stem, summary=result)
        result["mlflow_logged"] = log_report_artifacts(client, version.run_id, local, stem)
        paths = rep.publish_reports(local, report_dir, store=store)
    result["report"] = paths
    tag_version(client, model, model_version, result)
    log.info(
        "Drift status=%s drift=%s trigger=%s share=%.3f threshold=%.3f drifted=%s report=%s",
        result["status"], result["drift"], result["trigger"], result["share"], result["threshold"],
        result["drifted_columns"], paths,
    )
    return result


def window_hours(start: str | None, end: str | None, win: Any) -> float | None:
    """Length of the monitoring window in hours: ``end - start``, else the span of its rows rounded up
    (:func:`~mlops_provider.runtime.monitoring.calibration.natural_hours`)."""
    if start and end:
        return (datetime.fromisoformat(end) - datetime.fromisoformat(start)) / timedelta(hours=1)
    if not win.n_rows:
        return None
    ts = win.timestamps_ns()
    return natural_hours(float(ts.max() - ts.min()) / 3.6e12)


def previous_means(
    inference_log_dir: str,
    numeric: Sequence[str],
    start: str | None,
    end: str | None,
    tmp_dir: str | Path,
    rules: rd.DriftRules,
    *,
    min_rows: int,
    store: ObjectStore | None,
) -> dict[str, float | None] | None:
    """Means of the numeric features over the window before ``[start, end)`` (live traffic only), for the
    calibrated ``level_shift`` check; None when it is not configured, the window is open-ended, or the previous
    window has fewer than ``min_rows`` rows."""
    settings = rules.calibration_settings
    if not (settings.enabled and "level_shift" in settings.checks and start and end and numeric):
        return None
    length = datetime.fromisoformat(end) - datetime.fromisoformat(start)
    p_start = (datetime.fromisoformat(start) - length).isoformat()
    win = open_log_window(inference_log_dir, {c: "float" for c in numeric}, p_start, start, tmp_dir, store=store,
                          live_only=True)
    if win.n_rows < min_rows:
        log.info("Previous window [%s, %s) has %d live row(s) < min_rows=%d: no level_shift check", p_start, start,
                 win.n_rows, min_rows)
        return None
    return window_means(win, numeric)


def log_report_artifacts(client: Any, run_id: str | None, paths: Mapping[str, str | None], stem: str) -> bool:
    """Attach the report files to the model version's run; never fails the task."""
    if not run_id:
        log.warning("Model version has no MLflow run; reports not logged as artifacts.")
        return False
    try:
        for path in paths.values():
            if path:
                client.log_artifact(run_id, path, artifact_path=f"drift/{stem}")
    except Exception as e:  # noqa: BLE001 - best effort by design
        log.warning("Could not log drift reports to MLflow run %s: %s", run_id, e)
        return False
    return True


def tag_version(client: Any, model: str, version: str, result: Mapping[str, Any]) -> None:
    """Last verdict on the champion's model version (idempotent per window; best effort)."""
    perf = result.get("performance") or {}
    tags = {
        "mlops.drift.last_window": json.dumps(result.get("window"), sort_keys=True),
        "mlops.drift.last_verdict": json.dumps(
            {
                "drift": result.get("drift"),
                "trigger": result.get("trigger"),
                "share": result.get("share"),
                "drifted_columns": result.get("drifted_columns"),
                "status": result.get("status"),
                "performance_degraded": perf.get("degraded"),
                "prediction_drift": (result.get("prediction_drift") or {}).get("drift"),
            },
            sort_keys=True,
            default=str,
        )[:5000],
    }
    try:
        for key, value in tags.items():
            client.set_model_version_tag(model, version, key, value)
    except Exception as e:  # noqa: BLE001 - best effort by design
        log.warning("Could not tag models:/%s v%s with the drift verdict: %s", model, version, e)


live_performance = rl.live_performance  # former home of the function

__all__ = ["default_cache_dir", "live_performance", "previous_means", "run_monitor", "window_hours"]
