"""The pipeline's shared files under an ``s3://`` storage root (a real moto S3 server on loopback), through the
operators as the factory builds them: training and the gate read the snapshot, the gate and data validation
write their reports, every one of them only through the ``aws_default`` connection.

The process's own AWS chain points at a closed port (``AWS_ENDPOINT_URL``), as on a GPU worker with no AWS
environment: a task that fell back to it instead of its connection fails here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest_features_s3 import moto_s3  # noqa: E402,F401 - fixture
from conftest_training import MODEL, mlflow_home, training_spec, write_eval_snapshot  # noqa: E402

from mlops_provider.exceptions import DataValidationError  # noqa: E402
from mlops_provider.specs import GateSpec, as_dict  # noqa: E402

pytestmark = pytest.mark.integration

BUCKET = "storage-root"
ROOT = f"s3://{BUCKET}/pipelines"


class _TI:
    def __init__(self) -> None:
        self.xcom: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.xcom[key] = value


def _context() -> dict:
    return {"dag": SimpleNamespace(dag_id=f"{MODEL}__training"), "dag_run": SimpleNamespace(run_id="manual__s3", conf={}),
            "run_id": "manual__s3", "ti": _TI(), "data_interval_start": None, "data_interval_end": None}


@pytest.fixture(scope="module")
def env(tmp_path_factory, moto_s3):  # noqa: F811
    from mlops_provider.hooks.objstore import ObjectStoreHook
    from mlops_provider.runtime.io.objstore import ObjectStore

    moto_s3.client.create_bucket(Bucket=BUCKET)
    with mlflow_home(tmp_path_factory, "storage_s3", max_rows=3000) as env, pytest.MonkeyPatch.context() as mp:
        # the default chain of this process reaches no S3: only the connection's endpoint does
        mp.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
        mp.setenv("AWS_MAX_ATTEMPTS", "1")
        store = ObjectStore(ObjectStoreHook("aws_default").settings)
        env.s3, env.store = moto_s3, store
        env.snapshot = write_eval_snapshot(env.home, "2013-01-01", "2013-02-01", max_rows=6000,
                                           root=f"{ROOT}/snapshots/{MODEL}", store=store)
        yield env


def _keys(env, prefix: str) -> list[str]:
    return env.s3.keys(BUCKET, prefix)


def test_default_chain_cannot_reach_the_bucket(env) -> None:
    from mlops_provider.runtime.features.snapshot import read_manifest
    from mlops_provider.runtime.io.objstore import ObjectStore

    with pytest.raises(Exception):  # noqa: B017,PT011 - whatever botocore raises for a refused connection
        read_manifest(env.snapshot, store=ObjectStore())
    assert read_manifest(env.snapshot, store=env.store)["hash"] in env.snapshot


def test_train_and_gate_read_the_snapshot_and_write_the_verdict_on_s3(env) -> None:
    from mlops_provider.operators.gate import ModelGateOperator
    from mlops_provider.operators.training import TorchTrainOperator

    assert env.snapshot.startswith(f"{ROOT}/snapshots/{MODEL}/")
    spec = as_dict(training_spec(epochs=2))
    ctx = _context()
    trained = TorchTrainOperator(task_id="train", snapshot=env.snapshot, model_name=MODEL, training=spec).execute(ctx)
    mv = env.client.get_model_version(MODEL, trained["model_version"])
    assert mv.tags["snapshot_path"] == env.snapshot and mv.tags["snapshot_hash"] in env.snapshot
    run = env.client.get_run(trained["run_id"])
    assert {json.loads(i.dataset.source)["uri"] for i in run.inputs.dataset_inputs} == {env.snapshot}

    report_dir = f"{ROOT}/reports/{MODEL}/gate"
    summary = ModelGateOperator(
        task_id="gate", model_name=MODEL, challenger_version=trained["model_version"], snapshot=env.snapshot,
        gate=as_dict(GateSpec.parse({})), training=spec, report_dir=report_dir,
    ).execute({})
    key = f"pipelines/reports/{MODEL}/gate/gate_{MODEL}_v{trained['model_version']}.json"
    assert summary["report_path"] == f"s3://{BUCKET}/{key}" and _keys(env, "pipelines/reports/") == [key]
    full = env.store.read_json(summary["report_path"])
    assert full["challenger"]["version"] == trained["model_version"] and full["decision"] == summary["decision"]
    # the challenger's training window came from the S3 manifest: the gate checked it for leakage
    assert full["challenger"]["training_window"] is not None, full.get("warnings")
    assert full["evaluation_set"]["snapshot_path"] == env.snapshot and full["evaluation_set"]["rows"] > 0
    assert env.client.get_model_version(MODEL, trained["model_version"]).tags["gate.report_path"] == \
        summary["report_path"]
    assert not (env.home / "reports").exists()

    # a retry on the same snapshot and config reuses the version (the content key read from the S3 manifest)
    again = TorchTrainOperator(task_id="train", snapshot=env.snapshot, model_name=MODEL, training=spec).execute(
        _context())
    assert again["reused"] is True and again["model_version"] == trained["model_version"]


def test_validation_reports_of_a_rejected_landing_are_written_to_s3(env) -> None:
    from mlops_provider.operators.data_validation import DataValidationOperator

    landed = env.s3.put(BUCKET, "pipelines/landing/m/unknown_2013_01.parquet", b"PAR1")
    op = DataValidationOperator(
        task_id="validate_landing", data_paths=[landed], report_dir=f"{ROOT}/reports/{MODEL}/validation",
        name="landing", contract={"tables": {"flights": {"columns": {"year": {"dtype": "int64"}}}}},
    )
    with pytest.raises(DataValidationError, match="unknown_table"):
        op.execute(_context())
    keys = _keys(env, f"pipelines/reports/{MODEL}/validation/")
    assert [k.rsplit(".", 1)[1] for k in keys] == ["html", "json"], keys
    report = env.store.read_json(f"s3://{BUCKET}/{keys[1]}")
    assert report["passed"] is False and {f["rule"] for f in report["failures"]} == {"unknown_table"}
    assert "FAILED" in env.store.read_bytes(f"s3://{BUCKET}/{keys[0]}").decode()


def test_a_retry_on_another_worker_resumes_from_the_checkpoint_mirrored_to_s3(env, tmp_path) -> None:
    """Each epoch's checkpoint is uploaded under <storage.root>/checkpoints/<model>/<key>/: the retry of a
    killed attempt on a worker without the local file (another home) downloads it and resumes in the same
    MLflow run; a finished run removes it."""
    from mlops_provider.runtime.training.run import train

    spec = training_spec(epochs=4, patience=4, checkpoint_every=1)
    root, key = f"{ROOT}/checkpoints", "mirror-key"
    runs: list[str] = []

    class Killed(Exception):
        pass

    def die(epoch: int, _row: dict) -> None:
        if epoch == 2:
            raise Killed

    common = {"tracking": env.tracking, "idempotency_key": key, "checkpoint_root": root, "store": env.store,
              "on_run_start": lambda run_id, _exp: runs.append(run_id)}
    with pytest.raises(Killed):
        train(env.snapshot, "mirror_model", spec, checkpoint_home=str(tmp_path / "worker-a"), on_epoch=die, **common)
    mirrored = f"pipelines/checkpoints/mirror_model/{key}/checkpoint.pt"
    assert _keys(env, "pipelines/checkpoints/") == [mirrored]

    result = train(env.snapshot, "mirror_model", spec, checkpoint_home=str(tmp_path / "worker-b"), **common)
    assert result["resumed_from_epoch"] in (1, 2), result  # the kill came after epoch 2's checkpoint began
    assert runs[1] == runs[0] == result["run_id"] and result["model_version"] is not None
    assert env.client.get_run(result["run_id"]).data.tags["mlops.resumed_from_epoch"] == str(
        result["resumed_from_epoch"])
    assert _keys(env, "pipelines/checkpoints/") == []  # done: the mirror is cleared with the local copy
