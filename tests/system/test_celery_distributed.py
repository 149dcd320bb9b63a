"""The production topology on loopback: a real distributed run on CeleryExecutor.

Started by the test as local processes, all on 127.0.0.1: a fresh PostgreSQL metadata database (also the
Celery result backend), Celery with a Redis broker (a ``redis-server`` of the test's own), api-server,
dag-processor, scheduler, triggerer, and two Celery workers: ``default`` (queue ``default``) and ``gpu``
(queue ``gpu``). MLflow runs as ``mlflow server`` on a PostgreSQL backend store with artifacts proxied to S3
(a moto server on loopback); Feast uses the repo's production YAML (SQL registry on PostgreSQL, Redis online
store); the landing zone, the inference log and the retrain-guard ledger are on S3. The pipeline reaches
every backend only through its connection (``mlflow_default``, ``feast_default``, ``aws_default``) or a YAML
key: the connection-only switch of docs/production.md.

The golden path (real data landed -> features -> training -> deploy) runs through the scheduler, driven by
the landing watcher and Asset events. The model's YAML sets ``training.pool: gpu`` and a two-trial search, so
two training task instances (the HPO trials) compete for the ``gpu`` pool of ONE slot while the ``gpu``
worker offers TWO Celery slots: the pool, not the worker, is what keeps them apart. Asserted through the
REST API: training task instances ran only on the ``gpu`` worker (``hostname``, ``queue``, ``pool`` recorded
per task instance), every other task instance on ``default``; no two training task instances overlap in
time; zero failed DAG runs and task instances; the champion is registered in MLflow's PostgreSQL store and
its artifacts are on S3; the features are in the SQL registry and Redis; the served bento's requests are on
S3 and read back by the monitor's reader; every listening socket of the started processes is on 127.0.0.1.

The failure drills (:func:`test_failure_drills_while_a_second_month_lands`) then break the same deployment
while a second landing flows through it, each fault where it hurts: the triggerer is killed while a
feature-freshness sensor is deferred and the landing watcher (also a trigger) is the only one who could see
the new data; the scheduler is killed while the features run has a task running; the ``gpu`` worker and every
process under it are killed (``kill -9``: a lost machine) after a trial's first checkpoint; the broker (Redis)
is stopped for a while during the retried trial. Asserted: every run succeeds, the sensor fired exactly once,
the killed trial ran twice and its second attempt resumed from the checkpoint in the same MLflow run, every
other task instance ran exactly once, and the landing registered exactly one model version.

Needs PostgreSQL (127.0.0.1:5432, trust), the machine's Redis (127.0.0.1:6379, an empty db for the online
store) and ``redis-server`` (the test runs its own broker on a free port, because a drill stops it):
skipped with the reason when one is missing, except under ``CI=true`` where that is a failure.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from dag_runs import REPO, finished, land_flights, listeners, serving_pids, write_dags

from mlops_provider.embedded import (
    CELERY_BROKER_OUTAGE_CONFIG,
    EmbeddedAirflow,
    airflow_env,
    celery_worker_argv,
    create_pools,
    free_port,
    wait_for,
)

MODEL = "flights_delay"
TRAINING_TASKS = {"train", "hpo_trial"}  # the tasks that train a network (the search's trials here)
PG = os.environ.get("MLOPS_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
# the Feast online store: the machine's Redis (an empty db of it); the broker is a Redis of the test's own
REDIS_HOSTPORT = os.environ.get("MLOPS_TEST_REDIS", "127.0.0.1:6379")
EPOCHS = 40  # ~2 s of training per trial: room to kill one between its first checkpoint and its end
DRILL_DAG = "drill_freshness"
HEARTBEAT_TIMEOUT_S = 45  # a task instance whose worker vanished is failed (and retried) after this long
BUCKET = "mlops"
# what production keeps on S3 (docs/production.md), switched by ONE YAML key and the aws_default connection:
# the landing zone, training snapshots, reports, the inference log and the retrain-guard ledger
STORAGE_PREFIX = "pipelines"
S3_SETTINGS = {"storage.root": f"s3://{BUCKET}/{STORAGE_PREFIX}"}
LANDING = f"s3://{BUCKET}/{STORAGE_PREFIX}/landing/{MODEL}/"
INFERENCE_LOG = f"{STORAGE_PREFIX}/inference_log/{MODEL}/"
LEDGER = f"{STORAGE_PREFIX}/state/retrain_guard/{MODEL}.json"
MLFLOW_ARTIFACTS = f"s3://{BUCKET}/mlflow-artifacts"
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
    """A db number of the machine's Redis that nobody uses (empty), ``$MLOPS_TEST_REDIS_DB`` when set."""
    import redis

    if os.environ.get("MLOPS_TEST_REDIS_DB"):
        return int(os.environ["MLOPS_TEST_REDIS_DB"])
    for db in range(15, 7, -1):
        if redis.Redis.from_url(f"redis://{REDIS_HOSTPORT}/{db}", socket_timeout=5).dbsize() == 0:
            return db
    raise RuntimeError("no empty Redis db among 8..15; set MLOPS_TEST_REDIS_DB")


