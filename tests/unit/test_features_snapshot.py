"""Content-addressed training snapshots: hashing, idempotency, corruption."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from mlops_provider.exceptions import DataValidationError
from mlops_provider.runtime.features.snapshot import load_snapshot, write_snapshot

FIELDS = {"feature_service": "flights_delay_v1", "label": "arr_delayed", "window": {"start": "a", "end": "b"}}


def frame(n: int = 50) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "event_timestamp": pd.date_range("2013-01-01", periods=n, freq="h", tz="UTC"),
            "origin": ["JFK", "EWR"] * (n // 2),
            "temp": [float(i) / 3 for i in range(n)],
            "wind_gust": [None if i % 3 else 1.5 for i in range(n)],
            "arr_delayed": [i % 2 for i in range(n)],
            "split": ["train"] * (n - 10) + ["validation"] * 10,
        }
    )


def test_same_data_same_path_and_no_overwrite(tmp_path):
    p1, m1 = write_snapshot(frame(), FIELDS, tmp_path)
    mtime = (tmp_path / p1 / "data.parquet").stat().st_mtime_ns
    p2, m2 = write_snapshot(frame(), FIELDS, tmp_path)
    assert p1 == p2 and m1["hash"] == m2["hash"] and m1["created_at"] == m2["created_at"]
    assert (tmp_path / p1 / "data.parquet").stat().st_mtime_ns == mtime
    assert [p.name for p in tmp_path.iterdir()] == [m1["hash"]]  # no temp dirs left behind
    assert m1["rows"] == {"train": 40, "validation": 10}
    assert m1["schema"]["event_timestamp"] == "datetime64[ns, UTC]"


@pytest.mark.parametrize(
    "change",
    [
        lambda df, f: (df.assign(temp=df["temp"] + 1e-9), f),
        lambda df, f: (df.iloc[::-1].reset_index(drop=True), f),
        lambda df, f: (df, {**f, "feature_service": "flights_delay_v2"}),
        lambda df, f: (df.assign(temp=df["temp"].astype("float32")), f),
        lambda df, f: (df.rename(columns={"temp": "temperature"}), f),
    ],
)
def test_any_change_changes_the_hash(tmp_path, change):
    _, base = write_snapshot(frame(), FIELDS, tmp_path)
    df, fields = change(frame(), dict(FIELDS))
    _, other = write_snapshot(df, fields, tmp_path)
    assert other["hash"] != base["hash"]


def test_window_or_created_at_do_not_change_the_hash(tmp_path):
    _, a = write_snapshot(frame(), FIELDS, tmp_path / "a")
    _, b = write_snapshot(frame(), {**FIELDS, "window": {"start": "x", "end": "y"}}, tmp_path / "b")
    assert a["hash"] == b["hash"]


def test_load_roundtrip(tmp_path):
    path, manifest = write_snapshot(frame(), FIELDS, tmp_path)
    df, loaded = load_snapshot(path)
    assert loaded == manifest
    pd.testing.assert_frame_equal(df, frame())
    df2, _ = load_snapshot(f"{path}/manifest.json")
    assert len(df2) == 50


def test_missing_or_corrupt_snapshot_raises(tmp_path):
    with pytest.raises(DataValidationError, match="does not exist"):
        load_snapshot(tmp_path / "nope")
    path, _ = write_snapshot(frame(), FIELDS, tmp_path)
    # data tampered with -> hash mismatch
    df = frame()
    df.loc[0, "temp"] = 99.0
    df.to_parquet(f"{path}/data.parquet", index=False)
    with pytest.raises(DataValidationError, match="corrupt"):
        load_snapshot(path)
    # truncated parquet
    with open(f"{path}/data.parquet", "wb") as fh:
        fh.write(b"PAR1garbage")
    with pytest.raises(DataValidationError, match="corrupt"):
        load_snapshot(path)
    # manifest not JSON
    with open(f"{path}/manifest.json", "w") as fh:
        fh.write("{not json")
    with pytest.raises(DataValidationError, match="not JSON"):
        load_snapshot(path)


def test_write_requires_label_and_feature_service(tmp_path):
    with pytest.raises(DataValidationError, match="feature_service"):
        write_snapshot(frame(), {"label": "arr_delayed"}, tmp_path)
    with pytest.raises(DataValidationError, match="label column"):
        write_snapshot(frame(), {**FIELDS, "label": "nope"}, tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_manifest_is_json_with_contract_fields(tmp_path):
    path, _ = write_snapshot(frame(), {**FIELDS, "split": {"method": "time"}}, tmp_path)
    manifest = json.loads((tmp_path / path / "manifest.json").read_text())
    for key in ("hash", "feature_service", "label", "rows", "split", "window", "schema", "created_at"):
        assert key in manifest
