"""Inference log: JSONL write-ahead log compacted into partitioned parquet parts (local and S3) + reader."""

from __future__ import annotations

import json
import logging
import math
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_provider.runtime.io.objstore import ObjectStore
from mlops_provider.runtime.serving.inference_log import InferenceLogWriter, read_inference_log

T0 = datetime(2013, 6, 1, 23, 59, tzinfo=UTC)


def _rec(i: int, **kw: object) -> dict:
    return {
        "request_id": f"r{i}",
        "origin": "JFK",
        "carrier": "UA",
        "tailnum": "N1",
        "temp": 60.0 + i,
        "sched_dep_hour": 7,
        "prediction": 0.1 * (i % 10),
        **kw,
    }


@pytest.mark.parametrize("make", [lambda p: p / "missing", lambda p: p])
def test_missing_or_empty_dir_gives_empty_frame(tmp_path: Path, make) -> None:
    frame = read_inference_log(make(tmp_path))
    assert frame.empty
    assert {"request_id", "timestamp", "model_version", "bento_tag", "prediction"} <= set(frame.columns)
    assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert frame.attrs["skipped_lines"] == 0


def test_writer_layout_metadata_and_roundtrip(tmp_path: Path) -> None:
    with InferenceLogWriter(tmp_path, model_version="3", bento_tag="m_service:v3-abc") as w:
        w.write_batch([_rec(0), _rec(1, temp=float("nan"), plane_year=np.float32(2004.0))], timestamp=T0)
        wal = w.path_for("2013-06-01")
        first = json.loads(wal.read_text().splitlines()[1])  # live WAL: strict JSON, NaN -> null
        assert first["temp"] is None and first["plane_year"] == 2004.0
        assert first["model_version"] == "3" and first["bento_tag"] == "m_service:v3-abc"
        assert len(read_inference_log(tmp_path)) == 2  # visible before compaction
        w.write_batch([_rec(2)], timestamp=T0 + timedelta(minutes=2))  # next UTC day: day 1 compacted
        assert not wal.exists()
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file())
    assert [f.split("/")[0] for f in files] == ["date=2013-06-01", "date=2013-06-02"]
    assert all(f.endswith(".parquet") and f"part-{w.worker_id}-" in f for f in files)
    part = pd.read_parquet(tmp_path / files[0])
    assert str(part["timestamp"].dtype).startswith("datetime64") and part["temp"].isna().sum() == 1

    frame = read_inference_log(tmp_path)
    assert list(frame["request_id"]) == ["r0", "r1", "r2"]
    assert frame["timestamp"].is_monotonic_increasing
    assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert math.isnan(frame.loc[1, "temp"]) and frame.loc[2, "temp"] == 62.0
    assert frame["prediction"].dtype == "float64"


def test_flush_rows_compacts_and_mixed_types_never_fail(tmp_path: Path) -> None:
    w = InferenceLogWriter(tmp_path, flush_rows=3, flush_interval_s=0)
    w.write_batch([_rec(0, note="a"), _rec(1, note=5)], timestamp=T0)  # 'note' has mixed types
    assert not list(tmp_path.rglob("*.parquet"))
    w.write_batch([_rec(2, note=None)], timestamp=T0)
    assert len(list(tmp_path.rglob("*.parquet"))) == 1 and not list(tmp_path.rglob("*.jsonl"))
    w.write_batch([_rec(3)], timestamp=T0)
    frame = read_inference_log(tmp_path)
    assert list(frame["request_id"]) == ["r0", "r1", "r2", "r3"]
    assert list(frame["note"][:2]) == ["a", "5"]
    w.close()
    assert len(read_inference_log(tmp_path)) == 4 and len(list(tmp_path.rglob("*.parquet"))) == 2


