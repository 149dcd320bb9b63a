"""Small control-flow operators the factory puts between the heavy steps."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import BaseOperator, Context

from mlops_provider.exceptions import DataValidationError
from mlops_provider.operator_notes import skip


def _triggering_events(context: Context) -> list[tuple[str, dict[str, Any]]]:
    events = context.get("triggering_asset_events") or {}
    out: list[tuple[str, dict[str, Any]]] = []
    for asset, evs in events.items():
        for ev in evs:
            out.append((getattr(asset, "name", str(asset)), dict(ev.extra or {})))
    return out


class LandedFilesOperator(BaseOperator):
    """Resolve which landed files this feature run processes.

    In order: ``dag_run.conf["files"]`` (manual trigger), the files listed by the
    DataArrivalTrigger events that triggered the run, or, for a cron schedule, every file
    in the landing zone modified inside the run's data interval. The landing zone may be an
    ``s3://bucket/prefix/``: existence and modification times then come from S3 (``aws_conn_id``).
    0-byte files are kept: the validation task rejects them with a named rule.
    """

    template_fields: Sequence[str] = ("landing_path", "pattern")
    ui_color = "#e8f4fd"

    def __init__(
        self, *, landing_path: str, pattern: str = "*", aws_conn_id: str | None = "aws_default", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.landing_path = landing_path
        self.pattern = pattern
        self.aws_conn_id = aws_conn_id

    def execute(self, context: Context) -> list[str]:
        dag_run = context.get("dag_run")
        conf = (getattr(dag_run, "conf", None) or {}) if dag_run else {}
        files: list[str] = []
        source = ""
        if conf.get("files"):
            files, source = [str(f) for f in conf["files"]], "dag_run.conf"
        else:
            for name, extra in _triggering_events(context):
                payload = extra.get("payload") or extra
                files.extend(payload.get("files", []))
                source = f"asset events of {name}"
        if not files and not source:
            start, end = context.get("data_interval_start"), context.get("data_interval_end")
            files = self._modified_between(start, end)
            source = f"landing zone files modified in [{start}, {end})"
        files = sorted(dict.fromkeys(files))
        missing = self._missing(files)
        if missing:
            raise DataValidationError(
                f"{len(missing)} landed file(s) no longer exist: {missing[:5]}. They were moved or deleted "
                f"after landing in {self.landing_path}; land them again to reprocess.",
                failures=[{"rule": "file_exists", "count": len(missing), "examples": missing[:5]}],
            )
        if not files:
            skip(f"No landed files to process ({source}).", log=self.log)
        self.log.info("Processing %d landed file(s) from %s: %s", len(files), source, files)
        return files

    def _objects(self) -> Any:
        """The landing zone's object store (the connection is resolved at its first S3 use)."""
        from mlops_provider.operators import object_store

        return object_store(self.aws_conn_id)

    def _missing(self, files: list[str]) -> list[str]:
        remote = [f for f in files if f.startswith("s3://")]
        missing = [f for f in files if not f.startswith("s3://") and not Path(f).exists()]
        if remote:
            store = self._objects()
            missing += [f for f in remote if store.head(f) is None]
        return sorted(missing)

    def _modified_between(self, start: datetime | None, end: datetime | None) -> list[str]:
        if str(self.landing_path).startswith("s3://"):
            objs = self._objects().list(str(self.landing_path), self.pattern)
            return [
                url for url, info in objs.items()
                if info.last_modified is not None
                and (start is None or info.last_modified >= start) and (end is None or info.last_modified < end)
            ]
        if not os.path.isdir(self.landing_path):
            return []
        out = []
        for entry in os.scandir(self.landing_path):
            if not entry.is_file() or not fnmatch.fnmatch(entry.name, self.pattern):
                continue
            mtime = entry.stat().st_mtime
            if (start is None or mtime >= start.timestamp()) and (end is None or mtime < end.timestamp()):
                out.append(entry.path)
        return out


