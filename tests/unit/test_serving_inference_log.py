"""Inference log: JSONL writer (per-process file, per-day partition, thread-safe) and reader."""

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

from mlops_provider.runtime.inference_log import InferenceLogWriter, read_inference_log

T0 = datetime(2013, 6, 1, 23, 59, tzinfo=UTC)


def _rec(i: int, **kw: object) -> dict:
    return {"request_id": f"r{i}", "origin": "JFK", "carrier": "UA", "tailnum": "N1", "temp": 60.0 + i,
            "sched_dep_hour": 7, "prediction": 0.1 * (i % 10), **kw}


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
        w.write_batch([_rec(2)], timestamp=T0 + timedelta(minutes=2))  # next UTC day
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.jsonl"))
    assert [f.split("/")[0] for f in files] == ["date=2013-06-01", "date=2013-06-02"]
    assert files[0].split("/")[1] == f"{w.worker_id}.jsonl"
    lines = (tmp_path / files[0]).read_text().splitlines()
    first = json.loads(lines[1])  # strict JSON: NaN became null, numpy scalars plain numbers
    assert first["temp"] is None and first["plane_year"] == 2004.0
    assert first["model_version"] == "3" and first["bento_tag"] == "m_service:v3-abc"

    frame = read_inference_log(tmp_path)
    assert list(frame["request_id"]) == ["r0", "r1", "r2"]
    assert frame["timestamp"].is_monotonic_increasing
    assert math.isnan(frame.loc[1, "temp"]) and frame.loc[2, "temp"] == 62.0
    assert frame["prediction"].dtype == "float64"


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
        fh.write('{"request_id": "torn", "timestamp": "2013-06-01T23:59:00+00:00", "predic\n')  # killed writer
        fh.write("[1, 2]\n")  # not an object
        fh.write('{"request_id": "nots", "timestamp": "yesterday"}\n')  # bad timestamp
        fh.write("\n")  # blank lines are not errors
    (tmp_path / "date=garbage").mkdir()
    (tmp_path / "date=garbage" / "x.jsonl").write_text("{}\n")  # not a partition: ignored
    with caplog.at_level(logging.WARNING):
        frame = read_inference_log(tmp_path)
    assert list(frame["request_id"]) == ["r0", "r1"]
    assert frame.attrs["skipped_lines"] == 3
    assert "Skipped 3 corrupt line(s)" in caplog.text


def test_concurrent_batches_never_interleave(tmp_path: Path) -> None:
    w = InferenceLogWriter(tmp_path, model_version="1")

    def worker(t: int) -> None:
        for b in range(20):
            w.write_batch([_rec(1000 * t + 10 * b + i, blob="x" * 500) for i in range(10)], timestamp=T0)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.close()
    frame = read_inference_log(tmp_path)
    assert frame.attrs["skipped_lines"] == 0
    assert len(frame) == 8 * 20 * 10 == frame["request_id"].nunique()
    assert len(list(tmp_path.rglob("*.jsonl"))) == 1


def test_two_writers_write_separate_files(tmp_path: Path) -> None:
    a, b = InferenceLogWriter(tmp_path), InferenceLogWriter(tmp_path)
    a.write_batch([_rec(1)], timestamp=T0)
    b.write_batch([_rec(2)], timestamp=T0)
    a.close()
    b.close()
    assert len(list(tmp_path.rglob("*.jsonl"))) == 2
    assert isinstance(read_inference_log(tmp_path), pd.DataFrame)
    assert set(read_inference_log(tmp_path)["request_id"]) == {"r1", "r2"}
