"""Validation gate, promotion, human approval and manual alias operators (light module).

``ModelGateOperator`` computes the verdict (never raises on a reject; bad input raises a named error) and
pushes a small summary of it to XCom (decision, versions, headline metrics, failed checks, where the full
verdict JSON lies; bounded by ``runtime.gate.verdict.XCOM_MAX_BYTES``): promote and approval read that.
``GateApprovalOperator`` (optional, Airflow 3 HITL) asks a human, showing the verdict and the model card.
``PromoteModelOperator`` signals: it moves the aliases and emits its outlet asset event only on a real
alias change; on a reject it raises ``AirflowSkipException`` (or :class:`GateRejected` with
``fail_on_reject``) so the ``mlflow/<model>@champion`` asset gets no event and the champion keeps serving.
``ChampionAliasOperator`` is the force-promote / rollback task of the manual DAGs.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import BaseOperator, Context

from mlops_provider.exceptions import ConfigError, GateRejected
from mlops_provider.links.base import is_openable
from mlops_provider.links.gate import GateVerdictLink, ModelCardLink
from mlops_provider.operator_notes import advisory_label, approval_params, record_approval, set_run_note, skip
from mlops_provider.specs import GateSpec


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


def _full_verdict(summary: dict[str, Any], aws_conn_id: str | None) -> dict[str, Any]:
    """The full verdict from the summary's ``report_path`` (a local file or an ``s3://`` object read through
    ``aws_conn_id``) when this worker can read it, else the summary."""
    from mlops_provider.operators import object_store

    path = summary.get("report_path")
    if path:
        try:
            full = object_store(aws_conn_id).read_json(str(path))
        except Exception:  # noqa: BLE001 - unreadable or gone: the summary is what the rejection reports
            return summary
        if isinstance(full, dict) and str((full.get("challenger") or {}).get("version")) == str(
            (summary.get("challenger") or {}).get("version")
        ):
            return full
    return summary


def _run_ref(context: Context) -> str | None:
    ti = context.get("ti")
    if ti is None:
        return None
    return f"{ti.dag_id}/{ti.run_id}"


def _emit(operator: BaseOperator, context: Context, extra: dict[str, Any]) -> None:
    outlet_events = context.get("outlet_events")
    if outlet_events is not None:
        for outlet in operator.outlets or []:
            outlet_events[outlet].extra = extra


class ModelGateOperator(BaseOperator):
    """Evaluate the challenger and the current @champion on the snapshot's frozen evaluation split.

    ``gate``: the model's :class:`~mlops_provider.specs.GateSpec` as a dict (``specs.as_dict(cfg.gate)``);
    ``training``: its :class:`~mlops_provider.specs.TrainingSpec` dict (the task, label and features the gate
    scores with). Both are templated and turned back into the dataclasses in ``execute``.

    Writes the full verdict (every check with value and bound, the paired comparison of the primary and guard
    metrics with their CIs, the power statement, slice tables, behavioral results, calibration, the task's
    plot data, importances) to ``report_dir``, logs it with the model card on the challenger's MLflow run and
    tags the version ``gate.*``. Returns (XCom) only its summary, under 4 KB whatever the slices:
    ``{"model", "task", "decision": "promote"|"reject", "bootstrap", "primary_metric", "challenger":
    {"version", "run_id", "metrics"}, "champion": {...} | None, "evaluation_set": {"rows", ...},
    "comparison": [...], "power": {...}, "check_counts", "failed": [names], "failed_checks": [{"name",
    "value", "bound", "direction", "message"}], "advisory_failed", "model_card": {"url"}, "report_path",
    "verdict_uri"}`` (:func:`~mlops_provider.runtime.gate.verdict.xcom_summary`).
    """

    template_fields: Sequence[str] = ("challenger_version", "snapshot", "report_dir", "model_name", "gate",
                                      "training")
    operator_extra_links = (ModelCardLink(), GateVerdictLink())
    ui_color = "#f5d76e"

    def __init__(
        self,
        *,
        model_name: str,
        challenger_version: str,
        snapshot: str,
        gate: dict[str, Any],
        training: dict[str, Any],
        report_dir: str,
        mlflow_conn_id: str = "mlflow_default",
        aws_conn_id: str | None = "aws_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.aws_conn_id = aws_conn_id
        self.model_name = model_name
        self.challenger_version = challenger_version
        self.snapshot = snapshot
        self.gate = gate
        self.training = training
        self.report_dir = report_dir
        self.mlflow_conn_id = mlflow_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_provider.hooks.mlflow import MLflowHook
        from mlops_provider.operators import object_store
        from mlops_provider.operators.training import stage_spec, training_spec
        from mlops_provider.runtime.gate import evaluate as gate
        from mlops_provider.runtime.gate.verdict import xcom_summary

        spec = stage_spec(GateSpec, self.gate, self.task_id, "gate")
        training = training_spec(self.training, self.task_id)
        cfg = MLflowHook(self.mlflow_conn_id).configure()
        verdict = gate.evaluate_gate(
            self.model_name, str(self.challenger_version), self.snapshot, spec, training,
            report_dir=self.report_dir, tracking=cfg.public(), store=object_store(self.aws_conn_id),
        )
        url = ModelCardLink.url(self.model_name, verdict["challenger"]["version"], cfg.ui_url)
        GateVerdictLink.push_all(context, self.model_name, verdict["challenger"]["version"], cfg.ui_url)
        for c in verdict["checks"]:
            value = "nan" if c["value"] is None else f"{c['value']:.4f}"
            bound = "nan" if c["bound"] is None else f"{c['bound']:.4f}"
            self.log.info(
                "check %-40s value %8s %s bound %s %s",
                c["name"],
                value,
                c.get("direction", ""),
                bound,
                advisory_label(c["passed"], c.get("enforced", True)),
            )
        for c in verdict.get("comparison") or []:
            self.log.info("%s: %s", "guard" if c.get("guard") else "primary", c.get("message"))
        if verdict.get("power"):
            self.log.info("power: %s", verdict["power"].get("statement"))
        for w in verdict.get("warnings", []):
            self.log.warning("gate: %s", w)
        self.log.info(
            "gate decision for %s v%s: %s (bootstrap=%s); report %s; model card %s",
            self.model_name,
            verdict["challenger"]["version"],
            verdict["decision"].upper(),
            verdict["bootstrap"],
            verdict["report_path"],
            url,
        )
        return xcom_summary(verdict)


class GateApprovalOperator(ApprovalOperator):
    """Human approval of a promotion (Airflow 3 HITL): the required action shows the verdict and card link.

    ``verdict``: the gate's XCom summary (or a full verdict).

    Skips itself (so nothing downstream runs and no one is asked) when the gate rejected. "Reject" skips the
    promote task; either answer is recorded on the version (``gate.approval``, ``gate.approval_by``).
    """

    template_fields: Sequence[str] = (*ApprovalOperator.template_fields, "verdict", "model_name")

    def __init__(
        self,
        *,
        model_name: str,
        verdict: dict[str, Any] | str,
        mlflow_conn_id: str = "mlflow_default",
        response_timeout: timedelta | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("subject", f"Promote the {model_name} challenger to @champion?")
        kwargs.setdefault("params", approval_params())
        super().__init__(response_timeout=response_timeout, **kwargs)
        self.model_name = model_name
        self.verdict = verdict
        self.mlflow_conn_id = mlflow_conn_id

    @staticmethod
    def describe(verdict: dict[str, Any]) -> str:
        ch, champ = verdict.get("challenger") or {}, verdict.get("champion")
        lines = [
            f"**Gate: {str(verdict.get('decision')).upper()}** — challenger v{ch.get('version')} "
            + (f"vs @champion v{champ.get('version')}" if champ else "(bootstrap: no champion yet)"),
            "",
            "| metric | challenger | champion |",
            "|---|---|---|",
        ]
        for m, v in (ch.get("metrics") or {}).items():
            c = ((champ or {}).get("metrics") or {}).get(m)
            lines.append(f"| {m} | {v:.4f} | {'—' if c is None else f'{c:.4f}'} |")
        for c in verdict.get("comparison") or []:
            lo, hi = (c.get("ci") or [None, None])[:2]
            span = "—" if lo is None or hi is None else f"[{lo:+.4f}, {hi:+.4f}]"
            lines.append(f"| {c.get('metric')} Δ ({'guard' if c.get('guard') else 'primary'}) | "
                         f"{(c.get('delta') or 0.0):+.4f} | CI {span} {'ok' if c.get('passed') else 'WORSE'} |")
        power = verdict.get("power") or {}
        if power.get("mde") is not None:
            lines += ["", f"Smallest detectable {power.get('metric')} difference at {power.get('rows')} rows: "
                          f"{power['mde']:.4f} ({power.get('power', 0):.0%} power)"]
        counts = verdict.get("check_counts") or {"total": len(verdict.get("checks", []))}
        lines += ["", f"{counts.get('total')} checks, failed: {verdict.get('failed') or 'none'}"]
        card = (verdict.get("model_card") or {}).get("url")
        if not is_openable(card) and verdict.get("model") and ch.get("version"):
            card = ModelCardLink.url(str(verdict["model"]), ch["version"])  # file:// is not a link in the UI
        if card and is_openable(card):
            lines += ["", f"Model card: [{card}]({card})"]
        lines += ["", f"Report: `{verdict.get('report_path')}`"]
        return "\n".join(lines)

    def execute(self, context: Context) -> Any:
        verdict = _parse_verdict(self.verdict, self.task_id)
        if verdict.get("decision") != "promote":
            skip(f"the gate decided {verdict.get('decision')!r}: nothing to approve.", log=self.log)
        self.subject = f"Promote {self.model_name} v{verdict['challenger']['version']} to @champion?"
        self.body = self.describe(verdict)
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        # recorded (version tags, run note) before the base class skips the promote task on "Reject"
        record_approval(self, context, _parse_verdict(self.verdict, self.task_id), event)
        return super().execute_complete(context=context, event=event)


class PromoteModelOperator(BaseOperator):
    """Flip ``@champion`` to the gate's challenger (old champion -> ``@previous``), or skip on reject.

    ``verdict``: the gate's XCom summary (decision, challenger and champion versions; a full verdict works too).

    Returns ``{"champion": v, "previous": v_old | None}`` and sets the outlet asset event extra
    ``{"model", "version", "previous"}`` on every outlet — only when this run moved the alias (a retry of
    the run that moved it re-announces it; a version that already serves for another reason skips).
    Run it in a pool of one slot per model (``pool=``) so promotions of one model are serialized.

    :param fail_on_reject: raise :class:`GateRejected` (task failed) instead of skipping on a reject.
    """

    template_fields: Sequence[str] = ("verdict", "model_name")
    ui_color = "#8fd19e"

    def __init__(
        self,
        *,
        model_name: str,
        verdict: dict[str, Any] | str,
        fail_on_reject: bool = False,
        mlflow_conn_id: str = "mlflow_default",
        aws_conn_id: str | None = "aws_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.verdict = verdict
        self.fail_on_reject = fail_on_reject
        self.mlflow_conn_id = mlflow_conn_id
        self.aws_conn_id = aws_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        verdict = _parse_verdict(self.verdict, self.task_id)
        version = (verdict.get("challenger") or {}).get("version")
        if verdict.get("decision") != "promote":
            from mlops_provider.runtime.gate.verdict import failed_checks_summary

            message = (
                f"challenger v{version} rejected: {failed_checks_summary(verdict)}; @champion unchanged "
                f"(report {verdict.get('report_path')})."
            )
            note = f"rejected by the gate: v{version}: {failed_checks_summary(verdict)}"
            if self.fail_on_reject:
                set_run_note(context, note, log=self.log)
                raise GateRejected(message, _full_verdict(verdict, self.aws_conn_id))
            skip(message, log=self.log, context=context, note=note)
        from mlops_provider.hooks.mlflow import MLflowHook
        from mlops_provider.runtime.gate import registry

        cfg = MLflowHook(self.mlflow_conn_id).configure()
        by = _run_ref(context)
        result = registry.promote(self.model_name, verdict, tracking=cfg.public(), by=by)
        if not result["changed"] and (by is None or result.get("promoted_by") != by):
            skip(
                f"{self.model_name}@champion already is v{result['champion']} (set by "
                f"{result.get('promoted_by') or 'another run'}): no alias change, no asset event.",
                log=self.log,
            )
        _emit(
            self,
            context,
            {"model": self.model_name, "version": result["champion"], "previous": result["previous"]},
        )
        self.log.info(
            "%s@champion = v%s (previous v%s)%s",
            self.model_name,
            result["champion"],
            result["previous"],
            "" if result["changed"] else " [moved by an earlier try of this run]",
        )
        set_run_note(context, f"promoted v{result['champion']} to @champion"
                     + (f" (previous v{result['previous']})" if result["previous"] else " (first champion)"),
                     log=self.log)
        return {"champion": result["champion"], "previous": result["previous"]}


class ChampionAliasOperator(BaseOperator):
    """Force-promote a version or roll back to one (the manual DAGs' task); a reason is required.

    ``action="force_promote"``: ``version`` becomes ``@champion`` whatever the gate said.
    ``action="rollback"``: ``version`` (default: ``@previous``) becomes ``@champion``.
    The old champion becomes ``@previous``; reason, user and run are tagged ``mlops.<action>.*`` on the
    version and logged. Emits the outlet asset event (so the deploy DAG redeploys) only on a real change.
    """

    template_fields: Sequence[str] = ("version", "reason", "model_name")
    ui_color = "#f1948a"

    def __init__(
        self,
        *,
        model_name: str,
        action: str,
        version: str | int | None,
        reason: str,
        mlflow_conn_id: str = "mlflow_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if action not in ("force_promote", "rollback"):
            raise ConfigError(
                f"{kwargs.get('task_id')}: action must be 'force_promote' or 'rollback', got {action!r}"
            )
        self.model_name = model_name
        self.action = action
        self.version = version
        self.reason = reason
        self.mlflow_conn_id = mlflow_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_provider.hooks.mlflow import MLflowHook
        from mlops_provider.runtime.gate import registry

        dag_run = context.get("dag_run")
        actor = getattr(dag_run, "triggering_user_name", None) if dag_run is not None else None
        version = None if self.version in (None, "", "None") else str(self.version)
        self.log.warning(
            "%s of %s to v%s requested by %s; reason: %s",
            self.action,
            self.model_name,
            version or "@previous",
            actor or "unknown",
            self.reason,
        )
        cfg = MLflowHook(self.mlflow_conn_id).configure()
        result = registry.set_champion(
            self.model_name,
            version,
            action=self.action,
            reason=str(self.reason or ""),
            actor=actor,
            by=_run_ref(context),
            tracking=cfg.public(),
        )
        if not result["changed"]:
            skip(f"{self.model_name}@champion already is v{result['champion']}: no alias change, no asset event.",
                 log=self.log)
        set_run_note(context, f"{self.action}: v{result['champion']} is @champion by {actor or 'unknown'}: "
                     f"{self.reason}", log=self.log)
        _emit(
            self,
            context,
            {
                "model": self.model_name,
                "version": result["champion"],
                "previous": result["previous"],
                "action": self.action,
            },
        )
        return {
            "champion": result["champion"],
            "previous": result["previous"],
            "action": self.action,
            "reason": str(self.reason),
        }
