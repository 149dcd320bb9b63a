"""Drift monitoring: compute an Evidently report (DriftReportOperator), then signal (DriftSignalOperator).

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


class DriftReportOperator(BaseOperator):
    """Evidently data drift of the inference log window vs the training data of ``<model>@<alias>``.

    The reference is the ``train`` split of the snapshot named by the ``snapshot_path`` tag of the
    model version the alias points to. The window is ``[window_start, window_end)``; by default the
    run's data interval, and the whole log when that is empty (manual / asset-triggered runs).

    Writes ``<report_dir>/drift__<model>__v<version>__<start>__<end>.{html,json}`` (same window ->
    same files), logs them as artifacts of the version's MLflow run (best effort), and returns the
    result dict: ``drift``, ``status`` (``ok`` | ``no_traffic`` | ``insufficient_data`` |
    ``no_testable_columns``), ``share``, ``threshold``, ``drifted_columns``, ``columns``,
    ``n_reference``, ``n_current``, ``window``, ``report`` ({html, json}), ``model``,
    ``model_version``, ``reference_alias``, ``snapshot_path``.
    """

    template_fields: Sequence[str] = (
        "model_name",
        "inference_log_dir",
        "report_dir",
        "window_start",
        "window_end",
        "reference_alias",
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
        max_reference_rows: int = 50_000,
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

    def _log_artifacts(self, client: Any, run_id: str | None, paths: Mapping[str, str | None], stem: str) -> bool:
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

    # ------------------------------------------------------------------ execute
    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_provider.runtime import drift as rt
        from mlops_provider.runtime.inference_log import read_inference_log

        numeric = list(self.features.get("numeric", []))
        categorical = list(self.features.get("categorical", []))
        start, end = self._window(context)
        self.log.info("Drift window [%s, %s) of %s", start or "-inf", end or "+inf", self.inference_log_dir)

        client = self._client()
        version = self._reference_version(client)
        model_version = str(version.version)
        snapshot_path = (version.tags or {}).get("snapshot_path")
        where = f"models:/{self.model_name}@{self.reference_alias} (version {model_version})"
        self.log.info("Reference: %s, snapshot_path=%s", where, snapshot_path)
        rt.check_reference(snapshot_path, model=self.model_name, model_version=model_version)

        current = read_inference_log(self.inference_log_dir, start=start, end=end)
        n_current = len(current)
        self.log.info("Current window: %d inference record(s)", n_current)

        snapshot = None
        if 0 < n_current < self.min_rows:
            result = rt.empty_result(
                status="insufficient_data", n_current=n_current, drift_share=self.drift_share,
                numeric=numeric, categorical=categorical,
            )
            self.log.info("Only %d row(s) < min_rows=%d: no drift verdict.", n_current, self.min_rows)
        elif n_current == 0:
            result = rt.empty_result(
                status="no_traffic", drift_share=self.drift_share, numeric=numeric, categorical=categorical
            )
        else:
            reference = rt.load_reference(snapshot_path, model=self.model_name, model_version=model_version)
            result, snapshot = rt.drift_report(
                reference, current, numeric, categorical, drift_share=self.drift_share,
                max_reference_rows=self.max_reference_rows,
            )
        result.update(
            model=self.model_name,
            model_version=model_version,
            reference_alias=self.reference_alias,
            snapshot_path=snapshot_path,
            window={"start": start, "end": end},
            min_rows=self.min_rows,
        )
        stem = rt.report_stem(self.model_name, model_version, start, end)
        paths = rt.write_report(snapshot, self.report_dir, stem, summary=result)
        result["report"] = paths
        result["mlflow_logged"] = self._log_artifacts(client, version.run_id, paths, stem)
        DriftReportLink.persist(context, paths.get("html"))
        self.log.info(
            "Drift status=%s drift=%s share=%.3f threshold=%.3f drifted=%s report=%s",
            result["status"], result["drift"], result["share"], result["threshold"],
            result["drifted_columns"], paths,
        )
        return json.loads(json.dumps(result, default=str))


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
    """Emit the ``drift/<model>`` Asset event (its outlets) only when the report says drift holds.

    No drift (or no traffic / too little data) -> ``AirflowSkipException``: the task is skipped and
    its outlets get no event. Drift -> each outlet's event extra carries the evidence.
    """

    template_fields: Sequence[str] = ("result",)
    ui_color = "#ffe0e0"

    def __init__(self, *, result: dict[str, Any] | str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.result = result

    def execute(self, context: Context) -> dict[str, Any]:
        result = _as_result(self.result)
        if result.get("drift") is not True:
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
        }
        extra = json.loads(json.dumps(extra, default=str))
        outlet_events = context["outlet_events"]
        for outlet in self.outlets or []:
            outlet_events[outlet].extra = dict(extra)
            self.log.info("Drift signal on %s: %s", getattr(outlet, "uri", outlet), extra)
        if not self.outlets:
            self.log.warning("DriftSignalOperator has no outlets; nothing will be triggered.")
        return extra
