"""Crash safety, tracking extras, architectures, reproduce and bad input of training (real MLflow sqlite store).

The kill tests run train() in a real subprocess and SIGKILL it:
- in the middle of epoch 2 (after the epoch-1 checkpoint): the retry resumes in this process in the same MLflow
  run, one registered version, one metric point per epoch, and (CPU) the same final metrics as an uninterrupted run;
- in the middle of epoch 1 (before any checkpoint): the retry closes the dead run (KILLED, not left RUNNING) and
  trains in a fresh run;
- right after the version was registered, before the run was tagged: the retry completes the tags
  (``mlops.model_version``, ``mlops.training_complete``, the version's task tags) and trains nothing.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient

HERE = Path(__file__).parent
UNIT = HERE.parent / "unit"
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(UNIT))  # training_user_nets (user entry points)
from conftest_training import CATEGORICAL, LABEL, MODEL, NUMERIC, mlflow_home, training_spec  # noqa: E402

from mlops_provider.exceptions import DataValidationError, ModelRegistryError, TrainingError  # noqa: E402
from mlops_provider.runtime.training.checkpoint import CheckpointStore, checkpoint_dir  # noqa: E402
from mlops_provider.runtime.training.run import train  # noqa: E402
from mlops_provider.runtime.training.tracking import COMPLETE_TAG, IDEMPOTENCY_TAG, VERSION_TAG  # noqa: E402
from mlops_provider.specs import as_dict  # noqa: E402

pytestmark = pytest.mark.integration

ARCH = {"hidden": [16], "dropout": 0.1}
SLOW_ARCH = {"entry_point": "training_user_nets:slow_mlp", "hidden": 16}
BATCH = 256


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with mlflow_home(tmp_path_factory, "mlops_home_resume", end="2013-01-22", max_rows=4000) as env:
        yield env


SPEC_KEYS = {"arch": "architecture", "lr": "learning_rate", "compile_model": "compile"}
SPEC_FIELDS = {"architecture", "epochs", "batch_size", "learning_rate", "seed", "patience", "checkpoint_every",
               "compile", "system_metrics_interval", "label", "task", "calibration"}


def spec_of(**kw):
    settings = {SPEC_KEYS.get(k, k): v for k, v in kw.items()}
    return training_spec(**{"architecture": ARCH, "epochs": 3, "batch_size": BATCH, "patience": 3,
                            **{k: v for k, v in settings.items() if k in SPEC_FIELDS}})


def run_train(env, key, **kw):
    """train() with the test's spec; spec settings (arch, epochs, lr, ...) and train() arguments mixed."""
    spec = spec_of(**kw)
    rest = {k: v for k, v in kw.items() if SPEC_KEYS.get(k, k) not in SPEC_FIELDS}
    return train(env.snapshot, MODEL, spec, tracking=env.tracking, idempotency_key=key, **rest)


def client_of(env) -> MlflowClient:
    return MlflowClient(tracking_uri=env.uri)


def versions_of_run(env, run_id: str) -> list:
    try:
        return client_of(env).search_model_versions(f"name = '{MODEL}' and run_id = '{run_id}'")
    except Exception:  # noqa: BLE001 - no registered model yet
        return []


def runs_with_key(env, key: str) -> list:
    exp = client_of(env).get_experiment_by_name(MODEL)
    if exp is None:
        return []
    return client_of(env).search_runs([exp.experiment_id], filter_string=f"tags.`{IDEMPOTENCY_TAG}` = '{key}'")


# ---------------------------------------------------------------------------- kill -9 and resume
CHILD = textwrap.dedent("""
    import json, os, signal, sys
    from mlops_provider.runtime.training import run
    from mlops_provider.specs import TrainingSpec, from_dict
    a = json.loads(sys.argv[1])
    if a.get("kill_after_registration"):
        # a registry that set only part of the version's tags before the worker died, right after registering
        real = run.register_model_version

        def register_then_die(uri, name, tags):
            first = dict(list(tags.items())[:1])
            real(uri, name, first)
            open(a["marker"], "w").close()
            os.kill(os.getpid(), signal.SIGKILL)

        run.register_model_version = register_then_die
    run.train(a["snapshot"], a["model"], from_dict(TrainingSpec, a["spec"]), tracking=a["tracking"],
              idempotency_key=a["key"])
""")