class RedisServer:
    """The broker: a ``redis-server`` of the test's own on a free loopback port (a drill stops and restarts
    it; the machine's shared Redis is not ours to stop), with append-only persistence as a production broker
    has, so a restart keeps what was queued."""

    def __init__(self, directory: Path) -> None:
        self.dir, self.port = directory, free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def ping(self) -> bool:
        import redis

        try:
            return bool(redis.Redis.from_url(self.url, socket_timeout=2).ping())
        except redis.RedisError:
            return False

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        log = open(self.dir / "redis.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [str(shutil.which("redis-server")), "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.dir), "--appendonly", "yes", "--save", "", "--daemonize", "no"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_for(self.ping, f"redis-server on port {self.port}", 30, interval=0.2,
                 alive=lambda: self.proc is not None and self.proc.poll() is None)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: Redis writes its append-only file and exits
            self.proc.wait(timeout=30)
        self.proc = None


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory):
    """A fresh PostgreSQL database each for Airflow and MLflow, a Redis server of the test's own and an S3
    server (moto, on loopback) with one bucket; all gone afterwards."""
    import boto3
    import redis
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's request log
    try:
        admin = _pg_admin()
    except Exception as e:  # noqa: BLE001 - any connection error means "not reachable"
        _unavailable(f"PostgreSQL at {PG} is not reachable: {type(e).__name__}: {e}")
    if shutil.which("redis-server") is None:
        admin.close()
        _unavailable("redis-server is not installed (Debian package redis-server)")
    try:
        online = _free_redis_db()
    except Exception as e:  # noqa: BLE001
        admin.close()
        _unavailable(f"Redis at {REDIS_HOSTPORT} (the Feast online store) is not usable: {type(e).__name__}: {e}")
    name = f"mlops_dist_{uuid.uuid4().hex[:10]}"
    names = {"airflow": name, "mlflow": f"{name}_mlflow", "feast": f"{name}_feast"}
    with admin.cursor() as cur:
        for n in names.values():
            cur.execute(f'CREATE DATABASE "{n}"')
    broker = RedisServer(tmp_path_factory.mktemp("redis"))
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    try:
        broker.start()
        s3.start()
        endpoint = "http://{}:{}".format(*s3.get_host_and_port())
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        client.create_bucket(Bucket=BUCKET)
        yield {"pg": {k: f"{PG}/{n}" for k, n in names.items()}, "redis": broker, "broker": broker.url,
               "s3": {"endpoint": endpoint, "client": client}, "online_store": f"{REDIS_HOSTPORT},db={online}"}
    finally:
        broker.stop()
        s3.stop()
        redis.Redis.from_url(f"redis://{REDIS_HOSTPORT}/{online}").flushdb()
        with admin.cursor() as cur:
            for n in names.values():
                cur.execute(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)')
        admin.close()


