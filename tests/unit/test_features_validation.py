"""Data contract rules (runtime.validation + DataValidationOperator) on small frames."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pandas as pd
import pytest

from mlops_provider.exceptions import DataValidationError
from mlops_provider.operators.data_validation import DataValidationOperator
from mlops_provider.runtime.features.contracts import table_for_file, validate_files, validate_frame

CONTRACT = {
    "tables": {
        "flights": {
            "min_rows": 3,
            "unique": ["carrier", "flight"],
            "no_future": "time_hour",
            "columns": {
                "carrier": {"dtype": "str", "nullable": False, "allowed": ["UA", "AA", "B6"]},
                "flight": {"dtype": "int", "nullable": False, "min": 1, "max": 9999},
                "arr_delay": {"dtype": "float", "nullable": True, "min": -180, "max": 2000},
                "time_hour": {"dtype": "datetime", "nullable": False},
            },
        },
        "weather": {"min_rows": 1, "columns": {"temp": {"dtype": "float"}}},
        "planes": {"min_rows": 1, "columns": {"tailnum": {"dtype": "str", "nullable": False}}},
    }
}
NOW = datetime(2024, 1, 1, tzinfo=UTC)


def good_flights(n: int = 4) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "carrier": ["UA", "AA", "B6", "UA"][:n],
            "flight": [1, 2, 3, 4][:n],
            "arr_delay": [1.0, None, -3.0, 20.0][:n],
            "time_hour": pd.to_datetime(["2013-01-01 10:00"] * n, utc=True),
        }
    )


def rules(failures):
    return {(f["rule"], f["column"]) for f in failures}


def check(df):
    return validate_frame(df, CONTRACT["tables"]["flights"], table="flights", file="f.parquet", now=NOW)


def test_conforming_frame_has_no_failures():
    assert check(good_flights()) == []


def test_missing_column():
    assert ("missing_column", "arr_delay") in rules(check(good_flights().drop(columns=["arr_delay"])))


def test_wrong_dtype():
    df = good_flights()
    df["flight"] = ["1", "2", "3", "4"]
    failures = check(df)
    assert ("dtype", "flight") in rules(failures)
    f = next(f for f in failures if f["rule"] == "dtype")
    assert f["examples"] and f["examples"][0]["flight"] == "1"


def test_nulls_in_non_nullable_column():
    df = good_flights()
    df.loc[1, "carrier"] = None
    failures = check(df)
    f = next(f for f in failures if f["rule"] == "not_null")
    assert f["column"] == "carrier" and f["count"] == 1 and len(f["examples"]) == 1


def test_out_of_range_and_not_allowed():
    df = good_flights()
    df.loc[0, "arr_delay"] = 5000.0
    df.loc[2, "flight"] = 0
    df.loc[3, "carrier"] = "ZZ"
    got = rules(check(df))
    assert {("max", "arr_delay"), ("min", "flight"), ("allowed", "carrier")} <= got


def test_future_timestamp():
    df = good_flights()
    df.loc[2, "time_hour"] = pd.Timestamp("2030-01-01", tz="UTC")
    f = next(f for f in check(df) if f["rule"] == "no_future")
    assert f["count"] == 1 and f["examples"][0]["time_hour"].startswith("2030-01-01")


def test_duplicate_key():
    df = pd.concat([good_flights(), good_flights().iloc[[0]]], ignore_index=True)
    f = next(f for f in check(df) if f["rule"] == "unique")
    assert f["count"] == 1 and len(f["examples"]) == 2


def test_too_few_rows():
    assert ("min_rows", None) in rules(check(good_flights(2)))


def test_every_violation_reported_with_at_most_five_examples():
    df = pd.concat([good_flights()] * 5, ignore_index=True)  # 20 rows, 16 duplicates
    df["carrier"] = "ZZ"
    failures = check(df)
    assert {"unique", "allowed"} <= {f["rule"] for f in failures}
    assert all(len(f["examples"]) <= 5 for f in failures)
    assert next(f for f in failures if f["rule"] == "allowed")["count"] == 20


def test_table_recognised_from_file_name():
    tables = ["flights", "weather", "planes"]
    assert table_for_file("/x/flights_2013_01.parquet", tables) == "flights"
    assert table_for_file("weather_2013_02.parquet", tables) == "weather"
    assert table_for_file("planes.parquet", tables) == "planes"
    assert table_for_file("airports.parquet", tables) is None


def test_validate_files_writes_reports_and_raises_with_failures(tmp_path):
    bad = good_flights()
    bad.loc[0, "flight"] = None
    good_flights().to_parquet(tmp_path / "flights_2013_01.parquet")
    bad.to_parquet(tmp_path / "flights_2013_02.parquet")
    pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "airports.parquet")
    files = [str(tmp_path / n) for n in ("flights_2013_01.parquet", "flights_2013_02.parquet", "airports.parquet")]
    with pytest.raises(DataValidationError) as err:
        validate_files(files, CONTRACT, tmp_path / "reports", name="landing", now=NOW)
    assert {"not_null", "unknown_table"} <= {f["rule"] for f in err.value.failures}
    assert "flights_2013_02.parquet" in str(err.value)
    report = json.loads((tmp_path / "reports" / "landing.json").read_text())
    assert report["passed"] is False and len(report["failures"]) == len(err.value.failures)
    assert "FAILED" in (tmp_path / "reports" / "landing.html").read_text()


def test_operator_passes_and_returns_report(tmp_path):
    good_flights().to_parquet(tmp_path / "flights_2013_01.parquet")
    op = DataValidationOperator(
        task_id="validate", data_paths=str(tmp_path), contract=CONTRACT, report_dir=str(tmp_path / "r"), name="x"
    )
    from types import SimpleNamespace

    pushed: dict = {}
    ti = SimpleNamespace(dag_id="m__features", run_id="manual__2013-01-01T00:00:00+00:00",
                         xcom_push=lambda key, value: pushed.__setitem__(key, value))
    out = op.execute(context={"ti": ti})
    assert out["passed"] is True
    assert out["files"][0]["table"] == "flights" and out["files"][0]["rows"] == 4
    # one report per run (the next landing does not overwrite it), opened by the "Validation report" link
    name = "x__manual__2013-01-01T00_00_00_00_00"
    assert json.loads((tmp_path / "r" / f"{name}.json").read_text())["passed"] is True
    assert pushed["validation_report_url"].endswith(f"/mlops/models/m/reports/validation/{name}.html")


def test_real_january_meets_the_yaml_contract(tmp_path, repo_root):
    yaml = pytest.importorskip("yaml")
    from mlops_provider.examples.flights.data import write_landing_month, write_landing_planes

    contract = {"tables": yaml.safe_load((repo_root / "dags" / "flights_delay.yaml").read_text())["features"]["contract"]}
    files = write_landing_month(tmp_path, 2013, 1) + [write_landing_planes(tmp_path)]
    report = validate_files(files, contract, tmp_path / "reports")
    assert report["passed"] and {f["table"] for f in report["files"]} == {"flights", "weather", "planes"}


# ---- time zones: a naive timestamp is a wall-clock time in an unknown zone -------------------------------
TZ_SPEC = {"columns": {"ts": {"dtype": "datetime", "nullable": False}, "x": {"dtype": "float"}}}


def _naive(n: int = 3) -> pd.DataFrame:
    return pd.DataFrame({"ts": pd.to_datetime(["2013-03-10 01:30", "2013-03-10 02:30", "2013-11-03 01:30"][:n]),
                         "x": [1.0, 2.0, 3.0][:n]})


def test_naive_datetimes_without_a_declared_zone_fail_naming_the_column_and_the_fix():
    failures = validate_frame(_naive(), TZ_SPEC, table="t", file="t.parquet", now=NOW)
    (f,) = [f for f in failures if f["rule"] == "timezone"]
    assert f["column"] == "ts" and "tz: America/New_York" in f["message"] and f["count"] == 3
    aware = _naive().assign(ts=lambda d: d["ts"].dt.tz_localize("UTC"))
    assert validate_frame(aware, TZ_SPEC, table="t", file="t.parquet", now=NOW) == []
    unknown = {"columns": {"ts": {"dtype": "datetime", "tz": "Mars/Olympus"}}}
    assert ("timezone", "ts") in rules(validate_frame(_naive(), unknown, table="t", file="t.parquet", now=NOW))


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_a_declared_zone_is_converted_to_utc_when_read(tmp_path, fmt):
    from mlops_provider.runtime.features.contracts import read_landed

    path = tmp_path / f"t.{fmt}"
    _naive().to_parquet(path) if fmt == "parquet" else _naive().to_csv(path, index=False)
    declared = {"ts": {"dtype": "datetime", "tz": "America/New_York"}, "x": {"dtype": "float"}}
    df = read_landed(path, declared)
    assert str(df["ts"].dt.tz) == "UTC"
    # 01:30 EST = 06:30 UTC; 02:30 on the spring-forward night does not exist -> moved forward to 03:00 EDT;
    # 01:30 on the fall-back night happens twice -> its first occurrence (EDT, 05:30 UTC)
    assert df["ts"].dt.strftime("%m-%d %H:%M").tolist() == ["03-10 06:30", "03-10 07:00", "11-03 05:30"]
    assert validate_frame(df, {"columns": declared}, table="t", file=str(path), now=NOW) == []
    # without a declared zone nothing is assumed: left naive for the rule (CSV text is no longer read as UTC) ...
    plain = read_landed(path, {"ts": {"dtype": "datetime"}})
    assert plain["ts"].dt.tz is None
    # ... and a strict read (what a transform does) refuses it
    with pytest.raises(DataValidationError, match=r"'ts'.*naive.*tz: America/New_York"):
        read_landed(path, {"ts": {"dtype": "datetime"}}, strict=True)


def test_csv_offsets_are_kept_and_converted(tmp_path):
    from mlops_provider.runtime.features.contracts import read_landed

    path = tmp_path / "t.csv"
    path.write_text("ts,x\n2013-06-01T08:00:00-04:00,1\n2013-06-01T12:00:00+00:00,2\n")
    df = read_landed(path, {"ts": {"dtype": "datetime"}}, strict=True)
    assert df["ts"].tolist() == [pd.Timestamp("2013-06-01T12:00Z")] * 2


def test_validate_files_fails_on_naive_timestamps_before_anything_is_written(tmp_path):
    path = tmp_path / "flights_2013_01.parquet"
    good_flights().assign(time_hour=lambda d: d["time_hour"].dt.tz_localize(None)).to_parquet(path)
    with pytest.raises(DataValidationError, match="timezone"):
        validate_files([str(path)], CONTRACT, tmp_path / "reports", now=NOW)
    local = {"tables": {"flights": {**CONTRACT["tables"]["flights"], "columns": {
        **CONTRACT["tables"]["flights"]["columns"], "time_hour": {"dtype": "datetime", "nullable": False,
                                                                  "tz": "America/New_York"}}}}}
    assert validate_files([str(path)], local, tmp_path / "reports", now=NOW)["passed"] is True


# ---- non-finite numbers ---------------------------------------------------------------------------------
def test_infinite_numbers_are_rejected_with_or_without_bounds_unless_allowed():
    import numpy as np

    spec = {"columns": {"bounded": {"dtype": "float", "min": -10, "max": 10},
                        "free": {"dtype": "float"},
                        "strict": {"dtype": "float", "nullable": False},
                        "allowed": {"dtype": "float", "max": 10, "allow_non_finite": True}}}
    df = pd.DataFrame({"bounded": [1.0, np.inf, -np.inf], "free": [np.inf, 1.0, None],
                       "strict": [1.0, np.nan, 2.0], "allowed": [np.inf, 1.0, 2.0]})
    failures = validate_frame(df, spec, table="t", file="t.parquet", now=NOW)
    got = {(f["rule"], f["column"]): f["count"] for f in failures}
    assert got == {("non_finite", "bounded"): 2, ("non_finite", "free"): 1, ("not_null", "strict"): 1}
    assert "allow_non_finite: true" in next(f["message"] for f in failures if f["rule"] == "non_finite")
