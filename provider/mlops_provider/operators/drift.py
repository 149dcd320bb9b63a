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
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowSkipException

from mlops_provider.exceptions import DriftError, ModelRegistryError
from mlops_provider.links.drift import DriftReportLink


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

    **Current**: the inference log rows of ``[window_start, window_end)`` (default: the run's data
    interval, the whole log when that is empty), read column by column (parquet partitions, or
    JSONL spilled in bounded chunks); a seeded stratified sample (UTC day x ``drift.stratify_by``,
    capped at ``drift.sample_rows``) feeds Evidently, exact PSI / Jensen-Shannon / unseen-category
    statistics cover the whole window.

    **Rules** (``drift``: ``MonitoringConfig.drift`` as a dict): per-feature method / threshold,
    default methods by window size, unseen-category bound, dataset rule (``drift_share``,
    ``min_drifted_columns``, ``critical`` columns).

    **Performance** (``performance``: ``MonitoringConfig.performance`` as a dict, with ``labels_dir``
    and ``label_column``): the window ``label_delay_hours`` earlier is joined with the outcomes that landed
    since; ROC AUC, log loss and calibration overall / per day / per slice vs the champion's
    validation metrics; a drop beyond the bounds sets ``trigger`` like drift. Champion vs
    challenger is compared when the log carries experiment columns.

    Writes ``<report_dir>/drift__<model>__v<version>__<start>__<end>.{html,json}`` (local path or
    ``s3://``; same window -> same files), logs them as artifacts of the version's MLflow run and
    tags the version with the verdict (best effort). Returns the result dict: ``drift``, ``trigger``,
    ``reasons``, ``status`` (``ok`` | ``no_traffic`` | ``insufficient_data`` | ``no_testable_columns``),
    ``share``, ``threshold``, ``drifted_columns``, ``columns`` (per feature: method, score,
    p_value / distance, threshold, drifted, exact psi / js_distance, null and unseen shares),
    ``n_reference``, ``n_current``, ``n_sample``, ``window``, ``report``, ``performance``, ``model``,
    ``model_version``, ``reference_alias``, ``snapshot_path``.
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

    def _reference_version(self, client: Any) -> Any:
        try:
            return client.get_model_version_by_alias(self.model_name, self.reference_alias)
        except Exception as e:  # mlflow raises MlflowException / RestException
            if getattr(e, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
                # Normal before the first promotion (the monitor's cron starts with the deployment).
                raise AirflowSkipException(
                    f"Nothing to monitor yet: models:/{self.model_name}@{self.reference_alias} does not exist "
                    f"({e}). The first training run's gate promotes one."
                ) from e
            raise ModelRegistryError(
                f"models:/{self.model_name}@{self.reference_alias} does not resolve ({e}). Drift needs a "
                f"model version under alias '{self.reference_alias}': run the training DAG and let the gate "
                "promote a champion, or set reference_alias."
            ) from e

    def _log_artifacts(
        self, client: Any, run_id: str | None, paths: Mapping[str, str | None], stem: str
    ) -> bool:
        """Attach the report files to the model version's run; never fails the task."""
        if not run_id:
            self.log.warning("Model version has no MLflow run; reports not logged as artifacts.")
            return False
        try:
            for path in paths.values():
                if path:
                    client.log_artifact(run_id, path, artifact_path=f"drift/{stem}")
        except Exception as e:  # noqa: BLE001 - best effort by design
            self.log.warning("Could not log drift reports to MLflow run %s: %s", run_id, e)
            return False
        return True

    def _tag_version(self, client: Any, version: str, result: Mapping[str, Any]) -> None:
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
                },
                sort_keys=True,
                default=str,
            )[:5000],
        }
        try:
            for key, value in tags.items():
                client.set_model_version_tag(self.model_name, version, key, value)
        except Exception as e:  # noqa: BLE001 - best effort by design
            self.log.warning(
                "Could not tag models:/%s v%s with the drift verdict: %s", self.model_name, version, e
            )

    def _performance(
        self, client: Any, run_id: str | None, start: str | None, end: str | None, tmp: str
    ) -> dict[str, Any] | None:
        from datetime import timedelta

        from mlops_provider.runtime.monitoring import performance as rp
        from mlops_provider.runtime.monitoring import statistics as ds

        cfg = dict(self.performance or {})
        if not cfg or not cfg.get("enabled", True):
            return None
        if not self.labels_dir or not self.label_column:
            self.log.warning("performance is configured but labels_dir/label are not set; skipping it.")
            return None
        delay = timedelta(hours=float(cfg.get("label_delay_hours", 48)))
        p_start = p_end = None
        if end is not None:
            p_end_dt = datetime.fromisoformat(end) - delay
            if cfg.get("window_hours"):
                length = timedelta(hours=float(cfg["window_hours"]))
            elif start is not None:
                length = datetime.fromisoformat(end) - datetime.fromisoformat(start)
            else:
                length = None
            p_end = p_end_dt.isoformat()
            p_start = (p_end_dt - length).isoformat() if length is not None else None
        keys = list(cfg.get("join_keys") or [])
        slices = list(cfg.get("slices") or [])
        cols = {c: "string" for c in [rp.REQUEST_ID, rp.VARIANT, "model_version", *keys, *slices]}
        cols.update({rp.PREDICTION: "float", rp.CHALLENGER_PREDICTION: "float"})
        win = ds.open_log_window(self.inference_log_dir, cols, p_start, p_end, Path(tmp) / "perf")
        requests = ds.window_frame(win, list(cols))
        tol = cfg.get("time_tolerance_hours", 36.0)
        label_end = None
        if p_end is not None:
            label_end = (datetime.fromisoformat(p_end) + timedelta(hours=float(tol or 0) + 24)).isoformat()
        labels = rp.read_labels(
            self.labels_dir, label=self.label_column, keys=keys, start=p_start, end=label_end
        )
        baseline: dict[str, Any] = {}
        if run_id:
            try:
                m = client.get_run(run_id).data.metrics
                baseline = {k: m.get(k) for k in ("roc_auc", "log_loss")}
            except Exception as e:  # noqa: BLE001 - no baseline -> metrics only, no verdict on drops
                self.log.warning("No baseline metrics from run %s: %s", run_id, e)
        report = rp.performance_report(
            requests,
            labels,
            label=self.label_column,
            baseline=baseline,
            join_keys=keys,
            time_tolerance_hours=tol,
            slices=slices,
            min_labelled_rows=int(cfg.get("min_labelled_rows", 200)),
            max_roc_auc_drop=float(cfg.get("max_roc_auc_drop", 0.05)),
            max_log_loss_increase=float(cfg.get("max_log_loss_increase", 0.05)),
            max_calibration_error=cfg.get("max_calibration_error"),
            bootstrap=int(cfg.get("bootstrap", 500)),
            confidence=float(cfg.get("confidence", 0.95)),
        )
        report["window"] = {"start": p_start, "end": p_end}
        self.log.info(
            "Performance window [%s, %s): status=%s labelled=%s degraded=%s %s",
            p_start,
            p_end,
            report["status"],
            report["n_labelled"],
            report["degraded"],
            report["reasons"],
        )
        return report

    # ------------------------------------------------------------------ execute
    def execute(self, context: Context) -> dict[str, Any]:
        import tempfile

        from mlops_provider.runtime.monitoring import drift as rt
        from mlops_provider.runtime.monitoring import statistics as ds

        numeric = list(self.features.get("numeric", []))
        categorical = list(self.features.get("categorical", []))
        rules = rt.DriftRules.from_config(self.drift, self.drift_share)
        if self.max_reference_rows is not None:
            from dataclasses import replace

            rules = replace(rules, reference_rows=int(self.max_reference_rows))
        start, end = self._window(context)
        self.log.info("Drift window [%s, %s) of %s", start or "-inf", end or "+inf", self.inference_log_dir)

        client = self._client()
        version = self._reference_version(client)
        model_version = str(version.version)
        snapshot_path = rt.snapshot_from_lineage(client, version)
        where = f"models:/{self.model_name}@{self.reference_alias} (version {model_version})"
        self.log.info("Reference: %s, snapshot_path=%s", where, snapshot_path)
        rt.check_reference(snapshot_path, model=self.model_name, model_version=model_version)

        with tempfile.TemporaryDirectory(prefix="mlops-drift-") as tmp:
            columns = {c: "float" for c in numeric} | {c: "string" for c in categorical}
            columns |= {c: "string" for c in rules.stratify_by if c not in columns}
            win = ds.open_log_window(self.inference_log_dir, columns, start, end, tmp)
            n_current = win.n_rows
            self.log.info("Current window: %d inference record(s)", n_current)
            snapshot = None
            cache_hit = None
            if 0 < n_current < self.min_rows:
                result = rt.empty_result(
                    status="insufficient_data",
                    n_current=n_current,
                    drift_share=rules.drift_share,
                    numeric=numeric,
                    categorical=categorical,
                )
                self.log.info("Only %d row(s) < min_rows=%d: no drift verdict.", n_current, self.min_rows)
            elif n_current == 0:
                result = rt.empty_result(
                    status="no_traffic",
                    drift_share=rules.drift_share,
                    numeric=numeric,
                    categorical=categorical,
                )
                self.log.info("No traffic in the window: no drift verdict, no alarm.")
            else:
                ref, cache_hit = rt.load_reference_stats(
                    snapshot_path,
                    model=self.model_name,
                    model_version=model_version,
                    numeric=numeric,
                    categorical=categorical,
                    rules=rules,
                    cache_dir=self._cache_dir(),
                )
                cur = ds.stream_current(
                    win,
                    ref,
                    numeric,
                    categorical,
                    sample_rows=rules.sample_rows,
                    seed=rules.seed,
                    stratify_by=[c for c in rules.stratify_by if c in win.columns],
                )
                result, snapshot = rt.evaluate_drift(ref, cur, numeric, categorical, rules)
            result["reference_cache_hit"] = cache_hit
            result["performance"] = self._performance(client, version.run_id, start, end, tmp)
            perf = result["performance"] or {}
            reasons = [f"data drift: {r}" for r in result.get("reasons", [])] if result.get("drift") else []
            reasons += [f"performance: {r}" for r in perf.get("reasons", [])]
            result.update(
                model=self.model_name,
                model_version=model_version,
                reference_alias=self.reference_alias,
                snapshot_path=snapshot_path,
                window={"start": start, "end": end},
                min_rows=self.min_rows,
                trigger=bool(result.get("drift") is True or perf.get("degraded") is True),
                trigger_reasons=reasons,
            )
            result = json.loads(json.dumps(result, default=str))
            stem = rt.report_stem(self.model_name, model_version, start, end)
            local_dir = Path(tmp) / "reports" if _is_s3(self.report_dir) else Path(self.report_dir)
            local = rt.write_report(snapshot, local_dir, stem, summary=result)
            result["mlflow_logged"] = self._log_artifacts(client, version.run_id, local, stem)
            paths = rt.publish_reports(local, self.report_dir, aws_conn_id=self.aws_conn_id)
        result["report"] = paths
        self._tag_version(client, model_version, result)
        DriftReportLink.persist(context, paths.get("html"))
        self.log.info(
            "Drift status=%s drift=%s trigger=%s share=%.3f threshold=%.3f drifted=%s report=%s",
            result["status"],
            result["drift"],
            result["trigger"],
            result["share"],
            result["threshold"],
            result["drifted_columns"],
            paths,
        )
        return result

    def _cache_dir(self) -> str | None:
        if self.reference_cache_dir:
            return self.reference_cache_dir
        if _is_s3(self.report_dir):
            import tempfile

            return str(Path(tempfile.gettempdir()) / "mlops-drift-reference-cache")
        return str(Path(self.report_dir) / "_reference_cache")


