"""Logs and notes that say why: skip with a reason, the DAG run's note, third-party logging (light module).

Three things every operator needs and Airflow 3.3 does not do by itself:

- :func:`skip` logs the reason at INFO *before* raising ``AirflowSkipException`` (the task log does not
  print the exception's message), and can leave the reason as the DAG run's note.
- :func:`set_run_note` writes the note of the task's own DAG run, shown in the DAG runs list. The Task
  SDK's execution API sets a note only when a run is *triggered*, so the note goes through the public
  REST API (``PATCH /api/v2/dags/{dag_id}/dagRuns/{run_id}``) with the ``airflow_api_default``
  connection (:class:`~mlops_provider.hooks.airflow_api.AirflowApiHook`). Without that connection the
  note is logged and not set; a note never fails a task.
- :func:`route_library_logging` makes MLflow (and alembic, sqlalchemy, huey under it) log through Python
  logging instead of their own stderr handler: Airflow's supervisor records everything a task writes
  to stderr at ERROR, so MLflow's INFO lines ("Successfully registered model ...") looked like errors.

Standard library and ``airflow.sdk`` only at import time.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any, NoReturn

from mlops_provider.redact import redact_text

_log = logging.getLogger(__name__)

#: every note this provider writes starts with it, so a later decision of the same run replaces it
NOTE_PREFIX = "MLOps: "
#: loggers that libraries used inside tasks configure with their own stderr handler
LIBRARY_LOGGERS = ("mlflow", "alembic", "sqlalchemy.engine", "huey")


def skip(reason: str, *, log: Any = None, context: Mapping[str, Any] | None = None,
         note: str | None = None) -> NoReturn:
    """Log ``reason`` at INFO, optionally note it on the DAG run, then raise ``AirflowSkipException``."""
    from airflow.sdk.exceptions import AirflowSkipException

    reason = redact_text(reason)
    (log or _log).info("Skipping: %s", reason)
    if context is not None and note:
        set_run_note(context, note, log=log)
    raise AirflowSkipException(reason)


def _run_ids(context: Mapping[str, Any]) -> tuple[str | None, str | None]:
    dag_run = context.get("dag_run")
    ti = context.get("ti")
    dag_id = getattr(dag_run, "dag_id", None) or getattr(ti, "dag_id", None)
    run_id = getattr(dag_run, "run_id", None) or getattr(ti, "run_id", None) or context.get("run_id")
    return (str(dag_id) if dag_id else None), (str(run_id) if run_id else None)


def run_slug(context: Mapping[str, Any]) -> str:
    """The run id as a file-name part (``manual__2024-01-01T00:00:00+00:00`` -> ``manual__2024-01-01T00_00_00_00_00``)."""
    import re

    _, run_id = _run_ids(context)
    return re.sub(r"[^A-Za-z0-9._-]+", "_", run_id or "manual").strip("_") or "manual"


def merge_note(current: str | None, note: str) -> str:
    """The provider's line replaces an earlier one of its own; a human's note is kept above it."""
    line = note if note.startswith(NOTE_PREFIX) else NOTE_PREFIX + note
    kept = [ln for ln in (current or "").splitlines() if ln.strip() and not ln.startswith(NOTE_PREFIX)]
    return "\n".join([*kept, line])[:1000]


def set_run_note(context: Mapping[str, Any], note: str, *, log: Any = None,
                 conn_id: str | None = None) -> bool:
    """Set the note of the task's DAG run (prefixed :data:`NOTE_PREFIX`); True when it was written.

    Best effort: a missing connection, an unreachable API server or a refused token is logged (INFO /
    WARNING) and returns False. ``conn_id`` defaults to ``$MLOPS_AIRFLOW_API_CONN_ID`` or
    ``airflow_api_default``.
    """
    logger = log or _log
    note = redact_text(note)
    dag_id, run_id = _run_ids(context)
    logger.info("Run note: %s", note)
    if not dag_id or not run_id:
        return False
    from mlops_provider.hooks.airflow_api import AirflowApiHook

    hook = AirflowApiHook(conn_id or os.environ.get("MLOPS_AIRFLOW_API_CONN_ID") or AirflowApiHook.default_conn_name)
    try:
        return hook.set_dag_run_note(dag_id, run_id, note, merge=merge_note)
    except Exception as e:  # noqa: BLE001 - a note never fails the task
        logger.warning("could not set the note of %s/%s: %s", dag_id, run_id, redact_text(e))
        return False


def advisory_label(passed: bool, enforced: bool = True) -> str:
    """``PASS`` / ``FAIL`` / ``ADVISORY FAIL`` (a failed check that does not decide)."""
    if passed:
        return "PASS"
    return "FAIL" if enforced else "ADVISORY FAIL (does not decide)"


# ------------------------------------------------------------------------------------- human decisions
#: model version tags of the human answer to ``approve_promotion`` (a rejection wins in every view)
APPROVAL_TAGS = ("mlops.approval.decision", "mlops.approval.by", "mlops.approval.at", "mlops.approval.comment",
                 "mlops.approval.run")


def approval_params() -> dict[str, Any]:
    """The HITL form of a promotion approval: an optional comment recorded with the answer."""
    from airflow.sdk import Param

    return {"comment": Param("", type=["null", "string"], title="Comment",
                             description="Why (recorded on the model version with your answer).")}


def _responder(event: Mapping[str, Any]) -> str:
    user = event.get("responded_by_user")
    if isinstance(user, Mapping):
        return str(user.get("name") or user.get("id") or "unknown")
    return str(user or "nobody (timeout default)")


def record_approval(op: Any, context: Mapping[str, Any], verdict: Mapping[str, Any],
                    event: Mapping[str, Any] | None) -> dict[str, str]:
    """Write a human's approve / reject of a promotion on the model version and as the run's note.

    Tags ``mlops.approval.{decision,by,at,comment,run}`` (and the older ``gate.approval``/``gate.approval_by``)
    on the challenger version; ``gate.decision`` stays what the gate computed, and every view treats
    ``mlops.approval.decision=rejected`` as the final word. Never raises (the answer stands regardless).
    """
    event = dict(event or {})
    logger = getattr(op, "log", _log)
    chosen = list(event.get("chosen_options") or [])
    decision = "error" if "error" in event else ("approved" if chosen[:1] == ["Approve"] else "rejected")
    who = _responder(event)
    at = event.get("responded_at")
    at_text = at.isoformat() if at is not None and hasattr(at, "isoformat") else str(at or "")
    comment = str((event.get("params_input") or {}).get("comment") or "").strip()
    version = str((verdict.get("challenger") or {}).get("version"))
    model = str(getattr(op, "model_name", None) or verdict.get("model"))
    dag_id, run_id = _run_ids(context)
    tags = {"mlops.approval.decision": decision, "mlops.approval.by": who, "mlops.approval.at": at_text,
            "mlops.approval.comment": comment[:4000], "mlops.approval.run": f"{dag_id}/{run_id}",
            "gate.approval": chosen[0] if chosen else decision, "gate.approval_by": who}
    logger.info("%s v%s: promotion %s by %s at %s%s", model, version, decision, who, at_text,
                f" ({comment})" if comment else "")
    try:
        from mlops_provider.hooks.mlflow import MLflowHook

        client = MLflowHook(getattr(op, "mlflow_conn_id", "mlflow_default")).get_client()
        for k, v in tags.items():
            client.set_model_version_tag(model, version, k, v)
    except Exception as e:  # noqa: BLE001 - the human decision stands even if the tag cannot be written
        logger.warning("could not record the approval on %s v%s: %s", model, version, redact_text(e))
    if decision == "rejected":
        set_run_note(context, f"rejected by {who}: v{version}" + (f": {comment}" if comment else ""), log=logger)
    elif decision == "approved":
        set_run_note(context, f"approved by {who}: v{version}" + (f": {comment}" if comment else ""), log=logger)
    return tags


# ------------------------------------------------------------------------------------- library logging
class _LoggerStream(io.TextIOBase):
    """A text stream whose lines become log records (MLflow's ``eprint`` writes to one)."""

    def __init__(self, logger: logging.Logger, level: int) -> None:
        self._logger, self._level, self._buf = logger, level, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._buf += text
        while "\n" in self._buf:
            line, self._buf = self._buf.split("\n", 1)
            if line.strip():
                self._logger.log(self._level, "%s", line.rstrip())
        return len(text)

    def flush(self) -> None:
        if self._buf.strip():
            self._logger.log(self._level, "%s", self._buf.rstrip())
        self._buf = ""


def route_library_logging() -> None:
    """Route MLflow's logging and prints through Python logging (idempotent; called in tasks).

    - ``MLFLOW_CONFIGURE_LOGGING=false`` for a later ``import mlflow`` (it then adds no handler);
    - the stderr handlers MLflow already put on :data:`LIBRARY_LOGGERS` are removed and the loggers
      propagate to the task's log handler with their real level;
    - MLflow's ``eprint`` stream (``Successfully registered model ...``) becomes INFO records of ``mlflow``.
    """
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    for name in LIBRARY_LOGGERS:
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            if type(h) is logging.StreamHandler:  # their own console handlers, not files or Airflow's
                lg.removeHandler(h)
        lg.propagate = True
    utils = sys.modules.get("mlflow.utils.logging_utils")
    if utils is not None and not isinstance(getattr(utils, "MLFLOW_LOGGING_STREAM", None), _LoggerStream):
        utils.MLFLOW_LOGGING_STREAM = _LoggerStream(logging.getLogger("mlflow"), logging.INFO)  # type: ignore[attr-defined]


__all__ = [
    "APPROVAL_TAGS",
    "LIBRARY_LOGGERS",
    "NOTE_PREFIX",
    "advisory_label",
    "approval_params",
    "record_approval",
    "merge_note",
    "route_library_logging",
    "run_slug",
    "set_run_note",
    "skip",
]
