from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from mlops_provider.triggers.data_arrival import DataArrivalTrigger, Watermark


def _trigger(tmp_path: Path, **kw) -> DataArrivalTrigger:
    return DataArrivalTrigger(
        path=str(tmp_path / "landing"), pattern="*.parquet", state_path=str(tmp_path / "wm.json"),
        poll_interval=0.01, settle_seconds=0, batch_files=1, batch_seconds=0, **kw,
    )


def test_serialize_round_trip(tmp_path: Path) -> None:
    trig = _trigger(tmp_path, )
    path, kwargs = trig.serialize()
    assert path == "mlops_provider.triggers.data_arrival.DataArrivalTrigger"
    assert kwargs == {
        "path": str(tmp_path / "landing"), "pattern": "*.parquet", "state_path": str(tmp_path / "wm.json"),
        "poll_interval": 0.01, "settle_seconds": 0.0, "batch_files": 1, "batch_seconds": 0.0,
    }
    assert DataArrivalTrigger(**kwargs).serialize() == (path, kwargs)


def _first_event(trig: DataArrivalTrigger, timeout: float = 5.0):
    """The first event; then let the trigger resume (as the triggerer does) so it commits its watermark."""

    async def go():
        agen = trig.run()
        try:
            event = await asyncio.wait_for(agen.__anext__(), timeout)
            try:
                await asyncio.wait_for(agen.__anext__(), 0.3)
                raise AssertionError("a second event fired although nothing new landed")
            except TimeoutError:
                pass
            return event
        finally:
            await agen.aclose()

    return asyncio.run(go())


def test_emits_new_files_once_and_survives_restart(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "flights_2013_01.parquet").write_bytes(b"x" * 10)
    (landing / "notes.txt").write_text("ignored: pattern")
    (landing / ".hidden.parquet").write_text("ignored: hidden")
    (landing / "weather_2013_01.parquet.tmp").write_text("ignored: in progress")
    ev = _first_event(_trigger(tmp_path))
    assert ev.payload["files"] == [str(landing / "flights_2013_01.parquet")]
    # the watermark was committed after the event: a restarted trigger sees nothing new ...
    trig = _trigger(tmp_path)
    wm = Watermark(trig.state_path)
    assert trig.poll_once(wm, {}, time.monotonic()) is None
    # ... until a new file lands or an old one changes
    (landing / "flights_2013_02.parquet").write_bytes(b"y")
    target = landing / "flights_2013_01.parquet"
    target.write_bytes(b"changed content")
    os.utime(target, ns=(time.time_ns(), time.time_ns() + 10_000_000))
    ev2 = _first_event(_trigger(tmp_path))
    assert ev2.payload["files"] == sorted([str(landing / "flights_2013_02.parquet"), str(target)])


def test_settle_and_coalesce(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    trig = DataArrivalTrigger(path=str(landing), pattern="*", state_path=str(tmp_path / "wm.json"),
                              settle_seconds=2, batch_files=3, batch_seconds=10)
    wm = Watermark(trig.state_path)
    pending: dict = {}
    (landing / "a").write_text("1")
    assert trig.poll_once(wm, pending, 0.0) is None          # not settled yet
    (landing / "b").write_text("2")
    assert trig.poll_once(wm, pending, 2.5) is None          # a settled, b not; 1 < batch_files
    assert trig.poll_once(wm, pending, 5.0) is None          # 2 settled < 3, oldest waited 5 < 10
    batch = trig.poll_once(wm, pending, 10.5)                # oldest waited >= batch_seconds
    assert sorted(Path(f).name for f in batch) == ["a", "b"]


def test_file_still_being_written_restarts_its_clock(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    trig = DataArrivalTrigger(path=str(landing), pattern="*", state_path=str(tmp_path / "wm.json"),
                              settle_seconds=2, batch_files=1, batch_seconds=0)
    wm = Watermark(trig.state_path)
    pending: dict = {}
    f = landing / "big"
    f.write_text("part")
    assert trig.poll_once(wm, pending, 0.0) is None
    f.write_text("part + more")
    assert trig.poll_once(wm, pending, 1.9) is None          # changed: clock restarts at 1.9
    assert trig.poll_once(wm, pending, 3.0) is None
    assert trig.poll_once(wm, pending, 4.0) == {str(f): pending[str(f)][0]}


def test_missing_directory_is_not_an_error(tmp_path: Path) -> None:
    trig = _trigger(tmp_path)
    assert trig.poll_once(Watermark(trig.state_path), {}, 0.0) is None


def test_serialize_s3_variant_exactly(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    trig = DataArrivalTrigger(path="s3://landing-bucket/flights/", pattern="*.parquet", aws_conn_id="aws_lake",
                              poll_interval=30, settle_seconds=0, batch_files=10, batch_seconds=60)
    path, kwargs = trig.serialize()
    assert path == "mlops_provider.triggers.data_arrival.DataArrivalTrigger"
    # the default watermark of an S3 prefix is local (a prefix has no place for it), keyed by the URL
    state = kwargs["state_path"]
    assert state.startswith(str(tmp_path / "home" / "state" / "arrival" / "s3-")) and state.endswith(".json")
    assert kwargs == {
        "path": "s3://landing-bucket/flights/", "pattern": "*.parquet", "state_path": state,
        "poll_interval": 30.0, "settle_seconds": 0.0, "batch_files": 10, "batch_seconds": 60.0,
        "aws_conn_id": "aws_lake",
    }
    assert DataArrivalTrigger(**kwargs).serialize() == (path, kwargs)
    other = DataArrivalTrigger(path="s3://landing-bucket/other/").serialize()[1]["state_path"]
    assert other != state


def test_zero_byte_local_file_is_skipped_not_emitted(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "flights_2013_01.parquet").write_bytes(b"x")
    (landing / "weather_2013_01.parquet").write_bytes(b"")
    ev = _first_event(_trigger(tmp_path))
    assert ev.payload["files"] == [str(landing / "flights_2013_01.parquet")]
    assert ev.payload["skipped"] == [str(landing / "weather_2013_01.parquet")]
