"""The production topology on loopback: a real distributed run on CeleryExecutor.

Started by the test as local processes, all on 127.0.0.1: a fresh PostgreSQL metadata database (also the
Celery result backend), Celery with a Redis broker (a Redis db of its own), api-server, dag-processor,
scheduler, triggerer, and two Celery workers: ``default`` (queue ``default``) and ``gpu`` (queue ``gpu``).
MLflow runs as ``mlflow server`` on a PostgreSQL backend store with proxied artifacts on a local directory,
and the pipeline reaches it only through the ``mlflow_default`` connection (``AIRFLOW_CONN_MLFLOW_DEFAULT``):
the connection-only switch of docs/production.md.

The golden path (real data landed -> features -> training -> deploy) runs through the scheduler, driven by
the landing watcher and Asset events. The model's YAML sets ``training.pool: gpu`` and a two-trial search, so
two training task instances (the HPO trials) compete for the ``gpu`` pool of ONE slot while the ``gpu``
worker offers TWO Celery slots: the pool, not the worker, is what keeps them apart. Asserted through the
REST API: training task instances ran only on the ``gpu`` worker (``hostname``, ``queue``, ``pool`` recorded
per task instance), every other task instance on ``default``; no two training task instances overlap in
time; zero failed DAG runs and task instances; the champion is registered in MLflow's PostgreSQL store; every
listening socket of the started processes is on 127.0.0.1.

Needs PostgreSQL (127.0.0.1:5432, trust) and Redis (127.0.0.1:6379): skipped with the reason when they are
not reachable, except under ``CI=true`` where that is a failure.
"""

from __future__ import annotations

import os
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from dag_runs import REPO, finished, land_flights, listeners, serving_pids, write_dags

from mlops_provider.embedded import EmbeddedAirflow, celery_worker_argv, create_pools, free_port, wait_for