DRILL_DAG_FILE = '''\
"""Failure drill of the distributed system test: a deferred feature-freshness sensor and a task that records
each time the sensor fired (the drill kills the triggerer while the sensor is deferred)."""
from datetime import datetime

from airflow.sdk import DAG, task

from mlops_provider.sensors.feast import FeatureFreshnessSensor

with DAG({dag_id!r}, schedule=None, start_date=datetime(2024, 1, 1), catchup=False, tags=["drill"]):
    wait = FeatureFreshnessSensor(task_id="wait_fresh", repo_path={repo!r}, feature_service={service!r},
                                  target_time="{{{{ dag_run.conf['target'] }}}}", deferrable=True,
                                  poke_interval=2, timeout=1800)

    @task
    def fired(report):
        with open({marks!r}, "a") as f:
            f.write(report["target"] + "\\n")

    fired(wait.output)
'''


@pytest.fixture(scope="module")
def cluster(services, tmp_path_factory: pytest.TempPathFactory):
    import yaml

    tmp = tmp_path_factory.mktemp("celery")
    home = tmp / "home"
    dags = write_dags(tmp / "dags", MODEL, {
        "epochs": EPOCHS, "max_rows": 20000, "validation_days": 7, "patience": EPOCHS,
        "queue": "gpu", "pool": "gpu", "retries": 2, "retry_delay_seconds": 2,
        # the second landing retrains (the drills run during it); the guards still apply
        "retrain_on": ["features", "drift"],
        "search": {"max_trials": 2, "params": {"learning_rate": [0.002, 0.005]}},
    }, S3_SETTINGS)
    service = yaml.safe_load((dags / f"{MODEL}.yaml").read_text())["features"]["feature_service"]
    marks = tmp / "drill_fired.txt"
    (dags / f"{DRILL_DAG}.py").write_text(DRILL_DAG_FILE.format(
        dag_id=DRILL_DAG, repo=str(REPO / "feature_repo"), service=service, marks=str(marks)))
    airflow_db = services["pg"]["airflow"].replace("postgresql://", "postgresql+psycopg2://", 1)
    mlflow_port = free_port()
    mlflow_url = f"http://127.0.0.1:{mlflow_port}"
    s3 = services["s3"]
    aws_env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
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
        # a broker outage queues tasks instead of failing them (the Redis drill; compose and Helm set it too)
        **airflow_env("celery", CELERY_BROKER_OUTAGE_CONFIG),
        # the drills' time scale (defaults: 300 s heartbeat timeout, 300 s orphan check, 30 s health checks)
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT_S),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "15",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD": "15",
        "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "15",
        # MLflow only through the connection: no process sees a tracking URI in its environment
        "AIRFLOW_CONN_MLFLOW_DEFAULT": f'{{"conn_type": "mlflow", "host": "{mlflow_url}"}}',
        # Feast through the connection only: the production YAML (SQL registry on PostgreSQL, Redis online
        # store) with this deployment's registry database and online-store db
        "AIRFLOW_CONN_FEAST_DEFAULT": json.dumps({"conn_type": "feast", "extra": {
            "fs_yaml_file": "feature_store.production.yaml",
            "registry_path": services["pg"]["feast"].replace("postgresql://", "postgresql+psycopg://", 1),
            "config_overrides": {"online_store": {"connection_string": services["online_store"]}}}}),
        # S3 for the tasks only through the connection (landing zone, guard ledger, the monitor's reads)
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps({"conn_type": "aws", "login": "testing", "password": "testing",
                                                "extra": {"endpoint_url": s3["endpoint"], "region_name": "us-east-1"}}),
    }
    # hidden from every process this test starts; restored for the tests that run after it
    hidden = {var: os.environ.pop(var) for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI",
                                                   "MLOPS_TRAINING_QUEUE", "AWS_ENDPOINT_URL", "AWS_PROFILE",
                                                   *aws_env) if var in os.environ}
    # the gpu worker has TWO Celery slots on purpose: the one-slot `gpu` pool must keep the trials apart
    workers = {"worker-default": ("default", 2), "worker-gpu": ("gpu", 2)}
    extra = {name: celery_worker_argv(queue, queue, slots) for name, (queue, slots) in workers.items()}
    extra["mlflow-server"] = [
        str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port),
        "--workers", "1", "--backend-store-uri", services["pg"]["mlflow"].replace("postgresql://",
                                                                                  "postgresql+psycopg2://", 1),
        "--serve-artifacts", "--artifacts-destination", MLFLOW_ARTIFACTS,
    ]
    extra_env = {name: {"AIRFLOW__CORE__HOSTNAME_CALLABLE": "mlops_provider.embedded.worker_hostname",
                        "MLOPS_WORKER_NAME": f"{queue}-worker.{socket.gethostname()}"}
                 for name, (queue, _) in workers.items()}
    # the MLflow server alone holds S3 credentials for the artifacts (clients go through --serve-artifacts)
    extra_env["mlflow-server"] = {**aws_env, "MLFLOW_S3_ENDPOINT_URL": s3["endpoint"]}
    # the served bento logs its requests with the AWS environment of its host (here: the default worker's)
    extra_env["worker-default"].update({**aws_env, "AWS_ENDPOINT_URL": s3["endpoint"]})
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
               "tmp": tmp, "services": services, "startup_s": time.monotonic() - t0,
               "marks": marks,
               "hosts": {queue: extra_env[name]["MLOPS_WORKER_NAME"] for name, (queue, _) in workers.items()}}
    finally:
        from mlops_provider.runtime.serving.targets.local import stop_local

        try:
            stop_local(str(home / "state" / "serving" / MODEL))
        finally:
            af.stop()
            os.environ.update(hidden)