def test_interval_flush_in_background(tmp_path: Path) -> None:
    w = InferenceLogWriter(tmp_path, flush_interval_s=0.1)
    w.write_batch([_rec(0)], timestamp=T0)
    for _ in range(100):
        if list(tmp_path.rglob("*.parquet")):
            break
        threading.Event().wait(0.05)
    assert len(list(tmp_path.rglob("*.parquet"))) == 1 and not list(tmp_path.rglob("*.jsonl"))
    w.close()


def test_orphaned_wal_of_a_killed_worker_is_compacted_once(tmp_path: Path) -> None:
    import os

    dead = InferenceLogWriter(tmp_path, flush_interval_s=0)
    dead.write_batch([_rec(0), _rec(1)], timestamp=T0)  # never closed: "kill -9"
    wal = dead.path_for("2013-06-01")
    with open(wal, "a") as fh:
        fh.write('{"request_id": "torn", "timesta')
    os.utime(wal, (0, 0))
    a = InferenceLogWriter(tmp_path, orphan_age_s=60)
    b = InferenceLogWriter(tmp_path, orphan_age_s=60)  # nothing left to claim
    assert not wal.exists() and len(list(tmp_path.rglob("*.parquet"))) == 1
    frame = read_inference_log(tmp_path)
    assert list(frame["request_id"]) == ["r0", "r1"]
    a.close()
    b.close()


def test_s3_root_writes_parquet_objects_and_reads_them_back(tmp_path: Path) -> None:
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        s3 = boto3.client(
            "s3",
            endpoint_url=f"http://{host}:{port}",
            region_name="us-east-1",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )
        s3.create_bucket(Bucket="logs")
        store = ObjectStore(client=s3)
        root = "s3://logs/inference/flights_delay"
        with InferenceLogWriter(root, model_version="2", store=store, spool_dir=tmp_path / "spool") as w:
            w.write_batch([_rec(0), _rec(1)], timestamp=T0)
            w.write_batch([_rec(2)], timestamp=T0 + timedelta(minutes=2))
        keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="logs")["Contents"])
        assert [k.split("/")[2] for k in keys] == ["date=2013-06-01", "date=2013-06-02"]
        assert all(k.startswith("inference/flights_delay/") and k.endswith(".parquet") for k in keys)
        assert not list((tmp_path / "spool").rglob("*.jsonl"))
        frame = read_inference_log(root, store=store)
        assert list(frame["request_id"]) == ["r0", "r1", "r2"] and set(frame["model_version"]) == {"2"}
        assert list(
            read_inference_log(root, start=T0 + timedelta(minutes=1), store=store)["request_id"]
        ) == ["r2"]
        assert read_inference_log("s3://logs/nothing-here", store=store).empty
    finally:
        server.stop()


def test_generated_request_id_and_window(tmp_path: Path) -> None:
    w = InferenceLogWriter(tmp_path, model_version="1")
    for h in range(5):
        w.write_batch([{"origin": "LGA", "prediction": 0.5}], timestamp=T0 + timedelta(hours=h))
    w.close()
    frame = read_inference_log(tmp_path, start=T0 + timedelta(hours=1), end=T0 + timedelta(hours=3))
    assert len(frame) == 2  # start inclusive, end exclusive
    assert frame["request_id"].str.len().min() == 32
    assert len(read_inference_log(tmp_path, start="2013-06-02T02:00:00+00:00")) == 2  # iso strings too
    assert read_inference_log(tmp_path, end=T0 - timedelta(days=1)).empty