MODEL = "flights_delay"
TRAINING_TASKS = {"train", "hpo_trial"}  # the tasks that train a network (the search's trials here)
PG = os.environ.get("MLOPS_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
REDIS = os.environ.get("MLOPS_TEST_REDIS", "redis://127.0.0.1:6379")
pytestmark = [pytest.mark.system, pytest.mark.slow, pytest.mark.timeout(1800)]


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI needs this service for the distributed test: {reason}")
    pytest.skip(reason)


def _pg_admin() -> Any:
    import psycopg2

    conn = psycopg2.connect(f"{PG}/postgres", connect_timeout=5)
    conn.autocommit = True
    return conn


def _free_redis_db() -> int:
    """A Redis db number nobody uses (empty), ``$MLOPS_TEST_REDIS_DB`` when set."""
    import redis

    if os.environ.get("MLOPS_TEST_REDIS_DB"):
        return int(os.environ["MLOPS_TEST_REDIS_DB"])
    for db in range(15, 7, -1):
        if redis.Redis.from_url(f"{REDIS}/{db}", socket_timeout=5).dbsize() == 0:
            return db
    raise RuntimeError("no empty Redis db among 8..15; set MLOPS_TEST_REDIS_DB")


@pytest.fixture(scope="module")
def services():
    """A fresh PostgreSQL database each for Airflow and MLflow, an empty Redis db; all dropped afterwards."""
    import redis

    try:
        admin = _pg_admin()
    except Exception as e:  # noqa: BLE001 - any connection error means "not reachable"
        _unavailable(f"PostgreSQL at {PG} is not reachable: {type(e).__name__}: {e}")
    try:
        redis.Redis.from_url(f"{REDIS}/0", socket_timeout=5).ping()
        db = _free_redis_db()
    except Exception as e:  # noqa: BLE001
        admin.close()
        _unavailable(f"Redis at {REDIS} is not reachable: {type(e).__name__}: {e}")
    name = f"mlops_dist_{uuid.uuid4().hex[:10]}"
    names = {"airflow": name, "mlflow": f"{name}_mlflow"}
    with admin.cursor() as cur:
        for n in names.values():
            cur.execute(f'CREATE DATABASE "{n}"')
    broker = redis.Redis.from_url(f"{REDIS}/{db}")
    try:
        yield {"pg": {k: f"{PG}/{n}" for k, n in names.items()}, "redis_db": db, "broker": f"{REDIS}/{db}"}
    finally:
        broker.flushdb()
        with admin.cursor() as cur:
            for n in names.values():
                cur.execute(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)')
        admin.close()


@pytest.fixture(scope="module")
def cluster(services, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("celery")
    home = tmp / "home"
    dags = write_dags(tmp / "dags", MODEL, {
        "epochs": 2, "max_rows": 20000, "validation_days": 7, "patience": 1,
        "queue": "gpu", "pool": "gpu",
        "search": {"max_trials": 2, "params": {"learning_rate": [0.002, 0.005]}},
    })
    airflow_db = services["pg"]["airflow"].replace("postgresql://", "postgresql+psycopg2://", 1)
    mlflow_port = free_port()
    mlflow_url = f"http://127.0.0.1:{mlflow_port}"
    artifacts = tmp / "mlflow-artifacts"
    env = {
        "MLOPS_HOME": str(home), "BENTOML_HOME": str(home / "bentoml"),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_db,
        # Airflow derives an asyncpg URL otherwise; psycopg 3 (installed) serves the async sessions
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": airflow_db.replace("+psycopg2", "+psycopg", 1),
        "AIRFLOW__CELERY__BROKER_URL": services["broker"],
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + services["pg"]["airflow"],
        "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": "default",
        "AIRFLOW__CORE__PARALLELISM": "6",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        # MLflow only through the connection: no process sees a tracking URI in its environment
        "AIRFLOW_CONN_MLFLOW_DEFAULT": f'{{"conn_type": "mlflow", "host": "{mlflow_url}"}}',
    }
    # hidden from every process this test starts; restored for the tests that run after it
    hidden = {var: os.environ.pop(var) for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI",
                                                   "MLOPS_TRAINING_QUEUE") if var in os.environ}
    # the gpu worker has TWO Celery slots on purpose: the one-slot `gpu` pool must keep the trials apart
    workers = {"worker-default": ("default", 2), "worker-gpu": ("gpu", 2)}
    extra = {name: celery_worker_argv(queue, queue, slots) for name, (queue, slots) in workers.items()}
    extra["mlflow-server"] = [
        str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port),
        "--workers", "1", "--backend-store-uri", services["pg"]["mlflow"].replace("postgresql://",
                                                                                  "postgresql+psycopg2://", 1),
        "--serve-artifacts", "--artifacts-destination", str(artifacts),
    ]
    extra_env = {name: {"AIRFLOW__CORE__HOSTNAME_CALLABLE": "mlops_provider.embedded.worker_hostname",
                        "MLOPS_WORKER_NAME": f"{queue}-worker.{socket.gethostname()}"}
                 for name, (queue, _) in workers.items()}
    af = EmbeddedAirflow(home=tmp / "airflow", dags_folder=dags, plugins_folder=REPO / "plugins", port=free_port(),
                         env=env, extra=extra, extra_env=extra_env)
    t0 = time.monotonic()
    try:
        af.start()
    except BaseException:
        os.environ.update(hidden)
        raise
    try:
        wait_for(lambda: _mlflow_up(mlflow_url), f"mlflow server at {mlflow_url}", 300,
                 alive=lambda: "mlflow-server" in af.running())
        yield {"af": af, "home": home, "api": af.api(), "dags": dags, "mlflow": mlflow_url,
               "artifacts": artifacts, "services": services, "startup_s": time.monotonic() - t0,
               "hosts": {q: e["MLOPS_WORKER_NAME"] for (q, _), e in zip(workers.values(), extra_env.values(),
                                                                          strict=True)}}
    finally:
        from mlops_provider.runtime.serving.targets.local import stop_local

        try:
            stop_local(str(home / "state" / "serving" / MODEL))
        finally:
            af.stop()
            os.environ.update(hidden)