@pytest.fixture(scope="module")
def golden(cluster) -> dict[str, Any]:
    """The first landing (two months) through features -> training -> deploy, driven by the scheduler."""
    api = cluster["api"]
    assert create_pools(api, cluster["dags"]) == {f"mlops_promote_{MODEL}": 1}
    api.set_pool("gpu", 1, "GPU slots across the gpu workers (one GPU here)")
    wait_for(lambda: {f"{MODEL}__features", f"{MODEL}__training", f"{MODEL}__deploy", DRILL_DAG} <= api.dag_ids(),
             "the DAGs parsed", 300)
    assert api.import_errors() == []

    land_flights(cluster["home"], MODEL, landing=LANDING, s3=cluster["services"]["s3"]["client"])
    t0 = time.monotonic()
    runs = {}
    for kind in ("features", "training", "deploy"):
        runs[kind] = wait_for(lambda k=kind: finished(api, f"{MODEL}__{k}", 1), f"{MODEL}__{kind} finished", 900,
                              interval=3)
    # what ran and failed by the end of the first landing (the drills come after)
    return {"runs": runs, "elapsed": time.monotonic() - t0, "ran": _task_instances(api),
            "failures": api.failures()}


def _mlflow_up(url: str) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/health", timeout=3).status_code == 200
    except httpx.HTTPError:
        return False


def _keys(client: Any, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for p in pages for o in p.get("Contents", []) or [])


def _read_inference_log(endpoint: str) -> Any:
    """The inference log as the monitor reads it (one reader for local and S3), through the connection's
    settings."""
    from mlops_provider.runtime.io.objstore import ObjectStore, S3Settings
    from mlops_provider.runtime.serving.inference_log import read_inference_log

    store = ObjectStore(S3Settings(endpoint_url=endpoint, region_name="us-east-1", access_key="testing",
                                   secret_key="testing"))
    return read_inference_log(f"s3://{BUCKET}/{INFERENCE_LOG}", store=store)


