"""Training snapshots on S3 (moto on loopback) and as MLflow dataset inputs (sqlite MLflow in tmp_path)."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest_features import FEATURE_REPO, FEATURE_SERVICE, make_features_home
from conftest_features_s3 import bucket, moto_s3, s3_store  # noqa: F401 - fixtures

from mlops_provider.exceptions import DataValidationError
from mlops_provider.runtime.features.snapshot import load_snapshot, write_snapshot

pytestmark = pytest.mark.integration

FIELDS = {"feature_service": FEATURE_SERVICE, "label": "arr_delayed", "split": {"method": "time"}}


def frame(n: int = 50, shift: int = 0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "event_timestamp": pd.date_range("2013-01-01", periods=n, freq="h", tz="UTC"),
            "origin": ["JFK", "EWR"] * (n // 2),
            "temp": [float(i + shift) for i in range(n)],
            "arr_delayed": [i % 2 for i in range(n)],
            "split": ["train"] * (n - 10) + ["validation"] * 10,
        }
    )


def test_s3_snapshot_content_addressed_atomic_and_verified(moto_s3, bucket, s3_store, tmp_path):  # noqa: F811
    root = f"s3://{bucket}/snapshots/flights_delay"
    store = s3_store
    path, manifest = write_snapshot(frame(), FIELDS, root, store=store)
    assert path == f"{root}/{manifest['hash']}"
    assert moto_s3.keys(bucket) == [f"snapshots/flights_delay/{manifest['hash']}/{n}"
                                    for n in ("data.parquet", "manifest.json")]
    # identical inputs -> identical path; the existing snapshot is reused, not rewritten
    etag = moto_s3.client.head_object(Bucket=bucket, Key=f"snapshots/flights_delay/{manifest['hash']}/manifest.json")
    again, manifest2 = write_snapshot(frame(), FIELDS, root, store=store)
    assert again == path and manifest2 == manifest
    assert moto_s3.client.head_object(
        Bucket=bucket, Key=f"snapshots/flights_delay/{manifest['hash']}/manifest.json")["ETag"] == etag["ETag"]
    # a concurrent writer that missed the existence check loses the conditional manifest PUT
    # (If-None-Match: *) and gets the winner's manifest back: the manifest is never overwritten
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(store, "head", lambda *a, **k: None)
        raced, raced_manifest = write_snapshot(frame(), FIELDS, root, store=store)
    assert raced == path and raced_manifest["created_at"] == manifest["created_at"]
    # the same data locally has the same hash (one content address, wherever it is stored)
    local, local_manifest = write_snapshot(frame(), FIELDS, tmp_path / "snaps")
    assert local_manifest["hash"] == manifest["hash"]

    df, loaded = load_snapshot(path, store=store)
    assert loaded == manifest and len(df) == 50 and loaded["rows"] == {"train": 40, "validation": 10}
    pd.testing.assert_frame_equal(df, load_snapshot(local)[0])
    assert load_snapshot(f"{path}/manifest.json", store=store)[1]["hash"] == manifest["hash"]

    # a different input -> a different path
    other, _ = write_snapshot(frame(shift=1), FIELDS, root, store=store)
    assert other != path

    # data without a manifest (a writer died before the last step) counts as absent
    moto_s3.put(bucket, "snapshots/flights_delay/deadbeef/data.parquet", b"partial")
    with pytest.raises(DataValidationError, match="does not exist"):
        load_snapshot(f"{root}/deadbeef", store=store)
    # tampered data is caught by the hash check, and the message names the s3 URL
    local_other = load_snapshot(other, store=store)[0]
    local_other.to_parquet(tmp_path / "x.parquet", index=False)
    moto_s3.put(bucket, f"snapshots/flights_delay/{manifest['hash']}/data.parquet",
                (tmp_path / "x.parquet").read_bytes())
    with pytest.raises(DataValidationError, match=f"snapshot {path} is corrupt"):
        load_snapshot(path, store=store)


@pytest.fixture(scope="module")
def features_home(tmp_path_factory):
    yield from make_features_home(tmp_path_factory)


def test_training_dataset_operator_to_s3_logged_as_mlflow_input(features_home, moto_s3, bucket, s3_store,  # noqa: F811
                                                               tmp_path, monkeypatch):
    import mlflow
    from mlflow import MlflowClient

    from mlops_provider.operators.feast import FeastApplyOperator, FeastTrainingDatasetOperator

    monkeypatch.setenv("MLOPS_HOME", str(features_home["home"]))
    monkeypatch.delenv("AIRFLOW_CONN_MLFLOW_DEFAULT", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("flights_delay", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(exp).info.run_id

    paths = features_home["paths"]
    FeastApplyOperator(task_id="apply", repo_path=str(FEATURE_REPO)).execute(context={})
    root = f"s3://{bucket}/snapshots/flights_delay"
    kwargs = dict(
        task_id="dataset", repo_path=str(FEATURE_REPO), feature_service=FEATURE_SERVICE,
        labels_dir=str(paths.labels), label="arr_delayed", snapshot_root=root,
        validation_days=3, end="2013-01-12T00:00:00+00:00", max_rows=1500, mlflow_run_id=run_id,
    )
    op = FeastTrainingDatasetOperator(**kwargs)
    first = op.execute(context={})
    assert first["path"] == f"{root}/{first['hash']}"
    # a retry of the logging step (same run, same snapshot) adds nothing
    assert op.log_dataset_input(run_id, first) == first["mlflow_dataset"]
    assert len(moto_s3.keys(bucket, "snapshots/")) == 2          # one snapshot: data + manifest
    df, manifest = load_snapshot(first["path"], store=s3_store)
    assert len(df) == 1500 and manifest["hash"] == first["hash"]

    inputs = client.get_run(run_id).inputs.dataset_inputs
    assert len(inputs) == 1                                         # logged once although asked twice
    ds = inputs[0].dataset
    assert ds.digest == first["hash"][:36] and first["path"] in ds.source and ds.source_type == "s3"
    assert json.loads(ds.profile)["hash"] == first["hash"]
    assert {t.key: t.value for t in inputs[0].tags}["mlflow.data.context"] == "training"
    assert first["mlflow_dataset"] == {"name": ds.name, "digest": ds.digest, "source": first["path"]}
    mlflow.set_tracking_uri(None)
