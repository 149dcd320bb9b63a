"""Helpers of the system tests: for ``dag.test()`` runs a task's XCom return value and task states; for the
scheduler-driven runs (embedded LocalExecutor, distributed CeleryExecutor) the test's DAG folder, the landed
data, finished runs through the REST API and the listening sockets of the started processes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlops_provider.embedded import free_port

REPO = Path(__file__).resolve().parents[2]


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


def write_dags(dags: Path, model: str, training: dict[str, Any] | None = None,
               settings: dict[str, Any] | None = None) -> Path:
    """``dags`` holding the DAG file and ``model``'s YAML (Feast repo of this checkout, a free serving port,
    ``training`` overriding the YAML's training section: a small, fast run; ``settings`` setting any other
    key by its dotted path, e.g. ``{"features.arrival.path": "s3://bucket/landing/"}``)."""
    import yaml

    dags.mkdir(parents=True, exist_ok=True)
    (dags / "mlops_pipelines.py").write_text((REPO / "dags" / "mlops_pipelines.py").read_text())
    data = yaml.safe_load((REPO / "dags" / f"{model}.yaml").read_text())
    data["features"]["repo"] = str(REPO / "feature_repo")
    data["features"]["transform"] = str(REPO / "feature_repo" / "transforms.py") + ":build_partitions"
    data["training"].update(training or {})
    data["serving"]["port"] = free_port()
    for dotted, value in (settings or {}).items():
        *parents, leaf = dotted.split(".")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    (dags / f"{model}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return dags


def land_flights(mlops_home: Path, model: str, months: tuple[int, ...] = (1, 2), *,
                 landing: str | None = None, s3: Any = None) -> None:
    """The example's real data for ``months`` of 2013 (and the planes) into the model's landing zone: the
    default one under ``mlops_home``, or ``landing`` = ``s3://bucket/prefix/`` through the boto3 client
    ``s3`` (each file one put: a watcher never sees half a file)."""
    import tempfile

    from mlops_provider.examples.flights.data import write_landing_month, write_landing_planes

    if landing is None:
        local = mlops_home / "landing" / model
        local.mkdir(parents=True, exist_ok=True)
        write_landing_planes(str(local))
        for month in months:
            write_landing_month(str(local), 2013, month)
        return
    bucket, _, prefix = landing.removeprefix("s3://").partition("/")
    with tempfile.TemporaryDirectory() as tmp:
        files = [write_landing_planes(tmp)] + [p for m in months for p in write_landing_month(tmp, 2013, m)]
        for path in map(Path, files):
            s3.put_object(Bucket=bucket, Key=f"{prefix.rstrip('/')}/{path.name}", Body=path.read_bytes())


def finished(api: Any, dag_id: str, n: int) -> list[dict[str, Any]]:
    """The finished runs of ``dag_id`` once there are at least ``n`` (else [], for ``wait_for``)."""
    runs = api.runs(dag_id)
    done = [r for r in runs if r["state"] in ("success", "failed")]
    return done if len(done) >= n else []


def listeners(pids: list[int]) -> list[tuple[str, int, int]]:
    """(address, port, pid) of every listening TCP socket of these processes and their children."""
    import psutil

    procs = {}
    for pid in pids:
        try:
            p = psutil.Process(pid)
            for c in [p, *p.children(recursive=True)]:
                procs[c.pid] = c
        except psutil.NoSuchProcess:
            continue
    out = []
    for pid, p in procs.items():
        try:
            conns = p.net_connections(kind="tcp")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        out += [(c.laddr.ip, c.laddr.port, pid) for c in conns if c.status == psutil.CONN_LISTEN]
    return out


def serving_pids(mlops_home: Path, model: str) -> list[int]:
    """PIDs of the served bento (and its stable front) that the deploy task started."""
    state_dir = mlops_home / "state" / "serving" / model
    return [int(json.loads((state_dir / name).read_text())["pid"])
            for name in ("deployment.json", "front.json") if (state_dir / name).is_file()]


__all__ = ["REPO", "finished", "free_port", "land_flights", "listeners", "serving_pids", "states", "write_dags",
           "xcom"]