def kill_child(env, tmp_path, key, spec, *, sleep_after_steps: int | None = None, after_registration=False):
    """Run train() in a subprocess and SIGKILL it once it marks the moment (blocked mid-epoch, or registered)."""
    marker = tmp_path / f"marker-{key}"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    args = dict(snapshot=env.snapshot, model=MODEL, spec=as_dict(spec), tracking=env.tracking, key=key,
                marker=str(marker), kill_after_registration=after_registration)
    child_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(UNIT), os.environ.get("PYTHONPATH", "")]),
                 "MLOPS_TEST_SLEEP_MARKER": str(marker)}
    if sleep_after_steps is not None:
        child_env["MLOPS_TEST_SLEEP_AFTER_STEPS"] = str(sleep_after_steps)
    proc = subprocess.Popen([sys.executable, str(script), json.dumps(args)], env=child_env, cwd=str(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 150
        while not marker.exists() and proc.poll() is None:
            if time.monotonic() > deadline:
                pytest.fail("child never reached the moment to kill")
            time.sleep(0.1)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stdout.read().decode()[-3000:]


def steps_per_epoch(env) -> int:
    df = pd.read_parquet(Path(env.snapshot) / "data.parquet")
    return math.ceil(int((df["split"] == "train").sum()) / BATCH)


def test_sigkill_mid_epoch_resumes_in_the_same_run_with_one_version_and_identical_metrics(env, tmp_path):
    epochs, key = 4, "kill-9-key"
    steps = steps_per_epoch(env)
    # the child's network blocks in the middle of epoch 2, after the epoch-1 checkpoint
    kill_child(env, tmp_path, key, spec_of(arch=SLOW_ARCH, epochs=epochs), sleep_after_steps=steps + steps // 2)

    store = CheckpointStore(checkpoint_dir(MODEL, key, env.home))
    ck = store.load()
    assert ck is not None and ck["epoch"] == 1 and not ck["stopped"]
    [dead] = runs_with_key(env, key)
    assert dead.info.run_id == ck["run_id"] and dead.info.status == "RUNNING"  # the killed worker never ended it
    assert versions_of_run(env, dead.info.run_id) == []

    resumed = run_train(env, key, arch=SLOW_ARCH, epochs=epochs)
    assert resumed["run_id"] == dead.info.run_id and resumed["resumed_from_epoch"] == 1
    assert resumed["reused"] is False and resumed["epochs_run"] == epochs
    [run] = runs_with_key(env, key)  # no duplicate run
    assert run.info.status == "FINISHED" and run.data.tags["mlops.resumed_from_epoch"] == "1"
    assert [str(v.version) for v in versions_of_run(env, run.info.run_id)] == [resumed["model_version"]]
    history = client_of(env).get_metric_history(run.info.run_id, "train_loss")
    assert sorted(m.step for m in history) == list(range(1, epochs + 1))  # continuous, one point per epoch
    assert not store.directory.exists()  # cleared after success

    again = run_train(env, key, arch=SLOW_ARCH, epochs=epochs)  # a later re-run reuses the version
    assert again["reused"] is True and again["model_version"] == resumed["model_version"]
    assert len(versions_of_run(env, run.info.run_id)) == 1

    # CPU determinism across the crash: an uninterrupted run of the same config gives the same numbers
    straight = run_train(env, "kill-9-reference", arch=SLOW_ARCH, epochs=epochs)
    assert straight["resumed_from_epoch"] == 0 and straight["metrics"] == resumed["metrics"]
    ref = client_of(env).get_metric_history(straight["run_id"], "val_loss")
    got = client_of(env).get_metric_history(resumed["run_id"], "val_loss")
    assert sorted((m.step, m.value) for m in ref) == sorted((m.step, m.value) for m in got)


def test_a_run_killed_before_its_first_checkpoint_is_closed_and_trained_afresh(env, tmp_path):
    key = "kill-before-checkpoint"
    kill_child(env, tmp_path, key, spec_of(arch=SLOW_ARCH, epochs=2), sleep_after_steps=steps_per_epoch(env) // 2)
    [dead] = runs_with_key(env, key)
    assert dead.info.status == "RUNNING"  # what the killed worker left behind
    assert CheckpointStore(checkpoint_dir(MODEL, key, env.home)).load() is None

    result = run_train(env, key, arch=SLOW_ARCH, epochs=2)
    assert result["run_id"] != dead.info.run_id and result["resumed_from_epoch"] == 0
    closed = client_of(env).get_run(dead.info.run_id)
    assert closed.info.status == "KILLED"  # not left RUNNING in MLflow
    assert closed.data.tags["mlops.superseded_by"] == result["run_id"]
    assert "no checkpoint" in closed.data.tags["mlops.closed_reason"]
    assert client_of(env).get_run(result["run_id"]).info.status == "FINISHED"
    assert versions_of_run(env, dead.info.run_id) == [] and len(versions_of_run(env, result["run_id"])) == 1
    again = run_train(env, key, arch=SLOW_ARCH, epochs=2)  # the newest keyed run is the one found
    assert again["reused"] is True and again["run_id"] == result["run_id"]


def test_a_kill_between_registration_and_tagging_completes_the_tags_on_retry(env, tmp_path):
    key = "kill-after-register"
    kill_child(env, tmp_path, key, spec_of(epochs=2), after_registration=True)
    [run] = runs_with_key(env, key)
    [version] = versions_of_run(env, run.info.run_id)
    # what the dead worker left: a version with part of its tags, a RUNNING run without its completion tags
    assert run.info.status == "RUNNING"
    assert VERSION_TAG not in run.data.tags and COMPLETE_TAG not in run.data.tags
    assert "mlops.task" not in version.tags

    result = run_train(env, key, epochs=2)
    assert result["reused"] is True and result["model_version"] == str(version.version)
    assert result["run_id"] == run.info.run_id and set(result["metrics"]) >= {"roc_auc", "log_loss", "best_epoch"}
    run = client_of(env).get_run(run.info.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags[VERSION_TAG] == str(version.version) and run.data.tags[COMPLETE_TAG] == "true"
    tags = client_of(env).get_model_version(MODEL, str(version.version)).tags
    assert tags["mlops.task"] == "binary" and tags["mlops.label"] == LABEL and "mlops.calibration" in tags
    assert tags["snapshot_hash"] and tags[IDEMPOTENCY_TAG] == key
    assert len(versions_of_run(env, run.info.run_id)) == 1  # nothing registered twice


def test_checkpoints_hold_the_full_state_every_n_epochs(env):
    key = "ckpt-every-2"
    seen: list[tuple[int, int | None]] = []
    store = CheckpointStore(checkpoint_dir(MODEL, key, env.home))

    def on_epoch(epoch, row):
        ck = store.load()
        seen.append((epoch, ck["epoch"] if ck else None))

    result = run_train(env, key, epochs=3, checkpoint_every=2, keep_checkpoint=True, on_epoch=on_epoch)
    # every 2 epochs and at the end; written in the background, so at epoch k's callback the durable
    # checkpoint is the one just queued or the previous one, and all of them before train() returns
    assert seen[0] == (1, None)
    assert seen[1][1] in (None, 2) and seen[2][1] in (2, 3)
    ck = store.load()
    assert ck["run_id"] == result["run_id"] and ck["stopped"] is True and len(ck["history"]) == 3
    assert set(ck) >= {"model", "optimizer", "rng", "early_stopping", "history", "config_hash"}
    assert set(ck["rng"]) >= {"torch", "numpy", "perm"}
    assert set(ck["early_stopping"]) == {"best_loss", "best_epoch", "bad_epochs", "best_state"}


# ---------------------------------------------------------------------------- tracking extras
def test_run_records_batched_epoch_metrics_system_metrics_git_and_config(env):
    result = run_train(env, "tracking-extras", system_metrics_interval=0.2, epochs=3,
                       dag_file=str(REPO / "dags" / "mlops_pipelines.py"), project_dir=str(REPO))
    run = client_of(env).get_run(result["run_id"])
    assert [m.step for m in client_of(env).get_metric_history(run.info.run_id, "val_roc_auc")] == [1, 2, 3]
    assert any(k.startswith("system/") for k in run.data.metrics), sorted(run.data.metrics)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert run.data.tags["mlops.git.project_commit"] == head
    assert len(run.data.tags["mlops.git.dag_commit"]) == 40
    assert run.data.tags["mlops.device"] == "cpu"
    config = json.loads(Path(mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="config/training_config.json", tracking_uri=env.uri)).read_text())
    assert config["architecture"] == {"name": "mlp", "hidden": [16], "dropout": 0.1} and config["seed"] == 5
    assert config["training"]["task"] == "binary" and config["training"]["epochs"] == 3  # the whole spec


def test_user_entry_point_model_is_registered_and_rebuilt_by_the_pyfunc(env):
    arch = {"entry_point": "training_user_nets:two_layer", "hidden": 12}
    result = run_train(env, "entry-point", arch=arch, epochs=2)
    mlflow.set_tracking_uri(env.uri)
    model = mlflow.pyfunc.load_model(result["model_uri"])
    df = pd.read_parquet(Path(env.snapshot) / "data.parquet")
    p = model.predict(df[df["split"] == "validation"][[*CATEGORICAL, *NUMERIC]].head(50).reset_index(drop=True))
    assert p.shape == (50,) and ((p >= 0) & (p <= 1)).all() and p.std() > 0
    local = Path(mlflow.artifacts.download_artifacts(result["model_uri"]))
    cfg = json.loads((local / "artifacts" / "model_config.json").read_text())
    assert cfg["architecture"] == {"entry_point": "training_user_nets:two_layer", "kwargs": {"hidden": 12}}


@pytest.mark.parametrize("name", ["resmlp", "linear"])
def test_builtin_architectures_train(env, name):
    result = run_train(env, f"arch-{name}", arch={"name": name}, epochs=3, lr=1e-2)
    assert 0.5 < result["metrics"]["roc_auc"] <= 1.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine: the bf16 autocast / "
                    "pinned memory / torch.compile path runs only where torch.cuda.is_available()")
def test_cuda_path_with_bf16_autocast_and_compile(env):
    result = run_train(env, "cuda-compile", epochs=2, compile_model=True, device="cuda")
    run = client_of(env).get_run(result["run_id"])
    assert run.data.tags["mlops.device"].startswith("cuda") and result["metrics"]["roc_auc"] > 0.5


# ---------------------------------------------------------------------------- reproduce
def test_reproduce_retrains_into_a_new_tagged_run_with_matching_metrics(env, capsys):
    from mlops_provider.runtime.training import reproduce

    original = run_train(env, "to-reproduce", epochs=3)
    versions_before = len(client_of(env).search_model_versions(f"name = '{MODEL}'"))
    r = reproduce.reproduce(original["run_id"], tracking=env.tracking)
    assert r["run_id"] != original["run_id"] and r["match"] is True and r["max_abs_diff"] == 0.0
    assert r["original"] == r["reproduced"] and set(r["original"]) >= {"roc_auc", "log_loss", "best_epoch"}
    assert r["model_version"] is None
    assert len(client_of(env).search_model_versions(f"name = '{MODEL}'")) == versions_before  # nothing registered
    new = client_of(env).get_run(r["run_id"])
    assert new.data.tags[reproduce.REPRODUCES_TAG] == original["run_id"]
    assert new.info.experiment_id == r["experiment_id"]

    # the CLI behind `make reproduce RUN=<id>`
    from mlops_provider.cli import main

    assert main(["reproduce", original["run_id"], "--tracking-uri", env.uri]) == 0
    out = capsys.readouterr().out
    assert f"Original run   : {original['run_id']}" in out and "RESULT: MATCH" in out and "roc_auc" in out
    assert main(["reproduce", "no-such-run", "--tracking-uri", env.uri]) == 2


def test_reproduce_operator_and_a_replaced_snapshot(env, tmp_path):
    from mlops_provider.operators.training import ReproduceTrainingOperator
    from mlops_provider.runtime.training import reproduce

    original = run_train(env, "to-reproduce-op", epochs=2)
    ti = SimpleNamespace(xcom={})
    ti.xcom_push = lambda key, value: ti.xcom.__setitem__(key, value)
    ctx = {"dag": SimpleNamespace(dag_id="repro"), "dag_run": SimpleNamespace(run_id="manual__r"), "ti": ti,
           "data_interval_start": None, "data_interval_end": None}
    op = ReproduceTrainingOperator(task_id="reproduce", run_id=original["run_id"], fail_on_mismatch=True)
    assert op.queue == "gpu"
    result = op.execute(ctx)
    assert result["match"] is True and ti.xcom["mlflow_run_url"].endswith(f"/mlops/runs/{result['run_id']}")
    assert op.execute(ctx)["run_id"] == result["run_id"]  # same Airflow run: the keyed reproduction is reused

    # the recorded snapshot replaced by different data under the same path -> named error, no run
    backup = tmp_path / "snap"
    shutil.copytree(env.snapshot, backup)
    try:
        manifest = json.loads((Path(env.snapshot) / "manifest.json").read_text())
        (Path(env.snapshot) / "manifest.json").write_text(json.dumps({**manifest, "hash": "0" * 64}))
        with pytest.raises(DataValidationError, match="is corrupt"):
            reproduce.reproduce(original["run_id"], tracking=env.tracking)
    finally:
        shutil.rmtree(env.snapshot)
        shutil.copytree(backup, env.snapshot)


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(("arch", "match"), [
    ({"name": "transformer"}, "unknown architecture 'transformer'"),
    ({"entry_point": "no_such_pkg_abc.nets:build"}, "cannot import module 'no_such_pkg_abc.nets'"),
    ({"entry_point": "training_user_nets:broken"}, "raised RuntimeError: cannot build"),
])
def test_bad_architecture_fails_named_before_any_run(env, arch, match):
    key = f"bad-arch-{abs(hash(json.dumps(arch)))}"
    with pytest.raises(TrainingError, match=match):
        run_train(env, key, arch=arch)
    assert runs_with_key(env, key) == []


def test_nan_loss_stops_with_a_named_error_and_registers_nothing(env):
    key = "nan-loss"
    with pytest.raises(TrainingError, match="diverged at epoch 1"):
        run_train(env, key, arch={"entry_point": "training_user_nets:nan_net"})
    [run] = runs_with_key(env, key)
    assert run.info.status == "FAILED" and versions_of_run(env, run.info.run_id) == []
    assert "train_loss" not in run.data.metrics


def test_missing_snapshot_hash_mismatch_and_absent_label(env, tmp_path):
    with pytest.raises(DataValidationError, match="does not exist"):
        train(str(tmp_path / "nope"), MODEL, spec_of(), tracking=env.tracking)
    tampered = tmp_path / "tampered"
    shutil.copytree(env.snapshot, tampered)
    df = pd.read_parquet(tampered / "data.parquet")
    df.loc[0, "temp"] = 999.0
    df.to_parquet(tampered / "data.parquet", index=False)
    with pytest.raises(DataValidationError, match="is corrupt: its data hashes to"):
        train(str(tampered), MODEL, spec_of(), tracking=env.tracking)
    with pytest.raises(TrainingError, match="has no label column 'no_such_label'"):
        train(env.snapshot, MODEL, spec_of(label="no_such_label"), tracking=env.tracking, idempotency_key="no-label")
    assert runs_with_key(env, "no-label") == []
    # a label that does not fit the task: a named LabelError before any run
    from mlops_provider.exceptions import LabelError

    with pytest.raises(LabelError, match="must be finite numbers for task regression|has 2 class"):
        train(env.snapshot, MODEL, spec_of(label=LABEL, task="multiclass"), tracking=env.tracking,
              idempotency_key="two-classes")
    assert runs_with_key(env, "two-classes") == []


def test_unreachable_mlflow_server_retries_with_backoff_then_fails_named(env, monkeypatch):
    from mlops_provider.hooks.mlflow import MlflowUnreachableError
    from mlops_provider.operators.training import TorchTrainOperator

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "mlflow", "host": "127.0.0.1",
                                                                  "port": port}))
    monkeypatch.setenv("MLOPS_MLFLOW_CONNECT_ATTEMPTS", "3")
    monkeypatch.setenv("MLOPS_MLFLOW_CONNECT_BACKOFF", "0.2")
    monkeypatch.setenv("MLOPS_MLFLOW_CONNECT_TIMEOUT", "2")
    op = TorchTrainOperator(task_id="train", snapshot=env.snapshot, model_name=MODEL,
                            training=as_dict(spec_of(epochs=1)))
    ctx = {"dag": SimpleNamespace(dag_id="d"), "dag_run": SimpleNamespace(run_id="r"), "ti": SimpleNamespace(),
           "data_interval_start": None, "data_interval_end": None}
    started = time.monotonic()
    with pytest.raises(MlflowUnreachableError, match=rf"http://127.0.0.1:{port} is not reachable after 3 attempts"):
        op.execute(ctx)
    waited = time.monotonic() - started
    assert isinstance(MlflowUnreachableError("x"), ModelRegistryError)
    assert waited >= 0.6  # it did back off (0.2 + 0.4 s) before giving up
