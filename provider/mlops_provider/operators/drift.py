"""Drift monitoring: compute an Evidently report (EvidentlyDriftOperator, alias DriftReportOperator),
then signal (DriftSignalOperator).

The two are split so that the ``drift/<model>`` Asset gets an event only when drift holds: the
signal task raises ``AirflowSkipException`` otherwise, and skipped tasks emit no outlet events.

Parse-safe: pandas, evidently and mlflow are imported inside ``execute()`` only.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from airflow.sdk import BaseOperator, Context

from mlops_provider.exceptions import DriftError
from mlops_provider.links.drift import DriftReportLink
from mlops_provider.operator_notes import skip


def _iso(value: Any) -> str | None:
    """A templated/context timestamp as ISO text; ``None`` for empty values ("", "None", None)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    text = str(value).strip()
    if not text or text.lower() in ("none", "null"):
        return None
    try:
        return datetime.fromisoformat(text).isoformat()
    except ValueError as e:
        raise DriftError(
            f"window bound {text!r} is not an ISO-8601 timestamp; template it like "
            "'{{ data_interval_start }}' or pass e.g. '2013-07-01T00:00:00+00:00'."
        ) from e


class EvidentlyDriftOperator(BaseOperator):
    """Evidently data drift (+ live performance) of the inference log window vs ``<model>@<alias>``.

    **Reference**: the ``train`` split of the champion's training snapshot, found through MLflow
    lineage (the version's ``snapshot_path`` tag, else the training run's dataset input). Its
    statistics and seeded sample are cached per model version under ``reference_cache_dir``.
    A snapshot that no longer exists raises :class:`~mlops_provider.exceptions.ReferenceSnapshotMissingError`.

    **Current**: the live traffic of ``[window_start, window_end)`` (default: the run's data interval,
    the whole log when that is empty): rows tagged ``traffic`` smoke / infra_validation / warmup / shadow,
    or with a ``smoke-`` request_id in older logs, are left out (``traffic_excluded``). Read column by
    column (parquet partitions, or JSONL spilled in bounded chunks); exact statistics cover the whole
    window, a seeded stratified sample feeds Evidently's report.

    **Rules** (``drift``: ``MonitoringConfig.drift`` as a dict): by default per-feature thresholds
    calibrated on chunks of the champion's training data of the window's length, cached per version
    (``drift.calibration``: distance to the reference, null share, stuck value, level shift since the
    previous window; effect sizes, not p-values), dataset drift as soon as one feature drifts; or fixed
    thresholds (``calibration.method: none``, or a column's own ``threshold``); unseen-category bound,
    dataset rule (``drift_share``, ``min_drifted_columns``, ``critical`` columns).

    **Task**: the champion's model version tags (``mlops.task`` binary | multiclass | regression, default
    binary for older versions; ``mlops.classes``, ``mlops.quantiles``, ``mlops.label`` - the label column
    when ``label_column`` is not given) decide which inference-log columns hold the prediction and which
    metrics are computed (:mod:`mlops_provider.runtime.monitoring.task_metrics`).

    **Predictions** (``drift.predictions``): drift of the champion's served predictions (binary the
    probability; multiclass the predicted class and the top-class probability; regression the value),
    with thresholds calibrated on the champion's own predictions on its validation and evaluation days;
    reported, and part of ``drift`` only with ``predictions.trigger``.

    **Performance** (``performance``: ``MonitoringConfig.performance`` as a dict, with ``labels_dir``
    and ``label_column``): realized daily metrics of the last ``lookback_days`` once their outcomes
    landed (binary ROC AUC / log loss / Brier / accuracy / ECE; multiclass log loss / accuracy /
    macro-F1 / ECE; regression RMSE / MAE / R²), CBPE estimates before (classification only), and a
    CUSUM / EWMA detector on the task's primary metric calibrated on the champion's validation and
    evaluation days (scored by the champion); its alarm sets ``trigger`` like drift (without a calibrated
    detector, the fixed bounds ``max_drop`` on the window ``label_delay_hours`` earlier do). Champion vs
    challenger is compared per task when the log carries experiment columns.

    Writes ``<report_dir>/drift__<model>__v<version>__<start>__<end>.{html,json}`` (local path or
    ``s3://``; same window -> same files), logs them as artifacts of the version's MLflow run and
    tags the version with the verdict (best effort). All of it is
    :func:`mlops_provider.runtime.monitoring.monitor.run_monitor`; this operator resolves the MLflow and
    object-store connections and skips (``AirflowSkipException``) while no ``@<alias>`` exists yet.

    Returns (XCom) a small summary (:func:`mlops_provider.runtime.monitoring.reports.xcom_summary`):
    ``drift``, ``trigger``, ``signals`` (``{"drift", "performance"}``), ``reasons``, ``trigger_reasons``,
    ``alarms`` (each drifted feature with its statistic, threshold and effect), ``calibration``,
    ``traffic_excluded``, ``status`` (``ok`` | ``no_traffic`` | ``insufficient_data`` |
    ``no_testable_columns``), ``share``, ``threshold``, ``drifted_columns``, ``n_reference``,
    ``n_current``, ``n_sample``, ``window``, ``report`` (``{"html", "json"}``), ``model``,
    ``model_version``, ``reference_alias``, ``snapshot_path``, ``task``, ``prediction_drift`` (status,
    verdict, drifted prediction columns, alarms), and ``performance`` with its task, status, verdict, the
    task's headline metrics, the per-day realized / estimated metric, the current window's estimate and
    the detector's state. The per-feature statistics (``columns``) and the per-slice tables are in the
    JSON report.
    """

    template_fields: Sequence[str] = (
        "model_name",
        "inference_log_dir",
        "report_dir",
        "window_start",
        "window_end",
        "reference_alias",
        "labels_dir",
        "reference_cache_dir",
    )
    operator_extra_links = (DriftReportLink(),)
    ui_color = "#fff4e0"

    def __init__(
        self,
        *,
        model_name: str,
        inference_log_dir: str,
        features: Mapping[str, Sequence[str]],
        report_dir: str,
        window_start: str | None = None,
        window_end: str | None = None,
        reference_alias: str = "champion",
        drift_share: float = 0.3,
        min_rows: int = 100,
        max_reference_rows: int | None = None,
        drift: Mapping[str, Any] | None = None,
        performance: Mapping[str, Any] | None = None,
        labels_dir: str | None = None,
        label_column: str | None = None,
        reference_cache_dir: str | None = None,
        aws_conn_id: str | None = "aws_default",
        mlflow_conn_id: str = "mlflow_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.inference_log_dir = inference_log_dir
        self.features = {k: list(v) for k, v in dict(features).items() if not isinstance(v, str)}
        self.report_dir = report_dir
        self.window_start = window_start
        self.window_end = window_end
        self.reference_alias = reference_alias
        self.drift_share = drift_share
        self.min_rows = min_rows
        self.max_reference_rows = max_reference_rows
        self.drift = dict(drift or {})
        self.performance = dict(performance) if performance else None
        self.labels_dir = labels_dir
        self.label_column = label_column
        self.reference_cache_dir = reference_cache_dir
        self.aws_conn_id = aws_conn_id
        self.mlflow_conn_id = mlflow_conn_id

    # ------------------------------------------------------------------ helpers
    def _window(self, context: Context) -> tuple[str | None, str | None]:
        start, end = _iso(self.window_start), _iso(self.window_end)
        if start is None and end is None:
            ctx_start = _iso(context.get("data_interval_start"))
            ctx_end = _iso(context.get("data_interval_end"))
            if ctx_start and ctx_end and ctx_start != ctx_end:
                start, end = ctx_start, ctx_end
        return start, end

    def _client(self) -> Any:
        from mlops_provider.hooks.mlflow import MLflowHook

        return MLflowHook(mlflow_conn_id=self.mlflow_conn_id).get_client()

    # ------------------------------------------------------------------ execute
    def execute(self, context: Context) -> dict[str, Any]:
        """Resolve the hooks, run :func:`~mlops_provider.runtime.monitoring.monitor.run_monitor`, push
        its small summary (the per-feature details are in the report files)."""
        from mlops_provider.exceptions import NothingToMonitorError
        from mlops_provider.operators import object_store
        from mlops_provider.runtime.monitoring.monitor import run_monitor
        from mlops_provider.runtime.monitoring.reports import xcom_summary

        start, end = self._window(context)
        try:
            result = run_monitor(
                model=self.model_name,
                inference_log_dir=self.inference_log_dir,
                features=self.features,
                report_dir=self.report_dir,
                client=self._client(),
                window_start=start,
                window_end=end,
                reference_alias=self.reference_alias,
                drift=self.drift,
                drift_share=self.drift_share,
                max_reference_rows=self.max_reference_rows,
                min_rows=self.min_rows,
                performance=self.performance,
                labels_dir=self.labels_dir,
                label_column=self.label_column,
                reference_cache_dir=self.reference_cache_dir,
                store=object_store(self.aws_conn_id),
            )
        except NothingToMonitorError as e:
            # Normal before the first promotion (the monitor's cron starts with the deployment).
            skip(str(e), log=self.log)
        DriftReportLink.persist(context, result["report"].get("html"), self.model_name)
        return xcom_summary(result)


class DriftReportOperator(EvidentlyDriftOperator):
    """Former name of :class:`EvidentlyDriftOperator` (kept so existing DAGs keep working)."""


def _as_result(value: Any) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str):
        text = value.strip()
        for parse in (json.loads, ast.literal_eval):
            try:
                parsed = parse(text)
            except (ValueError, SyntaxError):
                continue
            if isinstance(parsed, Mapping):
                return dict(parsed)
    raise DriftError(
        f"DriftSignalOperator got {type(value).__name__} {str(value)[:200]!r} as result; pass the drift report "
        "task's XCom (e.g. result=report_task.output or '{{ ti.xcom_pull(task_ids=\"drift_report\") }}')."
    )