def _task_instances(api: Any) -> list[dict[str, Any]]:
    """Every task instance of every DAG (the monitor's included) that a worker picked up."""
    tis = api.get("/dags/~/dagRuns/~/taskInstances", limit=1000)["task_instances"]
    return [ti for ti in tis if ti.get("hostname")]


def test_celery_workers_split_by_queue_and_the_gpu_pool_serializes_training(cluster, golden) -> None:
    from datetime import datetime

    api, af = cluster["api"], cluster["af"]
    for kind, runs in golden["runs"].items():
        assert runs[0]["state"] == "success", (kind, api.task_states(f"{MODEL}__{kind}", runs[0]["dag_run_id"]))
        assert runs[0]["run_type"] in ("asset_triggered", "scheduled"), runs[0]  # Assets, not a manual trigger
    elapsed = golden["elapsed"]

    assert golden["failures"] == {"dag_runs": [], "task_instances": []}

    # routing: hostname, queue and pool recorded on every task instance that ran
    hosts = cluster["hosts"]
    ran = golden["ran"]
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
    assert not (cluster["home"] / "mlflow").exists()

    # Feast through the connection only: the registry is rows of its PostgreSQL database, the served
    # features are keys of its Redis db; the embedded file registry and SQLite online store never existed
    import redis

    with psycopg2.connect(cluster["services"]["pg"]["feast"]) as conn, conn.cursor() as cur:
        cur.execute("SELECT feature_view_name FROM feature_views")
        views = {row[0] for row in cur.fetchall()}
    assert views, "no feature view in the Feast SQL registry"
    hostport, db = cluster["services"]["online_store"].split(",db=")
    assert redis.Redis.from_url(f"redis://{hostport}/{db}").dbsize() > 0, "nothing materialized into Redis"
    assert not (cluster["home"] / "feast" / "registry.db").exists()
    assert not (cluster["home"] / "feast" / "online_store.db").exists()

    # S3 (moto on loopback) behind the connection-only switch: the MLflow server put the model's artifacts
    # there; the landing zone was only ever on S3; the served bento logged its requests there, and the
    # monitor's reader (through aws_default) reads them back
    s3 = cluster["services"]["s3"]
    assert _keys(s3["client"], "mlflow-artifacts/"), "no artifact reached S3 through the MLflow server"
    landed = _keys(s3["client"], LANDING.removeprefix(f"s3://{BUCKET}/"))
    assert {"planes.parquet", "flights_2013_01.parquet"} <= {k.rsplit("/", 1)[1] for k in landed}, landed
    assert not (cluster["tmp"] / "mlflow-artifacts").exists()
    logged = wait_for(lambda: _keys(s3["client"], INFERENCE_LOG), "the served bento's inference log on S3", 120)
    assert all(k.split("/")[3].startswith("date=") for k in logged), logged  # partitioned by date
    frame = _read_inference_log(s3["endpoint"])
    assert len(frame) > 0 and set(frame["traffic"]) <= {"smoke", "infra_validation", "warmup", "live"}, frame

    # the same storage.root holds the training snapshot (written on `default`, read on `gpu`, a worker with no
    # AWS environment: through aws_default) and every report; none of them touched MLOPS_HOME
    snapshot = api.xcom(f"{MODEL}__training", golden["runs"]["training"][0]["dag_run_id"], "training_dataset")["path"]
    assert snapshot.startswith(f"s3://{BUCKET}/{STORAGE_PREFIX}/snapshots/{MODEL}/"), snapshot
    assert _keys(s3["client"], snapshot.removeprefix(f"s3://{BUCKET}/")) == [
        f"{snapshot.removeprefix(f's3://{BUCKET}/')}/{name}" for name in ("data.parquet", "manifest.json")]
    reports = _keys(s3["client"], f"{STORAGE_PREFIX}/reports/{MODEL}/")
    assert {"validation", "gate", "infra_validation"} <= {k.split("/")[3] for k in reports}, reports
    verdict = api.xcom(f"{MODEL}__training", golden["runs"]["training"][0]["dag_run_id"], "gate")
    assert verdict["report_path"].removeprefix(f"s3://{BUCKET}/") in reports, verdict
    for local in ("landing", "snapshots", "reports", "inference_log", "state/retrain_guard"):
        assert not (cluster["home"] / local).exists(), f"{local} was written under MLOPS_HOME"
    # the MLOps page (api-server plugin, through aws_default) serves a report that lives only on S3
    page = next(k for k in reports if "/validation/" in k and k.endswith(".html")).rsplit("/", 1)[1]
    served = api.client.get(f"{api.url}/mlops/models/{MODEL}/reports/validation/{page}")
    assert served.status_code == 200 and "Data validation" in served.text, (served.status_code, served.text[:300])

    deploy_run = api.runs(f"{MODEL}__deploy")[0]["dag_run_id"]
    url = api.xcom(f"{MODEL}__deploy", deploy_run, "deploy")["url"]
    sockets = listeners([*af.running().values(), *serving_pids(cluster["home"], MODEL)])
    expected = {af.port, int(cluster["mlflow"].rsplit(":", 1)[1]), int(url.rsplit(":", 1)[1].split("/")[0])}
    assert {port for _, port, _ in sockets} >= expected, sockets
    assert all(ip == "127.0.0.1" for ip, _, _ in sockets), sockets
    print(f"startup {cluster['startup_s']:.0f}s; features -> training -> deploy on Celery in {elapsed:.0f}s; "
          f"placement: {sorted(placement.items())}; trials: {spans}; listeners: {sockets}")


