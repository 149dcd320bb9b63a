"""The pools a model's DAGs use, and whether they exist in an Airflow deployment (``mlops validate``).

A task in a pool that does not exist is never scheduled. ``factory.required_pools`` lists the pools the
demo and ``make airflow-ui`` create for every YAML (the promotion pools, one slot each); a training pool
(``training.pool``) is sized by the GPU count and left to the deployment. Here the pools are read from the
built DAGs themselves, so whatever a task names is listed.
"""

from __future__ import annotations

import os
from typing import Any

from mlops_provider.scaffold.check import Report


def dag_pools(cfg: Any) -> dict[str, list[str]]:
    """Pool -> the ``dag_id.task_id`` of every task of the model's DAGs that runs in it (not default_pool)."""
    from mlops_provider.factory import build_dags

    out: dict[str, list[str]] = {}
    for dag_id, dag in sorted(build_dags(cfg).items()):
        for task in dag.tasks:
            pool = getattr(task, "pool", None)
            if pool and pool != "default_pool":
                out.setdefault(str(pool), []).append(f"{dag_id}.{task.task_id}")
    return out


def _pool_exists_api(names: list[str], url: str, user: str, password: str) -> dict[str, bool]:
    from mlops_provider.embedded import AirflowApi

    api = AirflowApi(url, user, password)
    out = {}
    for name in names:
        r = api.client.get(f"/pools/{name}")
        if r.status_code not in (200, 404):
            r.raise_for_status()
        out[name] = r.status_code == 200
    return out


def _pool_exists_db(names: list[str]) -> dict[str, bool]:
    from airflow.models.pool import Pool
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        present = set(session.scalars(select(Pool.pool).where(Pool.pool.in_(names))))
    return {n: n in present for n in names}


def check_pools(report: Report, cfg: Any, url: str | None, user: str | None, password: str | None,
                use_db: bool) -> None:
    """Add the ``pools`` check and the pool list to ``report`` (existence checked through the API or the DB)."""
    try:
        pools = dag_pools(cfg)
    except Exception as e:  # noqa: BLE001 - a DAG that does not build is a finding, not a crash
        report.add("pools", "error", f"building the model's DAGs failed: {type(e).__name__}: {e}")
        return
    promote = (cfg.gate.promote_pool or "").format(model=cfg.model)
    exists: dict[str, bool] = {}
    source: str | None = None
    unreachable: str | None = None
    try:
        if url:
            source = f"the Airflow API at {url}"
            exists = _pool_exists_api(sorted(pools), url, user or os.environ.get("AIRFLOW_USER", "admin"),
                                      password or os.environ.get("AIRFLOW_PASSWORD", ""))
        elif use_db:
            source = "the Airflow metadata DB"
            exists = _pool_exists_db(sorted(pools))
    except Exception as e:  # noqa: BLE001 - unreachable API / DB: say so, the other checks still count
        unreachable = f"cannot read the pools from {source}: {type(e).__name__}: {e}"
        source = None
    for name, tasks in sorted(pools.items()):
        report.pools.append({"name": name, "slots": 1 if name == promote else "one per GPU (deployment)",
                             "tasks": tasks, "exists": exists.get(name) if source else None})
    if unreachable:
        report.add("pools", "error", unreachable)
        return
    missing = [p["name"] for p in report.pools if p["exists"] is False]
    listing = ", ".join(sorted(pools)) or "none"
    if missing:
        report.add("pools", "error", f"pool(s) {missing} do not exist in {source}: their tasks would never run; "
                   "create them (`airflow pools set <name> <slots> <description>`; `make airflow-ui` and the demo "
                   "create the promotion pools of every YAML)", missing=missing)
    elif source:
        report.add("pools", "ok", f"{listing}: present in {source}")
    else:
        report.add("pools", "ok", f"the DAGs use {listing} (existence not checked: pass --airflow-url or "
                   "--airflow-db)")


__all__ = ["check_pools", "dag_pools"]
