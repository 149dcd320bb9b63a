"""Validation gate (challenger vs @champion) and alias promotion operators (light module).

``ModelGateOperator`` computes the verdict (never raises on a reject); ``PromoteModelOperator``
signals: it moves the aliases and emits its outlet asset event only on "promote", otherwise it
raises ``AirflowSkipException`` so the ``mlflow/<model>@champion`` asset gets no event.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context

from mlops_provider.exceptions import ConfigError


def _parse_verdict(verdict: dict[str, Any] | str, task_id: str) -> dict[str, Any]:
    if isinstance(verdict, dict):
        return verdict
    text = str(verdict).strip()
    for parse in (json.loads, ast.literal_eval):
        try:
            value = parse(text)
        except (ValueError, SyntaxError):
            continue
        if isinstance(value, dict):
            return value
    raise ConfigError(
        f"{task_id}: verdict is not a dict (got {text[:200]!r}); pass the gate task's XCom return value."
    )


class ModelGateOperator(BaseOperator):
    """Evaluate challenger and current @champion on the snapshot's validation split.

    Returns the verdict ``{"decision": "promote"|"reject", "bootstrap", "challenger": {"version",
    "metrics"}, "champion": {...} | None, "checks": [{"name", "value", "bound", "passed"}],
    "report_path", ...}``. Writes it to ``report_dir`` and tags the challenger version ``gate.*``.
    """

    template_fields: Sequence[str] = ("challenger_version", "snapshot", "report_dir", "model_name")
    ui_color = "#f5d76e"

    def __init__(
        self,
        *,
        model_name: str,
        challenger_version: str,
        snapshot: str,
        features: dict[str, list[str]],
        label: str,
        primary_metric: str = "roc_auc",
        floors: dict[str, float] | None = None,
        max_regression: dict[str, float] | None = None,
        report_dir: str,
        mlflow_conn_id: str = "mlflow_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.challenger_version = challenger_version
        self.snapshot = snapshot
        self.features = features
        self.label_column = label
        self.primary_metric = primary_metric
        self.floors = {"roc_auc": 0.55} if floors is None else floors
        self.max_regression = {"roc_auc": 0.005} if max_regression is None else max_regression
        self.report_dir = report_dir
        self.mlflow_conn_id = mlflow_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_provider.hooks.mlflow import MLflowHook
        from mlops_provider.runtime import gate

        cfg = MLflowHook(self.mlflow_conn_id).configure()
        verdict = gate.evaluate_gate(
            self.model_name,
            str(self.challenger_version),
            self.snapshot,
            list(self.features.get("categorical", [])),
            list(self.features.get("numeric", [])),
            self.label_column,
            primary_metric=self.primary_metric,
            floors=self.floors,
            max_regression=self.max_regression,
            report_dir=self.report_dir,
            tracking=cfg.public(),
        )
        for c in verdict["checks"]:
            self.log.info("check %-22s value %.4f bound %.4f %s", c["name"], c["value"], c["bound"],
                          "PASS" if c["passed"] else "FAIL")
        self.log.info("gate decision for %s v%s: %s (bootstrap=%s); report %s", self.model_name,
                      verdict["challenger"]["version"], verdict["decision"], verdict["bootstrap"],
                      verdict["report_path"])
        return verdict


class PromoteModelOperator(BaseOperator):
    """Flip ``@champion`` to the gate's challenger (old champion -> ``@previous``), or skip on reject.

    Returns ``{"champion": v, "previous": v_old | None}`` and sets the outlet asset event extra
    ``{"model", "version", "previous"}`` on every outlet.
    """

    template_fields: Sequence[str] = ("verdict", "model_name")
    ui_color = "#8fd19e"

    def __init__(
        self,
        *,
        model_name: str,
        verdict: dict[str, Any] | str,
        mlflow_conn_id: str = "mlflow_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.verdict = verdict
        self.mlflow_conn_id = mlflow_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        verdict = _parse_verdict(self.verdict, self.task_id)
        version = (verdict.get("challenger") or {}).get("version")
        if verdict.get("decision") != "promote":
            from mlops_provider.runtime.gate import failed_checks_summary

            raise AirflowSkipException(
                f"challenger v{version} rejected: {failed_checks_summary(verdict)}; @champion unchanged."
            )
        from mlops_provider.hooks.mlflow import MLflowHook
        from mlops_provider.runtime import gate

        cfg = MLflowHook(self.mlflow_conn_id).configure()
        result = gate.promote(self.model_name, verdict, tracking=cfg.public())
        extra = {"model": self.model_name, "version": result["champion"], "previous": result["previous"]}
        outlet_events = context.get("outlet_events")
        if outlet_events is not None:
            for outlet in self.outlets or []:
                outlet_events[outlet].extra = extra
        self.log.info("%s@champion = v%s (previous v%s)%s", self.model_name, result["champion"],
                      result["previous"], "" if result["changed"] else " [already promoted]")
        return {"champion": result["champion"], "previous": result["previous"]}
