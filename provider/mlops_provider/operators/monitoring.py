"""Operational monitoring of the serving endpoint, next to the drift report (OpsSummaryOperator).

Parse-safe: pandas, httpx, psutil and prometheus_client are imported inside ``execute()`` only
(through :mod:`mlops_provider.runtime.monitoring.ops_metrics`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from airflow.sdk import BaseOperator, Context


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    text = str(value).strip()
    return None if not text or text.lower() in ("none", "null") else text


class OpsSummaryOperator(BaseOperator):
    """Request rate, latency percentiles, error rates and resource use of the endpoint for one window.

    Only live traffic counts as predictions served: smoke tests, infra validation, warm-up and shadow
    requests (the log's ``traffic`` column; untagged rows are live unless their request_id has the legacy
    ``smoke-`` prefix) are reported apart, by kind, under ``test_traffic``.

    Sources: the inference log of ``[window_start, window_end)`` and the server's Prometheus
    ``/metrics`` (``metrics_url``, default the URL in the deployment state ``deployment_state_dir``);
    see :mod:`mlops_provider.runtime.monitoring.ops_metrics`. A stopped server is not an error: the summary
    says ``endpoint.status = "unreachable"`` and still carries the log figures.

    Writes ``<report_dir>/ops__<model>__<start>__<end>.json`` (next to the drift report of the same
    window, whose verdict it includes when ``drift_task_id`` ran) and returns the summary; an
    ``s3://`` ``report_dir`` is written through the ``aws_conn_id`` connection. Everything but reading
    the context is :func:`mlops_provider.runtime.monitoring.ops_metrics.run_ops_summary`.
    Runs whatever the drift task's state (trigger rule ``all_done``).
    """

    template_fields: Sequence[str] = (
        "model_name",
        "inference_log_dir",
        "report_dir",
        "window_start",
        "window_end",
        "state_path",
        "deployment_state_dir",
        "metrics_url",
    )
    ui_color = "#e8fdf0"

    def __init__(
        self,
        *,
        model_name: str,
        inference_log_dir: str,
        report_dir: str,
        state_path: str,
        window_start: str | None = None,
        window_end: str | None = None,
        deployment_state_dir: str | None = None,
        metrics_url: str | None = None,
        timeout: float = 5.0,
        drift_task_id: str | None = "drift_report",
        aws_conn_id: str | None = "aws_default",
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)
        self.model_name = model_name
        self.inference_log_dir = inference_log_dir
        self.report_dir = report_dir
        self.state_path = state_path
        self.window_start = window_start
        self.window_end = window_end
        self.deployment_state_dir = deployment_state_dir
        self.metrics_url = metrics_url
        self.timeout = timeout
        self.drift_task_id = drift_task_id
        self.aws_conn_id = aws_conn_id

    def _drift(self, context: Context) -> dict[str, Any] | None:
        if not self.drift_task_id:
            return None
        try:
            value = context["ti"].xcom_pull(task_ids=self.drift_task_id)
        except Exception:  # noqa: BLE001 - the drift half is optional
            return None
        if not isinstance(value, Mapping):
            return None
        keys = (
            "status",
            "drift",
            "share",
            "threshold",
            "drifted_columns",
            "n_current",
            "model_version",
            "report",
        )
        return {k: value.get(k) for k in keys if k in value}

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_provider.operators import object_store
        from mlops_provider.runtime.monitoring.ops_metrics import run_ops_summary

        start, end = _text(self.window_start), _text(self.window_end)
        if start is None and end is None:
            s, e = context.get("data_interval_start"), context.get("data_interval_end")
            if s is not None and e is not None and s != e:
                start, end = _text(s), _text(e)
        return run_ops_summary(
            model=self.model_name,
            inference_log_dir=self.inference_log_dir,
            report_dir=self.report_dir,
            state_path=self.state_path,
            window_start=start,
            window_end=end,
            deployment_state_dir=self.deployment_state_dir,
            metrics_url=self.metrics_url,
            timeout=self.timeout,
            drift=self._drift(context),
            store=object_store(self.aws_conn_id),
        )


__all__ = ["OpsSummaryOperator"]
