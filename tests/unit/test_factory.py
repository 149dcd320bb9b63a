"""The factory builds four DAGs wired by Assets exactly as in DESIGN.md §2."""

from __future__ import annotations

from pathlib import Path

import pytest
from airflow.sdk import Asset

from mlops_provider.config import load_config
from mlops_provider.factory import PipelineAssets, build_dags
from mlops_provider.triggers.data_arrival import DataArrivalTrigger

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cfg():
    return load_config(REPO / "dags" / "flights_delay.yaml")


@pytest.fixture(scope="module")
def dags(cfg):
    return build_dags(cfg)


def _assert_chain(dag, task_ids: list[str]) -> None:
    """Exactly these tasks, each one downstream of the one before it."""
    assert sorted(dag.task_ids) == sorted(task_ids)
    for up, down in zip(task_ids, task_ids[1:], strict=False):
        assert up in dag.get_task(down).upstream_task_ids, f"{up} -> {down} missing"


def _asset_names(cond) -> set[str]:
    if isinstance(cond, Asset):
        return {cond.name}
    return set().union(*(_asset_names(o) for o in cond.objects))


def _outlets(task) -> list[str]:
    return [a.name for a in task.outlets]


def test_four_pipeline_dags_two_manual_dags_and_their_chains(dags) -> None:
    assert sorted(dags) == [f"flights_delay__{k}" for k in (
        "deploy", "features", "force_promote", "monitor", "rollback", "training")]
    _assert_chain(dags["flights_delay__features"], [
        "landed_files", "validate_landing", "write_offline_partition", "feast_apply", "materialize"])
    _assert_chain(dags["flights_delay__training"], [
        "training_policy", "approve_retrain", "training_dataset", "train", "gate", "promote"])
    _assert_chain(dags["flights_delay__deploy"], ["package", "infra_validate", "deploy", "smoke_test"])
    mon = dags["flights_delay__monitor"]
    assert sorted(mon.task_ids) == ["drift_report", "ops_summary", "signal_drift"]
    for task_id in ("signal_drift", "ops_summary"):
        assert mon.get_task(task_id).upstream_task_ids == {"drift_report"}


def test_assets_connect_the_dags(cfg, dags) -> None:
    assets = PipelineAssets(cfg)
    feat, train = dags["flights_delay__features"], dags["flights_delay__training"]
    deploy, mon = dags["flights_delay__deploy"], dags["flights_delay__monitor"]
    # producers: only the final "signal" tasks carry outlets
    assert _outlets(feat.get_task("materialize")) == ["feast/flights_delay_v1"]
    assert _outlets(train.get_task("promote")) == ["mlflow/flights_delay@champion"]
    assert _outlets(train.get_task("gate")) == []
    assert _outlets(deploy.get_task("smoke_test")) == ["bento/flights_delay"]
    assert _outlets(mon.get_task("signal_drift")) == ["drift/flights_delay"]
    # consumers
    def names(d):
        return _asset_names(d.timetable.asset_condition)

    assert names(feat) == {"landing/flights_delay"}
    assert names(train) == {"feast/flights_delay_v1", "drift/flights_delay"}
    assert names(deploy) == {"mlflow/flights_delay@champion"}
    assert type(mon.timetable).__name__ == "CronTriggerTimetable" and mon.schedule == "@daily"
    # the landing asset is watched by the data-arrival trigger on the landing zone
    (watcher,) = assets.landing.watchers
    assert isinstance(watcher.trigger, DataArrivalTrigger)
    assert watcher.trigger.path == cfg.landing_path and watcher.trigger.pattern == "*.parquet"


def test_training_routes_to_the_gpu_queue_unless_overridden(cfg, monkeypatch) -> None:
    monkeypatch.delenv("MLOPS_TRAINING_QUEUE", raising=False)
    assert build_dags(cfg)["flights_delay__training"].get_task("train").queue == "gpu"
    monkeypatch.setenv("MLOPS_TRAINING_QUEUE", "default")
    assert build_dags(cfg)["flights_delay__training"].get_task("train").queue == "default"


