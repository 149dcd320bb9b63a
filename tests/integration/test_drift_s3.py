"""Drift reports published to object storage (a real moto S3 server on loopback) and the s3 extra link."""

from __future__ import annotations

import json

import pytest
from conftest_features_s3 import bucket, moto_s3, s3_store  # noqa: F401 - fixtures

from mlops_provider.links.drift import DriftReportLink
from mlops_provider.runtime.monitoring.reports import publish_reports, write_report

pytestmark = pytest.mark.integration


def test_reports_are_uploaded_under_the_s3_prefix_idempotently(tmp_path, moto_s3, bucket, s3_store):  # noqa: F811
    local = write_report(
        None, tmp_path, "drift__m__v1__a__b", summary={"status": "no_traffic", "drift": False}
    )
    (tmp_path / "drift__m__v1__a__b.html").write_text("<html>report</html>")
    local["html"] = str(tmp_path / "drift__m__v1__a__b.html")
    prefix = f"s3://{bucket}/reports/m/drift"
    first = publish_reports(local, prefix, store=s3_store)
    again = publish_reports(local, prefix, store=s3_store)  # same window -> same keys, nothing new
    assert (
        first
        == again
        == {
            "html": f"{prefix}/drift__m__v1__a__b.html",
            "json": f"{prefix}/drift__m__v1__a__b.json",
        }
    )
    assert moto_s3.keys(bucket) == [
        "reports/m/drift/drift__m__v1__a__b.html",
        "reports/m/drift/drift__m__v1__a__b.json",
    ]
    body = moto_s3.client.get_object(Bucket=bucket, Key="reports/m/drift/drift__m__v1__a__b.json")[
        "Body"
    ].read()
    assert json.loads(body)["summary"]["status"] == "no_traffic"
    assert DriftReportLink.url_for(first["html"], "m").endswith("/mlops/models/m/reports/drift/drift__m__v1__a__b.html")
    # a local report dir is left as it is (no upload)
    assert publish_reports(local, str(tmp_path)) == local


def test_monitor_finds_traffic_logged_under_an_s3_root(tmp_path, moto_s3, bucket, s3_store):  # noqa: F811
    """run_monitor on an s3:// inference log (parquet parts + a live JSONL WAL), an s3:// snapshot, s3://
    labels and an s3:// report dir; only the window's date= partitions are listed."""
    import io

    import numpy as np
    import pandas as pd
    from mlflow import MlflowClient

    from mlops_provider.runtime.features.snapshot import write_snapshot
    from mlops_provider.runtime.monitoring.monitor import run_monitor

    rng = np.random.default_rng(0)
    n = 2000
    ref = pd.DataFrame({
        "event_timestamp": pd.date_range("2026-06-01", periods=n, freq="10min", tz="UTC"),
        "x": rng.normal(0, 1, n), "c": rng.choice(["a", "b", "c"], n), "y": rng.integers(0, 2, n), "split": "train",
    })
    snap, _ = write_snapshot(ref, {"feature_service": "fs", "label": "y"}, f"s3://{bucket}/snapshots", store=s3_store)

    def parquet(df: pd.DataFrame) -> bytes:
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        return buf.getvalue()

    labels = []
    for day in ("2026-07-01", "2026-07-02", "2026-07-03"):
        ts = pd.date_range(day, periods=300, freq="4min", tz="UTC")
        y = rng.integers(0, 2, 300)
        log = pd.DataFrame({"timestamp": ts, "request_id": [f"{day}-{i}" for i in range(300)],
                            "x": rng.normal(0, 1, 300), "c": rng.choice(["a", "b", "c"], 300),
                            "prediction": np.clip(0.3 + 0.4 * y + rng.normal(0, 0.1, 300), 0, 1)})
        moto_s3.put(bucket, f"log/date={day}/part-w1-0.parquet", parquet(log))
        labels.append(pd.DataFrame({"event_timestamp": ts, "request_id": log["request_id"], "y": y}))
    wal = "\n".join(f'{{"timestamp": "2026-07-02T23:{m:02d}:00+00:00", "x": 0.1, "c": "a"}}' for m in range(20))
    moto_s3.put(bucket, "log/date=2026-07-02/w2.jsonl", (wal + "\n").encode())
    moto_s3.put(bucket, "labels/month=2026-07.parquet", parquet(pd.concat(labels)))

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    run = client.create_run(client.create_experiment("m", artifact_location=(tmp_path / "art").as_uri()))
    client.log_metric(run.info.run_id, "roc_auc", 0.9)
    client.create_registered_model("m")
    mv = client.create_model_version("m", f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
                                     tags={"snapshot_path": snap})
    client.set_registered_model_alias("m", "champion", mv.version)

    listed: list[str] = []
    real_list = s3_store.list

    def spy_list(url, *a, **k):
        listed.append(str(url))
        return real_list(url, *a, **k)

    def no_dirs(url):  # a bounded window names its days: the log's prefix is never listed
        raise AssertionError(f"listed every partition of {url}")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(s3_store, "list", spy_list)
        mp.setattr(s3_store, "list_dirs", no_dirs)
        result = run_monitor(
            model="m", inference_log_dir=f"s3://{bucket}/log", features={"numeric": ["x"], "categorical": ["c"]},
            report_dir=f"s3://{bucket}/reports", client=client, store=s3_store,
            window_start="2026-07-02T00:00:00+00:00", window_end="2026-07-03T00:00:00+00:00",
            performance={"label_delay_hours": 0, "min_labelled_rows": 50, "bootstrap": 20},
            labels_dir=f"s3://{bucket}/labels", label_column="y", reference_cache_dir=str(tmp_path / "cache"),
        )
    assert result["status"] == "ok" and result["n_current"] == 320  # 300 parquet rows + 20 WAL rows
    assert result["snapshot_path"] == snap and result["n_reference_total"] == n
    # the window's days, the previous window's (level_shift) and the performance lookback: named, never listed
    days = pd.date_range("2026-06-05", "2026-07-03", freq="D").strftime("date=%Y-%m-%d")
    assert {u.rsplit("/", 1)[-1] for u in listed if "/log/" in u} == set(days)
    perf = result["performance"]
    assert perf["status"] == "ok" and perf["n_labelled"] == 300 and perf["overall"]["roc_auc"] > 0.9
    stem = result["report"]["json"].rsplit("/", 1)[-1]
    assert result["report"] == {"html": f"s3://{bucket}/reports/{stem[:-5]}.html",
                                "json": f"s3://{bucket}/reports/{stem}"}
    assert moto_s3.keys(bucket, "reports/") == [f"reports/{stem[:-5]}.html", f"reports/{stem}"]
