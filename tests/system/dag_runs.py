"""Helpers of the ``dag.test()`` system tests: a task's XCom return value, task states (and a free port)."""

from __future__ import annotations

import json
from typing import Any

from mlops_provider.embedded import free_port


def xcom(dag_run: Any, task_id: str) -> Any:
    """The return value a task of ``dag_run`` pushed (JSON-decoded)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        value = session.scalar(
            select(XComModel.value).where(
                XComModel.dag_id == dag_run.dag_id, XComModel.run_id == dag_run.run_id,
                XComModel.task_id == task_id, XComModel.key == "return_value",
            )
        )
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def states(dag_run: Any) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in dag_run.get_task_instances()}


__all__ = ["free_port", "states", "xcom"]