def test_operator_arguments_come_from_the_yaml(cfg, dags) -> None:
    from mlops_provider import specs

    train = dags["flights_delay__training"].get_task("train")
    # one templated spec per stage: the operator holds the TrainingSpec dict, not copied fields
    assert "training" in train.template_fields and train.model_name == "flights_delay"
    assert train.training == specs.as_dict(cfg.training) and train.training["epochs"] == cfg.training.epochs
    assert specs.from_dict(specs.TrainingSpec, train.training) == cfg.training
    gate = dags["flights_delay__training"].get_task("gate")
    assert {"gate", "training"} <= set(gate.template_fields)
    assert gate.gate["floors"] == {"roc_auc": 0.6} and gate.gate["max_regression"] == {"roc_auc": 0.005}
    assert gate.gate["guard_metrics"] == ["log_loss", "brier", "ece"] and gate.gate["primary_metric"] == "roc_auc"
    assert [s["column"] for s in gate.gate["slices"]] == ["origin", "carrier"]
    assert [b["name"] for b in gate.gate["behavioral"]] == [b.name for b in cfg.gate.behavioral] != []
    assert gate.gate["calibration"]["max_ece"] == cfg.gate.calibration.max_ece
    assert gate.training["task"] == "binary" and gate.training["label"] == cfg.training.label
    # a manual run can force a retrain of unchanged data
    assert dags["flights_delay__training"].params["force_retrain"] is False
    deploy = dags["flights_delay__deploy"].get_task("deploy")
    assert deploy.port == 3000 and deploy.host == "127.0.0.1"
    assert "window_hours" not in str(dags["flights_delay__monitor"].get_task("drift_report").window_start)
    for dag in dags.values():
        assert dag.max_active_runs == 1 and not dag.catchup and "flights_delay" in dag.tags


def test_search_section_maps_trials_and_gates_the_best(tmp_path) -> None:
    import shutil

    import yaml

    data = yaml.safe_load((REPO / "dags" / "flights_delay.yaml").read_text())
    data["training"]["search"] = {"max_trials": 3, "params": {"learning_rate": [0.001, 0.003],
                                                              "hidden": [[64, 32], [128, 64]]}}
    shutil.copytree(REPO / "feature_repo", tmp_path / "feature_repo", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "dags").mkdir()
    path = tmp_path / "dags" / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    dag = build_dags(load_config(path))["flights_delay__training"]
    assert "train" not in dag.task_ids
    _assert_chain(dag, ["training_policy", "approve_retrain", "training_dataset", "hpo_parent", "hpo_trial",
                        "select_best", "gate", "promote"])
    assert "select_best" in dag.get_task("gate").challenger_version
    assert dag.get_task("hpo_trial").queue == "default"  # MLOPS_TRAINING_QUEUE in the test env


def test_bad_search_space_is_a_config_error(tmp_path) -> None:
    import shutil

    import yaml

    from mlops_provider.exceptions import ConfigError

    data = yaml.safe_load((REPO / "dags" / "flights_delay.yaml").read_text())
    data["training"]["search"] = {"params": {"learning_rate": []}}
    shutil.copytree(REPO / "feature_repo", tmp_path / "feature_repo", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "dags").mkdir()
    path = tmp_path / "dags" / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"training\.search"):
        load_config(path)


@pytest.mark.parametrize("configured", [None, "s3://logs-bucket/inference/flights/", "shared/inference_log"])
def test_one_inference_log_location_for_the_service_and_the_monitor(tmp_path, configured) -> None:
    """serving.inference_log moves the log (e.g. to S3 for a multi-host deployment): the bento writes and
    the monitor and ops tasks read the same place."""
    import shutil

    import yaml

    data = yaml.safe_load((REPO / "dags" / "flights_delay.yaml").read_text())
    if configured:
        data["serving"]["inference_log"] = configured
    shutil.copytree(REPO / "feature_repo", tmp_path / "feature_repo", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "dags").mkdir()
    path = tmp_path / "dags" / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    cfg = load_config(path)
    dags = build_dags(cfg)
    expected = {None: str(cfg.paths.inference_log), "s3://logs-bucket/inference/flights/":
                "s3://logs-bucket/inference/flights", "shared/inference_log":
                str((tmp_path / "dags" / "shared" / "inference_log").resolve())}[configured]
    seen = {(dag_id, t.task_id): t.inference_log_dir for dag_id, dag in dags.items() for t in dag.tasks
            if hasattr(t, "inference_log_dir")}
    assert {("flights_delay__deploy", "package"), ("flights_delay__monitor", "drift_report"),
            ("flights_delay__monitor", "ops_summary")} <= set(seen)
    assert set(seen.values()) == {expected}