class DriftReportOperator(EvidentlyDriftOperator):
    """Former name of :class:`EvidentlyDriftOperator` (kept so existing DAGs keep working)."""


def _is_s3(path: str | None) -> bool:
    return str(path or "").startswith("s3://")


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
    (``drift``) or live performance dropped beyond its bounds (``trigger``).

    No trigger (or no traffic / too little data) -> ``AirflowSkipException``: the task is skipped and
    its outlets get no event. Trigger -> each outlet's event extra carries the evidence.
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
            reason = (
                f"No drift signal for model {result.get('model')} version {result.get('model_version')}: "
                f"status={status}, share of drifted columns {float(result.get('share') or 0):.3f} < "
                f"threshold {result.get('threshold')} (window {result.get('window')}, "
                f"{result.get('n_current', 0)} rows). No asset event."
            )
            self.log.info(reason)
            raise AirflowSkipException(reason)
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
        }
        perf = result.get("performance") or {}
        if perf:
            overall = perf.get("overall") or {}
            experiment = perf.get("experiment") or {}
            extra["performance"] = {
                "status": perf.get("status"),
                "degraded": perf.get("degraded"),
                "reasons": perf.get("reasons"),
                "roc_auc": overall.get("roc_auc"),
                "log_loss": overall.get("log_loss"),
                "ece": overall.get("ece"),
                "n_labelled": perf.get("n_labelled"),
                "baseline": perf.get("baseline"),
                "experiment_winner": experiment.get("winner"),
            }
        extra = json.loads(json.dumps(extra, default=str))
        outlet_events = context["outlet_events"]
        for outlet in self.outlets or []:
            outlet_events[outlet].extra = dict(extra)
            self.log.info("Drift signal on %s: %s", getattr(outlet, "uri", outlet), extra)
        if not self.outlets:
            self.log.warning("DriftSignalOperator has no outlets; nothing will be triggered.")
        return extra