class TrainingPolicyOperator(BaseOperator):
    """Decide whether this training run trains, from what triggered it and the retrain guards.

    The first model always trains (bootstrap) and manual runs always train (a human asked). Once a
    ``@champion`` exists, only the asset kinds listed in ``retrain_on`` retrain (e.g. drift, not
    every feature refresh), and then only through the guards of
    :mod:`mlops_provider.runtime.monitoring.retrain_guard`: one retrain per drift episode, a cooldown, a
    maximum per window, a minimum of new labelled rows since the champion's training window, and a
    circuit breaker that, after ``breaker_rejections`` gate rejections in a row, asks a human
    (the :class:`RetrainApprovalOperator` task downstream) instead of retraining.

    Returns ``{"action": "train" | "ask", "reason", "guard", ...}``; a ``skip`` decision raises
    ``AirflowSkipException`` with the reason, and the whole run is skipped: nothing is trained,
    nothing is promoted. Decisions are kept in the JSON ledger ``state_path`` keyed by
    ``<dag_id>/<run_id>``: re-running this task for the same run returns the same decision.
    Without ``state_path`` the guards that need history (dedupe, cooldown, rate) see none.
    """

    template_fields: Sequence[str] = ("model_name", "state_path", "labels_dir")
    ui_color = "#fdf5e8"

    def __init__(
        self,
        *,
        model_name: str,
        retrain_on: Sequence[str],
        asset_kinds: dict[str, str],
        mlflow_conn_id: str = "mlflow_default",
        guards: Mapping[str, Any] | None = None,
        state_path: str | None = None,
        labels_dir: str | None = None,
        aws_conn_id: str | None = "aws_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.retrain_on = list(retrain_on)
        self.asset_kinds = dict(asset_kinds)
        self.mlflow_conn_id = mlflow_conn_id
        self.guards = dict(guards or {})
        self.state_path = state_path
        self.labels_dir = labels_dir
        self.aws_conn_id = aws_conn_id

    # -------------------------------------------------------------------------------- hooks
    def _client(self) -> Any:
        from mlops_provider.hooks.mlflow import MLflowHook

        return MLflowHook(mlflow_conn_id=self.mlflow_conn_id).get_client()

    def _objects(self) -> Any:
        from mlops_provider.operators import object_store

        return object_store(self.aws_conn_id)

    def registry(self, store: Any) -> Any:
        """The registry reads of the guards (the MLflow client is created at the first read)."""
        from mlops_provider.runtime.monitoring.policy import RegistryView

        return RegistryView(self._client, self.model_name, mlflow_conn_id=self.mlflow_conn_id, store=store)

    # -------------------------------------------------------------------------------- execute
    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_provider.runtime.monitoring.policy import run_training_policy
        from mlops_provider.runtime.monitoring.retrain_guard import as_utc

        events = [(self.asset_kinds.get(name, name), extra) for name, extra in _triggering_events(context)]
        dag_run = context.get("dag_run")
        run_id = str(getattr(dag_run, "run_id", None) or context.get("run_id") or "manual")
        dag_id = str(getattr(dag_run, "dag_id", None) or getattr(context.get("dag"), "dag_id", "") or "training")
        now = as_utc(getattr(dag_run, "run_after", None) or getattr(dag_run, "logical_date", None))
        store = self._objects()
        decision = run_training_policy(
            model=self.model_name,
            key=f"{dag_id}/{run_id}",
            now=now or datetime.now(UTC),
            events=events,
            retrain_on=self.retrain_on,
            guards=self.guards,
            registry=self.registry(store),
            state_path=self.state_path,
            labels_dir=self.labels_dir,
            store=store,
        )
        result = decision.as_dict()
        if decision.action == "skip":
            skip(f"Not training {self.model_name}: {decision.reason}", log=self.log, context=context,
                 note=f"declined by guards: {decision.reason}")
        self.log.info("Training %s: %s (%s)", self.model_name, decision.action, decision.reason)
        result["reason"] = decision.reason
        return result


class RetrainApprovalOperator(ApprovalOperator):
    """Human approval of a retrain while the circuit breaker is open (Airflow HITL).

    Reads the decision of ``policy_task_id``. When it is ``train`` nothing is asked: the task
    succeeds at once and training goes on. When it is ``ask`` (the breaker is open) the task waits
    for a human in the Airflow UI (Required actions): *Approve* trains, *Reject* skips the rest of
    the run. The answer is stored in the guard ledger (an approved retrain starts the cooldown and
    closes the drift episode). ``notifiers`` (e.g. the circuit-breaker alerts) are called only when
    a human is asked. An unanswered request declines after ``response_timeout`` (default option
    ``Reject``).
    """

    template_fields: Sequence[str] = (*ApprovalOperator.template_fields, "state_path")
    ui_color = "#f3e8fd"

    def __init__(
        self,
        *,
        model_name: str,
        policy_task_id: str = "training_policy",
        state_path: str | None = None,
        aws_conn_id: str | None = "aws_default",
        subject: str | None = None,
        body: str | None = None,
        **kwargs: Any,
    ) -> None:
        reason = "{{ (ti.xcom_pull(task_ids='" + policy_task_id + "') or {}).get('reason', '') }}"
        kwargs.setdefault("defaults", ApprovalOperator.REJECT)
        super().__init__(
            subject=subject or f"Retrain {model_name}? The retraining circuit breaker is open",
            body=body or (
                f"Automatic retraining of **{model_name}** is paused: {reason}.\n\n"
                "*Approve* trains a new challenger now (it still has to pass the gate); *Reject* skips this run."
            ),
            **kwargs,
        )
        self.model_name = model_name
        self.policy_task_id = policy_task_id
        self.state_path = state_path
        self.aws_conn_id = aws_conn_id

    def _decision(self, context: Context) -> dict[str, Any]:
        value = context["ti"].xcom_pull(task_ids=self.policy_task_id)
        return dict(value) if isinstance(value, Mapping) else {}

    def execute(self, context: Context) -> Any:
        decision = self._decision(context)
        if decision.get("action") != "ask":
            self.log.info("Circuit breaker closed (policy decided %r): no approval needed.", decision.get("action"))
            return {"approval": "not_needed", "action": decision.get("action")}
        self.log.info("Circuit breaker open for %s: asking a human. %s", self.model_name, decision.get("reason"))
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        chosen = list((event or {}).get("chosen_options") or [])
        approved = "error" not in (event or {}) and chosen[:1] == [self.APPROVE]
        decision = self._decision(context)
        if self.state_path and decision.get("key"):
            from mlops_provider.operators import object_store
            from mlops_provider.runtime.monitoring.policy import record_approval

            record_approval(self.state_path, self.model_name, str(decision["key"]), approved,
                            by=(event or {}).get("responded_by_user"),
                            store=object_store(self.aws_conn_id))
        self.log.info("Retrain of %s %s by a human.", self.model_name, "approved" if approved else "declined")
        return super().execute_complete(context, event)