@pytest.mark.parametrize("root", [None, "s3://shared-bucket/pipelines/", "shared"])
def test_storage_root_moves_every_shared_file_and_every_task_gets_the_aws_connection(tmp_path, root) -> None:
    """storage.root (default the home) holds the landing zone, snapshots, reports, inference log and guard
    ledger; every task that reads or writes one of them gets connections.aws; an explicit key still wins."""
    import shutil

    import yaml

    data = yaml.safe_load((REPO / "dags" / "flights_delay.yaml").read_text())
    data["connections"] = {"aws": "lake_s3"}
    if root:
        data["storage"] = {"root": root}
    shutil.copytree(REPO / "feature_repo", tmp_path / "feature_repo", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "dags").mkdir()
    path = tmp_path / "dags" / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    cfg = load_config(path)
    base = {None: str(cfg.paths.home), "s3://shared-bucket/pipelines/": "s3://shared-bucket/pipelines",
            "shared": str((tmp_path / "dags" / "shared").resolve())}[root]
    assert cfg.storage_root == base
    m = cfg.model
    if root is None:  # the embedded layout is unchanged
        assert (cfg.snapshot_root, cfg.report_dir("gate"), cfg.landing_path, cfg.inference_log) == (
            str(cfg.paths.snapshots), str(cfg.paths.reports / "gate"), str(cfg.paths.landing),
            str(cfg.paths.inference_log))
    tasks = {(dag_id.split("__")[1], t.task_id): t for dag_id, dag in build_dags(cfg).items() for t in dag.tasks}
    expected = {
        ("features", "landed_files"): ("landing_path", f"{base}/landing/{m}"),
        ("features", "validate_landing"): ("report_dir", f"{base}/reports/{m}/validation"),
        ("training", "training_policy"): ("state_path", f"{base}/state/retrain_guard/{m}.json"),
        ("training", "approve_retrain"): ("state_path", f"{base}/state/retrain_guard/{m}.json"),
        ("training", "training_dataset"): ("snapshot_root", f"{base}/snapshots/{m}"),
        ("training", "gate"): ("report_dir", f"{base}/reports/{m}/gate"),
        ("deploy", "package"): ("inference_log_dir", f"{base}/inference_log/{m}"),
        ("deploy", "infra_validate"): ("report_dir", f"{base}/reports/{m}/infra_validation"),
        ("monitor", "drift_report"): ("report_dir", f"{base}/reports/{m}/drift"),
        ("monitor", "ops_summary"): ("report_dir", f"{base}/reports/{m}/drift"),
    }
    assert {k: getattr(tasks[k], attr) for k, (attr, _) in expected.items()} == {
        k: v for k, (_, v) in expected.items()}
    # the tasks that read the snapshot or write a report reach S3 through the YAML's aws connection
    readers = [t for k, t in tasks.items() if k[1] in ("train", "hpo_trial", "hpo_parent", "gate", "promote")
               or k in expected]
    assert readers and {t.task_id: t.aws_conn_id for t in readers} == {t.task_id: "lake_s3" for t in readers}
    # the landing watcher's watermark too (a triggerer restarted elsewhere keeps it); unset: the home's state
    (watcher,) = PipelineAssets(cfg).landing.watchers
    assert watcher.trigger.state_path == (f"{base}/state/{m}_arrival_watermark.json" if root
                                          else str(cfg.paths.state / f"{m}_arrival_watermark.json"))
    # training checkpoints follow storage.root (mirrored there when it is s3://); unset: the worker's home
    trainers = [t for k, t in tasks.items() if k[1] in ("train", "hpo_trial")]
    assert trainers and {t.checkpoint_root for t in trainers} == {f"{base}/checkpoints" if root else None}
    # an explicit key wins over the root
    data["serving"]["inference_log"] = "s3://logs/inference"
    path.write_text(yaml.safe_dump(data))
    assert load_config(path).inference_log == "s3://logs/inference"


def test_only_the_training_tasks_go_to_the_gpu_queue_and_pool_and_retry(tmp_path, monkeypatch) -> None:
    """With ``training.pool`` set, the network-training tasks (``train``, each HPO trial) carry the YAML's
    queue and pool; every other task of every DAG stays on the default queue, outside that pool."""
    import shutil

    import yaml

    monkeypatch.delenv("MLOPS_TRAINING_QUEUE", raising=False)
    data = yaml.safe_load((REPO / "dags" / "flights_delay.yaml").read_text())
    assert data["training"]["queue"] == "gpu"
    shutil.copytree(REPO / "feature_repo", tmp_path / "feature_repo", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "dags").mkdir()
    for search in (None, {"max_trials": 2, "params": {"learning_rate": [0.001, 0.003]}}):
        data["training"].update({"pool": "gpu", "search": search, "retries": 3, "retry_delay_seconds": 5})
        path = tmp_path / "dags" / "m.yaml"
        path.write_text(yaml.safe_dump(data))
        routed, retried = {}, {}
        for dag_id, dag in build_dags(load_config(path)).items():
            for task in dag.tasks:
                routed[f"{dag_id}.{task.task_id}"] = (task.queue, task.pool)
                retried[f"{dag_id}.{task.task_id}"] = (task.retries, task.retry_delay.total_seconds())
        training = {k: v for k, v in routed.items() if k.rsplit(".", 1)[1] in ("train", "hpo_trial")}
        assert list(training) == (["flights_delay__training.train"] if search is None
                                  else ["flights_delay__training.hpo_trial"])
        assert set(training.values()) == {("gpu", "gpu")}
        # a lost worker's training attempt is retried (and resumes from its checkpoint); nothing else retries
        assert {retried[k] for k in training} == {(3, 5.0)}
        assert {r for k, (r, _) in retried.items() if k not in training} == {0}
        others = {k: v for k, v in routed.items() if k not in training}
        assert {q for q, _ in others.values()} == {"default"}, others
        assert "gpu" not in {p for _, p in others.values()}, others