def test_corrupt_lines_are_skipped_and_counted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    w = InferenceLogWriter(tmp_path)
    w.write_batch([_rec(0), _rec(1)], timestamp=T0)
    w.close()
    path = w.path_for("2013-06-01")
    with open(path, "a") as fh:
        fh.write(
            '{"request_id": "torn", "timestamp": "2013-06-01T23:59:00+00:00", "predic\n'
        )  # killed writer
        fh.write("[1, 2]\n")  # not an object
        fh.write('{"request_id": "nots", "timestamp": "yesterday"}\n')  # bad timestamp
        fh.write("\n")  # blank lines are not errors
    (tmp_path / "date=garbage").mkdir()
    (tmp_path / "date=garbage" / "x.jsonl").write_text("{}\n")  # not a partition: ignored
    (tmp_path / "date=2013-06-01" / "part-truncated.parquet").write_bytes(b"PAR1 not really")
    with caplog.at_level(logging.WARNING):
        frame = read_inference_log(tmp_path)
    assert list(frame["request_id"]) == ["r0", "r1"]
    assert frame.attrs["skipped_lines"] == 3 and frame.attrs["skipped_files"] == 1
    assert "Skipped 3 corrupt line(s)" in caplog.text


def test_concurrent_batches_never_interleave_or_get_lost(tmp_path: Path) -> None:
    w = InferenceLogWriter(tmp_path, model_version="1", flush_rows=150)

    def worker(t: int) -> None:
        for b in range(20):
            w.write_batch([_rec(1000 * t + 10 * b + i, blob="x" * 500) for i in range(10)], timestamp=T0)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    frame = read_inference_log(tmp_path)  # parts + the live WAL
    assert frame.attrs["skipped_lines"] == 0
    assert len(frame) == 8 * 20 * 10 == frame["request_id"].nunique()
    w.close()
    assert len(read_inference_log(tmp_path)) == 1600 and not list(tmp_path.rglob("*.jsonl"))
    assert len(list(tmp_path.rglob("*.parquet"))) == w.parts_written >= 10


def test_two_writers_write_separate_files(tmp_path: Path) -> None:
    a, b = InferenceLogWriter(tmp_path), InferenceLogWriter(tmp_path)
    a.write_batch([_rec(1)], timestamp=T0)
    b.write_batch([_rec(2)], timestamp=T0)
    assert len(list(tmp_path.rglob("*.jsonl"))) == 2  # one live WAL per writer
    a.close()
    b.close()
    assert len(list(tmp_path.rglob("*.parquet"))) == 2
    assert isinstance(read_inference_log(tmp_path), pd.DataFrame)
    assert set(read_inference_log(tmp_path)["request_id"]) == {"r1", "r2"}


def test_a_compaction_while_reading_loses_no_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer's flusher may turn the WAL into a part while a reader lists the day: every row is read once."""
    from mlops_provider.runtime.serving import inference_log as il

    w = InferenceLogWriter(tmp_path, model_version="1", flush_interval_s=0)
    w.write_batch([_rec(i) for i in range(3)], timestamp=T0)
    w.flush()  # one part
    w.write_batch([_rec(i) for i in range(3, 7)], timestamp=T0)  # four rows only in the live WAL
    real = il._read_part

    def read_then_compact(data):  # the flusher runs while the reader is inside the day's partition
        out = real(data)
        w.flush()
        return out

    monkeypatch.setattr(il, "_read_part", read_then_compact)
    frame = read_inference_log(tmp_path)
    assert sorted(frame["request_id"]) == [f"r{i}" for i in range(7)]
    assert not list(tmp_path.rglob("*.jsonl"))  # the compaction did happen mid-read
    w.close()


def test_rows_land_in_the_partition_of_their_own_event_time(tmp_path: Path) -> None:
    w = InferenceLogWriter(tmp_path, model_version="1", flush_interval_s=0)
    w.write_batch([_rec(0, timestamp=T0 - timedelta(days=3), traffic="smoke"), _rec(1)], timestamp=T0)
    w.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["date=2013-05-29", "date=2013-06-01"]
    frame = read_inference_log(tmp_path).set_index("request_id")
    assert frame.loc["r0", "timestamp"] == pd.Timestamp(T0 - timedelta(days=3)) and frame.loc["r0", "traffic"] == "smoke"
    assert frame.loc["r1", "traffic"] == "live"  # the default class
    assert read_inference_log(tmp_path, start=T0 - timedelta(days=1))["request_id"].tolist() == ["r1"]