def _mlflow_up(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/health", timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


def _task_instances(api: Any) -> list[dict[str, Any]]:
    """Every task instance of every DAG (the monitor's included) that a worker picked up."""
    tis = api.get("/dags/~/dagRuns/~/taskInstances", limit=1000)["task_instances"]
    return [ti for ti in tis if ti.get("hostname")]


def test_celery_workers_split_by_queue_and_the_gpu_pool_serializes_training(cluster) -> None:
    from datetime import datetime

    api, af = cluster["api"], cluster["af"]
    assert create_pools(api, cluster["dags"]) == {f"mlops_promote_{MODEL}": 1}
    api.set_pool("gpu", 1, "GPU slots across the gpu workers (one GPU here)")
    wait_for(lambda: {f"{MODEL}__features", f"{MODEL}__training", f"{MODEL}__deploy"} <= api.dag_ids(),
             "the DAGs parsed", 300)
    assert api.import_errors() == []

    land_flights(cluster["home"], MODEL)
    t0 = time.monotonic()
    for kind in ("features", "training", "deploy"):
        runs = wait_for(lambda k=kind: finished(api, f"{MODEL}__{k}", 1), f"{MODEL}__{kind} finished", 900,
                        interval=3)
        assert runs[0]["state"] == "success", (kind, api.task_states(f"{MODEL}__{kind}", runs[0]["dag_run_id"]))
        assert runs[0]["run_type"] in ("asset_triggered", "scheduled"), runs[0]  # Assets, not a manual trigger
    elapsed = time.monotonic() - t0

    assert api.failures() == {"dag_runs": [], "task_instances": []}

    # routing: hostname, queue and pool recorded on every task instance that ran
    hosts = cluster["hosts"]
    ran = _task_instances(api)
    placement = {(ti["dag_id"], ti["task_id"], ti["map_index"]): (ti["hostname"], ti["queue"], ti["pool"])
                 for ti in ran}
    training = [ti for ti in ran if ti["task_id"] in TRAINING_TASKS]
    others = [ti for ti in ran if ti["task_id"] not in TRAINING_TASKS]
    assert len(training) == 2 and len(others) >= 10, placement
    for ti in training:
        assert (ti["hostname"], ti["queue"], ti["pool"]) == (hosts["gpu"], "gpu", "gpu"), placement
    for ti in others:
        assert (ti["hostname"], ti["queue"]) == (hosts["default"], "default"), placement
        assert ti["pool"] != "gpu", placement

    # the gpu pool of one slot: no two training task instances overlap
    spans = sorted((datetime.fromisoformat(ti["start_date"]), datetime.fromisoformat(ti["end_date"]),
                    ti["map_index"]) for ti in training)
    for (_, end, a), (start, _, b) in zip(spans, spans[1:], strict=False):
        assert end <= start, f"trials {a} and {b} overlapped in the one-slot gpu pool: {spans}"

    # MLflow through the connection only: the champion lives in the server's PostgreSQL store and its
    # artifacts under the server's artifact destination; the embedded SQLite fallback was never created
    import psycopg2

    with psycopg2.connect(cluster["services"]["pg"]["mlflow"]) as conn, conn.cursor() as cur:
        cur.execute("SELECT name, alias, version FROM registered_model_aliases")
        aliases = {(n, a): v for n, a, v in cur.fetchall()}
    assert (MODEL, "champion") in aliases, aliases
    assert any(p.is_file() for p in cluster["artifacts"].rglob("*")), "no artifact reached the MLflow server"
    assert not (cluster["home"] / "mlflow").exists()

    deploy_run = api.runs(f"{MODEL}__deploy")[0]["dag_run_id"]
    url = api.xcom(f"{MODEL}__deploy", deploy_run, "deploy")["url"]
    sockets = listeners([*af.running().values(), *serving_pids(cluster["home"], MODEL)])
    expected = {af.port, int(cluster["mlflow"].rsplit(":", 1)[1]), int(url.rsplit(":", 1)[1].split("/")[0])}
    assert {port for _, port, _ in sockets} >= expected, sockets
    assert all(ip == "127.0.0.1" for ip, _, _ in sockets), sockets
    print(f"startup {cluster['startup_s']:.0f}s; features -> training -> deploy on Celery in {elapsed:.0f}s; "
          f"placement: {sorted(placement.items())}; trials: {spans}; listeners: {sockets}")
