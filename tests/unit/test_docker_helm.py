"""docker/helm/values-*.yaml for the official Airflow chart: schema-valid; CeleryExecutor with a `gpu` worker
set (GPU limit, GPU toleration, node selector, one task at a time); KubernetesExecutor whose cluster policy
gives the provider's training tasks (queue `gpu`) a GPU pod and leaves every other task alone."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from test_docker_compose import schema_file  # tests/unit is on sys.path (no __init__.py)

from mlops_provider.specs import Connections

REPO = Path(__file__).resolve().parents[2]
HELM = REPO / "docker" / "helm"
VALUES = sorted(HELM.glob("values-*.yaml"))
SUBSET = REPO / "tests" / "data" / "airflow-chart-values.subset.schema.json"


def load(name: str) -> dict:
    return yaml.safe_load((HELM / name).read_text())


def _errors(schema: dict, values: dict) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft7Validator(schema)
    return [f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message}"
            for e in sorted(validator.iter_errors(values), key=lambda e: list(e.path))]


def test_both_executors_have_values():
    assert {p.name for p in VALUES} == {"values-celery.yaml", "values-kubernetes.yaml"}


@pytest.mark.parametrize("path", VALUES, ids=lambda p: p.name)
def test_values_match_the_chart_keys_used(path):
    """Always runs: the hand-written subset of the chart schema (unknown keys and wrong shapes fail)."""
    import jsonschema

    schema = json.loads(SUBSET.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = _errors(schema, yaml.safe_load(path.read_text()))
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("path", VALUES, ids=lambda p: p.name)
def test_values_validate_against_the_chart_schema(path):
    chart = schema_file("airflow-chart-values.schema.json")
    if chart is None:
        pytest.skip("airflow-chart-values.schema.json (apache/airflow chart/values.schema.json of a chart with "
                    "workers.celery.sets) not found in $MLOPS_SCHEMA_DIR, shared/schemas or ../shared/schemas; "
                    "see tests/data/README.md")
    errors = _errors(json.loads(chart.read_text()), yaml.safe_load(path.read_text()))
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("path", VALUES, ids=lambda p: p.name)
def test_every_provider_connection_comes_from_a_secret(path):
    values = yaml.safe_load(path.read_text())
    from_secrets = {s["envName"] for s in values.get("secret", [])}
    needed = {f"AIRFLOW_CONN_{f.default.upper()}" for f in Connections.__dataclass_fields__.values()}
    assert needed <= from_secrets, f"missing: {sorted(needed - from_secrets)}"
    assert not any(e["name"].startswith("AIRFLOW_CONN_") for e in values.get("env", [])), "connections in plain env"
    mounts = {m["mountPath"] for m in values["volumeMounts"]}
    assert {e["value"] for e in values["env"] if e["name"] == "MLOPS_HOME"} <= mounts


# ------------------------------------------------------------------------------------------- celery


def _gpu_set(values: dict) -> dict:
    sets = [s for s in values["workers"]["celery"].get("sets", []) if s.get("queue") == "gpu"]
    assert len(sets) == 1, "exactly one Celery worker set must consume queue `gpu`"
    return sets[0]


def test_celery_values_run_a_gpu_worker_set():
    values = load("values-celery.yaml")
    assert values["executor"] == "CeleryExecutor"
    celery = values["workers"]["celery"]
    assert celery["enableDefault"] is True and celery["queue"] == "default"
    gpu = _gpu_set(values)
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in (celery.get("resources") or {}).get("limits", {}), "CPU set asks for a GPU"
    assert any(t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule" and t["operator"] in ("Exists", "Equal")
               for t in gpu["tolerations"])
    assert gpu["nodeSelector"], "the GPU set must be pinned to GPU nodes"
    concurrency = {e["name"]: e["value"] for e in gpu.get("env", [])}.get("AIRFLOW__CELERY__WORKER_CONCURRENCY")
    assert concurrency == "1", "one training task per GPU"


def test_celery_values_use_the_airflow_version_of_the_images():
    import tomllib

    lock = tomllib.loads((REPO / "uv.lock").read_text())
    airflow = {p["version"] for p in lock["package"] if p["name"] == "apache-airflow"}
    for name in ("values-celery.yaml", "values-kubernetes.yaml"):
        assert {load(name)["airflowVersion"]} == airflow, name


# --------------------------------------------------------------------------------------- kubernetes


@pytest.fixture(scope="module")
def training_dag():
    """The example's training DAG as a deployment builds it (training.queue from the YAML, default `gpu`)."""
    from mlops_provider.config import load_config
    from mlops_provider.factory import build_dags

    saved = os.environ.pop("MLOPS_TRAINING_QUEUE", None)  # conftest sets it to `default` for the demo
    try:
        dags = build_dags(load_config(REPO / "dags" / "flights_delay.yaml"))
    finally:
        if saved is not None:
            os.environ["MLOPS_TRAINING_QUEUE"] = saved
    return dags["flights_delay__training"], dags