class DriftSignalOperator(BaseOperator):
    """Emit the ``drift/<model>`` Asset event (its outlets) only when the report says drift holds
    (``drift``) or the performance detector (or, without one, the fixed bounds) fired (``trigger``).

    No trigger (or no traffic / too little data) -> ``AirflowSkipException``: the task is skipped and
    its outlets get no event. Trigger -> each outlet's event extra carries the evidence: ``signals``
    (``{"drift": bool, "performance": bool}``, what the training policy's ``retrain_when`` reads), the
    drifted features with their statistic, threshold and effect (``alarms``) and the performance verdict.
    """

    template_fields: Sequence[str] = ("result",)
    ui_color = "#ffe0e0"

    def __init__(self, *, result: dict[str, Any] | str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.result = result

    def execute(self, context: Context) -> dict[str, Any]:
        result = _as_result(self.result)
        if result.get("drift") is not True and result.get("trigger") is not True:
            status = result.get("status", "ok")
            perf = result.get("performance") or {}
            reason = (
                f"No drift signal for model {result.get('model')} version {result.get('model_version')}: "
                f"status={status}, drifted columns {list(result.get('drifted_columns') or [])} (share "
                f"{float(result.get('share') or 0):.3f}, dataset rule {result.get('reasons') or 'not met'}), "
                f"performance degraded={perf.get('degraded')} (window {result.get('window')}, "
                f"{result.get('n_current', 0)} rows). No asset event."
            )
            skip(reason, log=self.log)
        report = result.get("report") or {}
        extra: dict[str, Any] = {
            "model": result.get("model"),
            "model_version": result.get("model_version"),
            "share": result.get("share"),
            "threshold": result.get("threshold"),
            "drifted_columns": list(result.get("drifted_columns") or []),
            "window": result.get("window"),
            "n_current": result.get("n_current"),
            "report_html": report.get("html"),
            "report_json": report.get("json"),
            "drift": result.get("drift") is True,
            "trigger_reasons": list(result.get("trigger_reasons") or []),
            # which monitor signal fired (the training policy's retrain_when reads it) and why
            "signals": dict(result.get("signals") or {
                "drift": result.get("drift") is True,
                "performance": bool((result.get("performance") or {}).get("degraded")),
            }),
            "alarms": list(result.get("alarms") or []),
        }
        perf = result.get("performance") or {}
        if perf:
            overall = perf.get("overall") or {}
            experiment = perf.get("experiment") or {}
            task = perf.get("task")
            extra["performance"] = {
                "status": perf.get("status"),
                "task": (task or {}).get("task") if isinstance(task, Mapping) else (task or "binary"),
                "degraded": perf.get("degraded"),
                "reasons": perf.get("reasons"),
                # the task's headline metrics (binary: roc_auc, log_loss, brier, ece; multiclass: log_loss,
                # accuracy, macro_f1, ece; regression: rmse, mae, r2, bias)
                "metrics": {k: v for k, v in overall.items() if k != "n"},
                "roc_auc": overall.get("roc_auc"),
                "log_loss": overall.get("log_loss"),
                "ece": overall.get("ece"),
                "drops": perf.get("drops"),
                "n_labelled": perf.get("n_labelled"),
                "baseline": perf.get("baseline"),
                "experiment_winner": experiment.get("winner"),
                "decided_by": perf.get("decided_by"),
                "detector": perf.get("detector"),
            }
        if result.get("prediction_drift"):
            extra["prediction_drift"] = result["prediction_drift"]
        extra = json.loads(json.dumps(extra, default=str))
        outlet_events = context["outlet_events"]
        for outlet in self.outlets or []:
            outlet_events[outlet].extra = dict(extra)
            self.log.info("Drift signal on %s: %s", getattr(outlet, "uri", outlet), extra)
        if not self.outlets:
            self.log.warning("DriftSignalOperator has no outlets; nothing will be triggered.")
        return extra