def _tis(api: Any, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    return list(api.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", limit=1000)["task_instances"])


def _ti(api: Any, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
    return next((ti for ti in _tis(api, dag_id, run_id)
                 if ti["task_id"] == task_id and ti.get("map_index", -1) == map_index), {})


def _new_run(api: Any, dag_id: str, known: set[str]) -> dict[str, Any] | None:
    return next((r for r in api.runs(dag_id) if r["dag_run_id"] not in known), None)


def _settled(api: Any, dag_ids: list[str]) -> bool:
    """No run of these DAGs is queued or running."""
    return all(r["state"] in ("success", "failed") for d in dag_ids for r in api.runs(d))


def test_failure_drills_while_a_second_month_lands(cluster, golden) -> None:
    from mlflow.tracking import MlflowClient

    api, af, home, redis = cluster["api"], cluster["af"], cluster["home"], cluster["services"]["redis"]
    features, training, deploy = (f"{MODEL}__{k}" for k in ("features", "training", "deploy"))
    assert all(runs[0]["state"] == "success" for runs in golden["runs"].values()), golden["runs"]
    client = MlflowClient(tracking_uri=cluster["mlflow"], registry_uri=cluster["mlflow"])
    versions_before = {v.version for v in client.search_model_versions(f"name='{MODEL}'")}
    known = {d: {r["dag_run_id"] for r in api.runs(d)} for d in (features, training, deploy)}
    checkpoints_before = set((home / "checkpoints").rglob("checkpoint.pt"))
    timeline: list[str] = []
    t0 = time.monotonic()

    def mark(what: str) -> None:
        timeline.append(f"{time.monotonic() - t0:6.1f}s {what}")
        print(timeline[-1], flush=True)

    # 1. The triggerer dies while a sensor is deferred, and the new month lands while it is down. The landing
    #    watcher is a trigger too: nothing may start until a triggerer is back, then everything must.
    target = "2013-03-25T00:00:00+00:00"  # materialized only once the third month is through features
    drill = api.trigger(DRILL_DAG, {"target": target})
    wait_for(lambda: _ti(api, DRILL_DAG, drill, "wait_fresh").get("state") == "deferred",
             "the freshness sensor to defer", 300, interval=1)
    af.kill("triggerer")
    mark("triggerer killed (sensor deferred)")
    land_flights(home, MODEL, months=(3,), landing=LANDING,
                 s3=cluster["services"]["s3"]["client"])
    time.sleep(20)
    assert _new_run(api, features, known[features]) is None, "a features run started without a triggerer"
    assert _ti(api, DRILL_DAG, drill, "wait_fresh")["state"] == "deferred"
    af.restart("triggerer")
    mark("triggerer restarted")

    # 2. The scheduler dies while the features run (started by the watcher) has a task running on a worker.
    def features_task_running() -> Any:
        run = _new_run(api, features, known[features])
        return run and any(ti["state"] == "running" for ti in _tis(api, features, run["dag_run_id"])) and run

    feat_run = wait_for(features_task_running, "a running task of the second features run", 300, interval=0.5)
    af.kill("scheduler")
    mark("scheduler killed (features run in flight)")
    time.sleep(5)
    af.restart("scheduler")
    mark("scheduler restarted")
    feat = wait_for(lambda: (r := _new_run(api, features, known[features])) and r["state"] in ("success", "failed")
                    and r, "the second features run to finish", 600, interval=2)
    assert feat["state"] == "success", api.task_states(features, feat["dag_run_id"])
    assert feat["dag_run_id"] == feat_run["dag_run_id"]
    drill_run = wait_for(lambda: (r := next(x for x in api.runs(DRILL_DAG) if x["dag_run_id"] == drill))
                         and r["state"] in ("success", "failed") and r, "the drill sensor's run", 300, interval=2)
    assert drill_run["state"] == "success", api.task_states(DRILL_DAG, drill)
    mark("features run and the deferred sensor done")

    # 3. The gpu worker's machine is lost (kill -9 of the worker and every process under it) once a trial
    #    has written its first checkpoint. Its task instance goes silent; the scheduler fails it after the
    #    heartbeat timeout and retries it, and the retry waits until a gpu worker returns.
    def new_checkpoint() -> Any:
        return set((home / "checkpoints").rglob("checkpoint.pt")) - checkpoints_before

    wait_for(new_checkpoint, "a trial's first checkpoint of the second landing", 900, interval=0.1)
    af.kill("worker-gpu")
    mark("gpu worker killed (a trial checkpointed)")
    train_run = _new_run(api, training, known[training])
    assert train_run is not None
    run_id = train_run["dag_run_id"]
    running = [ti for ti in _tis(api, training, run_id) if ti["task_id"] == "hpo_trial" and ti["state"] == "running"]
    assert len(running) == 1, running  # the one-slot gpu pool
    killed = running[0]["map_index"]
    orphan = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        "attributes.status = 'RUNNING' and tags.`mlops.hpo.role` = 'trial'")
    assert len(orphan) == 1, [(r.info.run_id, r.data.tags.get("mlops.hpo.trial_id")) for r in orphan]
    wait_for(lambda: _ti(api, training, run_id, "hpo_trial", killed).get("try_number", 0) >= 2
             or _ti(api, training, run_id, "hpo_trial", killed).get("state") == "up_for_retry",
             "the scheduler to fail the silent trial and schedule its retry", HEARTBEAT_TIMEOUT_S + 180, interval=2)
    mark(f"trial {killed} up for retry")
    # the worker comes back as another machine: no local checkpoint, only the one mirrored under storage.root
    mirrored = _keys(cluster["services"]["s3"]["client"], f"{STORAGE_PREFIX}/checkpoints/{MODEL}/")
    assert len(mirrored) == 1 and mirrored[0].endswith("/checkpoint.pt"), mirrored
    shutil.rmtree(home / "checkpoints")
    af.restart("worker-gpu")
    mark("gpu worker restarted (local checkpoints wiped)")

    # 4. The broker goes away during the retried trial and stays away while the scheduler has to hand the
    #    next task to Celery; then it comes back with its data. A task reports to the API server, not
    #    through the broker, so the running trial finishes; the next task must wait, not fail.
    wait_for(lambda: (ti := _ti(api, training, run_id, "hpo_trial", killed))["state"] == "running"
             and ti["try_number"] >= 2, "the retried trial to run", 600, interval=0.5)
    redis.stop()
    mark("redis stopped (retried trial running)")
    wait_for(lambda: _ti(api, training, run_id, "hpo_trial", killed)["state"] not in ("running", "queued"),
             "the retried trial to finish without the broker", 600, interval=0.5)
    handed = wait_for(lambda: [f"{ti['task_id']}[{ti['map_index']}]={ti['state']}" for ti in _tis(api, training, run_id)
                               if ti["state"] in ("queued", "failed", "up_for_retry")],
                      "the scheduler to hand the next task to the missing broker", 120, interval=0.5)
    mark(f"next task handed over during the outage: {handed}")
    time.sleep(10)
    redis.start()
    mark("redis restarted")

    run = wait_for(lambda: (r := _new_run(api, training, known[training])) and r["state"] in ("success", "failed")
                   and r, "the second training run to finish", 900, interval=2)
    assert run["state"] == "success", api.task_states(training, run_id)
    wait_for(lambda: _settled(api, [features, training, deploy, DRILL_DAG]), "every run to settle", 900, interval=3)
    mark("everything settled")

    # every run succeeded, nothing failed anywhere
    assert api.failures() == {"dag_runs": [], "task_instances": []}, timeline
    new_runs = {d: [r for r in api.runs(d) if r["dag_run_id"] not in known[d]] for d in known}
    new_runs[DRILL_DAG] = [drill_run]
    assert all(r["state"] == "success" for runs in new_runs.values() for r in runs), new_runs

    # the sensor fired exactly once, after the restart, and its downstream task ran once
    assert cluster["marks"].read_text().splitlines() == [target]
    # every task instance ran exactly once (the scheduler restart re-ran nothing, the broker outage duplicated
    # nothing), except the trial whose worker was lost: twice, both times on the gpu worker
    tries = {(d, ti["task_id"], ti["map_index"]): ti["try_number"]
             for d, runs in new_runs.items() for r in runs for ti in _tis(api, d, r["dag_run_id"])
             if ti["state"] != "skipped"}
    assert tries[(training, "hpo_trial", killed)] == 2, (tries, timeline)
    assert {k: n for k, n in tries.items() if n != 1} == {(training, "hpo_trial", killed): 2}, (tries, timeline)
    retried = _ti(api, training, run_id, "hpo_trial", killed)
    assert (retried["hostname"], retried["queue"]) == (cluster["hosts"]["gpu"], "gpu"), retried

    # the retry resumed from the checkpoint in the same MLflow run, which is now finished
    result = api.xcom(training, run_id, "hpo_trial", map_index=killed)
    assert result["run_id"] == orphan[0].info.run_id, (result, orphan[0].info.run_id)
    assert result["resumed_from_epoch"] is not None and 1 <= result["resumed_from_epoch"] <= EPOCHS, result
    assert client.get_run(result["run_id"]).info.status == "FINISHED"
    assert _keys(cluster["services"]["s3"]["client"], f"{STORAGE_PREFIX}/checkpoints/") == []  # cleared when done
    trials = client.search_runs([orphan[0].info.experiment_id],
                                f"tags.`mlflow.parentRunId` = '{result['parent_run_id']}'")
    assert len(trials) == 2 and {t.info.status for t in trials} == {"FINISHED"}, trials  # one run per trial
    # and the landing registered exactly one model version
    versions = {v.version for v in client.search_model_versions(f"name='{MODEL}'")}
    assert len(versions - versions_before) == 1, (versions_before, versions)
    # the automatic retrain went through the guards, whose ledger lives on S3
    assert _keys(cluster["services"]["s3"]["client"], LEDGER) == [LEDGER]
    print("drills:", *timeline, f"tries: {sorted(tries.items())}", f"killed trial: {result}", sep="\n  ")
