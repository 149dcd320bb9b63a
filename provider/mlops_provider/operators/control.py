"""Small control-flow operators the factory puts between the heavy steps."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowSkipException

from mlops_provider.exceptions import DataValidationError


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
            raise AirflowSkipException(f"No landed files to process ({source}).")
        self.log.info("Processing %d landed file(s) from %s: %s", len(files), source, files)
        return files

    def _missing(self, files: list[str]) -> list[str]:
        remote = [f for f in files if f.startswith("s3://")]
        missing = [f for f in files if not f.startswith("s3://") and not Path(f).exists()]
        if remote:
            from mlops_provider.runtime.objstore import client, head

            s3 = client(self.aws_conn_id)
            missing += [f for f in remote if head(f, s3=s3) is None]
        return sorted(missing)

    def _modified_between(self, start: datetime | None, end: datetime | None) -> list[str]:
        if str(self.landing_path).startswith("s3://"):
            from mlops_provider.runtime.objstore import list_objects

            objs = list_objects(str(self.landing_path), self.pattern, aws_conn_id=self.aws_conn_id)
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
    """Decide whether this training run trains, from what triggered it.

    The first model always trains (bootstrap). Once a ``@champion`` exists, only the
    asset kinds listed in ``retrain_on`` retrain (e.g. drift, not every feature refresh);
    manual and cron runs always train. Otherwise the task is skipped with the reason, and
    so is the rest of the run: nothing is trained, nothing is promoted.
    """

    template_fields: Sequence[str] = ("model_name",)
    ui_color = "#fdf5e8"

    def __init__(
        self,
        *,
        model_name: str,
        retrain_on: Sequence[str],
        asset_kinds: dict[str, str],
        mlflow_conn_id: str = "mlflow_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.retrain_on = list(retrain_on)
        self.asset_kinds = dict(asset_kinds)
        self.mlflow_conn_id = mlflow_conn_id

    def champion_version(self) -> str | None:
        from mlops_provider.hooks.mlflow import MLflowHook

        client = MLflowHook(mlflow_conn_id=self.mlflow_conn_id).get_client()
        try:
            return str(client.get_model_version_by_alias(self.model_name, "champion").version)
        except Exception:  # no registered model / no alias yet
            return None

    def execute(self, context: Context) -> dict[str, Any]:
        kinds = sorted({self.asset_kinds.get(name, name) for name, _ in _triggering_events(context)})
        champion = self.champion_version()
        if not kinds:
            reason = "manual or scheduled run"
        elif champion is None:
            reason = f"bootstrap: no @champion yet (triggered by {kinds})"
        elif set(kinds) & set(self.retrain_on):
            reason = f"triggered by {sorted(set(kinds) & set(self.retrain_on))}"
        else:
            raise AirflowSkipException(
                f"Not retraining: @champion is v{champion} and this run was triggered by {kinds}; "
                f"retraining is driven by {self.retrain_on} (training.retrain_on in the YAML)."
            )
        self.log.info("Training %s: %s", self.model_name, reason)
        return {"reason": reason, "triggered_by": kinds, "champion": champion}
