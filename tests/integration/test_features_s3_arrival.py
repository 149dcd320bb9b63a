"""DataArrivalTrigger on an S3 prefix, against a real moto S3 server on loopback."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from conftest_features_s3 import bucket, moto_s3  # noqa: F401 - fixtures

from mlops_provider.triggers.data_arrival import DataArrivalTrigger, Watermark

PREFIX = "landing/flights_delay/"


def _trigger(tmp_path: Path, bucket_name: str, **kw) -> DataArrivalTrigger:
    opts = {"poll_interval": 0.01, "settle_seconds": 0, "batch_files": 1, "batch_seconds": 0,
            "state_path": str(tmp_path / "wm.json"), **kw}
    return DataArrivalTrigger(path=f"s3://{bucket_name}/{PREFIX}", pattern="*.parquet", **opts)


def _events(trig: DataArrivalTrigger, wait: float = 1.5, first: float | None = 30.0) -> list:
    """Every event the trigger fires until it stays quiet for ``wait`` seconds (the triggerer resumes
    it after each one). ``first``: the longest wait for the first event (the first scan builds the S3
    client, seconds on a loaded machine); ``None`` = ``wait`` (when no event is expected)."""

    async def go():
        agen = trig.run()
        out = []
        try:
            while True:
                timeout = first if (first is not None and not out) else wait
                out.append(await asyncio.wait_for(agen.__anext__(), timeout))
        except TimeoutError:
            return out
        finally:
            await agen.aclose()

    return asyncio.run(go())


def test_s3_prefix_new_changed_zero_byte_and_restart(tmp_path, moto_s3, bucket):  # noqa: F811
    url = f"s3://{bucket}/{PREFIX}"
    jan = moto_s3.put(bucket, PREFIX + "flights_2013_01.parquet", b"jan v1")
    empty = moto_s3.put(bucket, PREFIX + "weather_2013_01.parquet", b"")
    moto_s3.put(bucket, PREFIX + "notes.txt", b"ignored: pattern")
    moto_s3.put(bucket, PREFIX + "sub/deep.parquet", b"ignored: not directly under the prefix")
    moto_s3.put(bucket, PREFIX + ".hidden.parquet", b"ignored: hidden")

    (ev,) = _events(_trigger(tmp_path, bucket))
    assert ev.payload["path"] == url
    assert ev.payload["files"] == [jan] and ev.payload["count"] == 1
    assert ev.payload["skipped"] == [empty]                      # 0-byte: reported, not processed
    size, etag = ev.payload["fingerprints"][jan].split(":")
    assert size == "6" and etag == moto_s3.client.head_object(Bucket=bucket, Key=PREFIX + "flights_2013_01.parquet")[
        "ETag"].strip('"')
    # the watermark (key -> size:etag) was persisted after the event, the 0-byte object included
    seen = json.loads((tmp_path / "wm.json").read_text())["seen"]
    assert set(seen) == {jan, empty}

    # restart: nothing replayed, nothing loops; re-putting identical bytes keeps (size, etag): still nothing
    moto_s3.put(bucket, PREFIX + "flights_2013_01.parquet", b"jan v1")
    assert _events(_trigger(tmp_path, bucket), wait=2, first=None) == []

    # a changed object (new etag) and a new one are emitted together, once
    moto_s3.put(bucket, PREFIX + "flights_2013_01.parquet", b"jan v2")
    feb = moto_s3.put(bucket, PREFIX + "flights_2013_02.parquet", b"feb")
    (ev2,) = _events(_trigger(tmp_path, bucket))
    assert ev2.payload["files"] == sorted([jan, feb]) and ev2.payload["skipped"] == []
    assert _events(_trigger(tmp_path, bucket), wait=2, first=None) == []

    # the 0-byte object rewritten with content now lands
    moto_s3.put(bucket, PREFIX + "weather_2013_01.parquet", b"weather")
    (ev3,) = _events(_trigger(tmp_path, bucket))
    assert ev3.payload["files"] == [empty]


def test_s3_batch_of_only_zero_byte_objects_fires_nothing(tmp_path, moto_s3, bucket):  # noqa: F811
    empty = moto_s3.put(bucket, PREFIX + "flights_2013_03.parquet", b"")
    trig = _trigger(tmp_path, bucket)
    assert _events(trig, wait=5, first=None) == []
    assert json.loads(Path(trig.state_path).read_text())["seen"] == {empty: "0:" + trig.scan()[empty].split(":")[1]}


def test_s3_coalescing_n_files_or_t_seconds(tmp_path, moto_s3, bucket):  # noqa: F811
    trig = _trigger(tmp_path, bucket, settle_seconds=2, batch_files=3, batch_seconds=10)
    wm = Watermark(trig.state_path)
    pending: dict = {}
    a = moto_s3.put(bucket, PREFIX + "flights_2013_01.parquet", b"a")
    assert trig.poll_once(wm, pending, 0.0) is None          # not settled yet
    b = moto_s3.put(bucket, PREFIX + "flights_2013_02.parquet", b"b")
    assert trig.poll_once(wm, pending, 2.5) is None          # 1 settled < 3 files
    assert trig.poll_once(wm, pending, 5.0) is None          # 2 settled, oldest waited 5 < 10 s
    batch = trig.poll_once(wm, pending, 10.5)                # oldest waited >= batch_seconds
    assert sorted(batch) == [a, b]
    # N files: three settled objects fire at once without waiting batch_seconds
    trig2 = _trigger(tmp_path / "two", bucket, settle_seconds=0, batch_files=3, batch_seconds=1000)
    wm2 = Watermark(trig2.state_path)
    c = moto_s3.put(bucket, PREFIX + "flights_2013_03.parquet", b"c")
    assert sorted(trig2.poll_once(wm2, {}, 0.0)) == [a, b, c]


def test_missing_bucket_prefix_is_empty_not_an_error(tmp_path, moto_s3, bucket):  # noqa: F811
    trig = DataArrivalTrigger(path=f"s3://{bucket}/nothing-here/", state_path=str(tmp_path / "wm.json"))
    assert trig.poll_once(Watermark(trig.state_path), {}, 0.0) is None


def test_watermark_under_an_s3_storage_root_survives_a_triggerer_on_another_host(tmp_path, moto_s3, bucket):  # noqa: F811
    """storage.root on S3 puts the watermark there: a trigger rebuilt from its serialized kwargs (another
    triggerer host, nothing local) replays nothing, and sees the next file once."""
    state = f"s3://{bucket}/pipelines/state/flights_delay_arrival_watermark.json"
    trig = _trigger(tmp_path, bucket, state_path=state)
    classpath, kwargs = trig.serialize()
    assert kwargs["state_path"] == state and kwargs["aws_conn_id"] == "aws_default"
    jan = moto_s3.put(bucket, PREFIX + "flights_2013_01.parquet", b"jan")
    (ev,) = _events(trig)
    assert ev.payload["files"] == [jan]
    assert set(json.loads(moto_s3.client.get_object(Bucket=bucket, Key=state.split("/", 3)[3])["Body"].read())[
        "seen"]) == {jan}
    assert not list(tmp_path.iterdir())  # nothing written locally

    again = DataArrivalTrigger(**kwargs)
    assert _events(again, wait=2, first=None) == []
    feb = moto_s3.put(bucket, PREFIX + "flights_2013_02.parquet", b"feb")
    (ev2,) = _events(DataArrivalTrigger(**kwargs))
    assert ev2.payload["files"] == [feb]
    # an S3 watermark needs the store: refusing is better than treating it as "nothing seen"
    with pytest.raises(ValueError, match="object store"):
        Watermark(state)