@pytest.fixture(scope="module")
def local_settings() -> dict:
    values = load("values-kubernetes.yaml")
    assert values["executor"] == "KubernetesExecutor"
    namespace: dict = {}
    exec(compile(values["airflowLocalSettings"], "airflow_local_settings.py", "exec"), namespace)  # noqa: S102
    return namespace


def test_kubernetes_policy_gives_training_tasks_a_gpu_pod(training_dag, local_settings):
    dag, dags = training_dag
    policy = local_settings["task_policy"]
    gpu_tasks = []
    for d in dags.values():
        for task in d.tasks:
            before = dict(task.executor_config or {})
            policy(task)
            if task.queue == "gpu":
                gpu_tasks.append(task.task_id)
            else:
                assert (task.executor_config or {}) == before, f"{d.dag_id}.{task.task_id} changed"
    assert "train" in gpu_tasks
    pod = dag.get_task("train").executor_config["pod_override"]
    base = [c for c in pod.spec.containers if c.name == "base"]
    assert base and base[0].resources.limits["nvidia.com/gpu"] == "1"
    assert any(t.key == "nvidia.com/gpu" and t.effect == "NoSchedule" for t in pod.spec.tolerations)
    assert pod.spec.node_selector


def test_kubernetes_policy_keeps_a_tasks_own_pod_override(training_dag, local_settings):
    from kubernetes.client import models as k8s

    task = training_dag[0].get_task("train")
    own = k8s.V1Pod(metadata=k8s.V1ObjectMeta(labels={"mine": "yes"}))
    task.executor_config = {"pod_override": own}
    local_settings["task_policy"](task)
    assert task.executor_config["pod_override"] is own


def test_gpu_pod_override_survives_dag_serialization(training_dag, local_settings):
    """The DAG processor serializes the policy's pod_override; the scheduler must read the same pod back."""
    from airflow.serialization.serialized_objects import DagSerialization

    dag = training_dag[0]
    task = dag.get_task("train")
    task.executor_config = {}
    local_settings["task_policy"](task)
    back = DagSerialization.from_dict(DagSerialization.to_dict(dag)).get_task("train")
    pod = back.executor_config["pod_override"]
    assert pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"


def test_celery_values_and_compose_ride_out_a_broker_outage():
    """The Redis drill's settings (the scheduler retries handing a task to a missing broker instead of failing
    it) reach both CeleryExecutor deployments unchanged."""
    from test_docker_compose import COMPOSE

    from mlops_provider.embedded import CELERY_BROKER_OUTAGE_CONFIG, airflow_env

    assert load("values-celery.yaml")["config"]["celery"] == CELERY_BROKER_OUTAGE_CONFIG
    compose_env = yaml.safe_load(COMPOSE.read_text())["x-airflow-common"]["environment"]
    expected = airflow_env("celery", CELERY_BROKER_OUTAGE_CONFIG)
    assert {k: compose_env.get(k) for k in expected} == expected
    policy = json.loads(CELERY_BROKER_OUTAGE_CONFIG["extra_celery_config"])["task_publish_retry_policy"]
    assert policy["max_retries"] is None  # bounded by task_publish_max_retries, not by Celery's 3 tries
