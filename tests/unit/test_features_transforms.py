"""The flights_delay feature pipeline (feature_repo/transforms.py): leakage, labels, idempotency."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_provider.exceptions import DataValidationError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def transforms():
    name = "flights_delay_transforms_unit"
    spec = importlib.util.spec_from_file_location(name, REPO / "feature_repo" / "transforms.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def synthetic_flights(seed: int = 0, n: int = 3000) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    sched = pd.Timestamp("2013-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 40 * 24 * 60, n), unit="min")
    time_hour = sched.floor("h")
    arr_delay = rng.normal(10, 30, n).round()
    arr_delay[rng.random(n) < 0.05] = np.nan  # cancelled
    return pd.DataFrame(
        {
            "time_hour": time_hour,
            "minute": (sched - time_hour).total_seconds() // 60,
            "carrier": rng.choice(["UA", "AA", "B6"], n),
            "arr_delay": arr_delay,
        }
    )


def test_carrier_stats_use_only_flights_scheduled_before_d_minus_1(transforms):
    flights = synthetic_flights()
    days = pd.date_range("2013-01-01", "2013-02-15", freq="D", tz="UTC")
    stats = transforms.carrier_stats_for_days(flights, days)
    assert len(stats) > 0
    sched = flights["time_hour"] + pd.to_timedelta(flights["minute"], unit="min")
    for row in stats.itertuples():
        d = row.event_timestamp
        window = flights[
            (flights.carrier == row.carrier)
            & (sched >= d - pd.Timedelta(days=8))
            & (sched < d - pd.Timedelta(days=1))  # strictly before D-1: every flight has landed by D
            & flights.arr_delay.notna()
        ]
        assert row.carrier_flights_7d == len(window)
        assert row.carrier_delay_rate_7d == pytest.approx((window.arr_delay > 15).mean())
        assert row.carrier_mean_arr_delay_7d == pytest.approx(window.arr_delay.mean())


def test_flights_on_d_minus_1_or_later_never_change_stats_of_d(transforms):
    flights = synthetic_flights(seed=1)
    d = pd.Timestamp("2013-01-20", tz="UTC")
    base = transforms.carrier_stats_for_days(flights, pd.DatetimeIndex([d]))
    late = flights.copy()
    sched = late["time_hour"] + pd.to_timedelta(late["minute"], unit="min")
    late.loc[sched >= d - pd.Timedelta(days=1), "arr_delay"] = 999.0  # disastrous delays on D-1 and after
    after = transforms.carrier_stats_for_days(late, pd.DatetimeIndex([d]))
    pd.testing.assert_frame_equal(base, after)
    # ...while a change strictly before D-1 does change them (the check above can fail)
    early = flights.copy()
    early.loc[sched < d - pd.Timedelta(days=2), "arr_delay"] = 999.0
    assert not transforms.carrier_stats_for_days(early, pd.DatetimeIndex([d])).equals(base)


def test_no_stats_without_history(transforms):
    flights = synthetic_flights()
    stats = transforms.carrier_stats_for_days(flights, pd.DatetimeIndex([pd.Timestamp("2013-01-01", tz="UTC")]))
    assert stats.empty and list(stats.columns)[:2] == ["carrier", "event_timestamp"]


def test_labels_frame_real_january(transforms):
    from mlops_provider.examples.flights.data import load_table

    flights = load_table("flights")
    jan = flights[flights.month == 1]
    labels = transforms.labels_frame(jan)
    assert len(labels) == int(jan.arr_delay.notna().sum())  # cancelled / diverted dropped
    assert list(labels.columns) == [
        "event_timestamp", "origin", "carrier", "tailnum", "sched_dep_hour", "weekday", "month", "distance",
        "arr_delayed",
    ]
    first = labels[(labels.tailnum == "N14228") & (labels.event_timestamp.dt.day == 1)].iloc[0]
    # UA 1545 EWR->IAH scheduled 05:15 New York time on Tuesday 2013-01-01 = 10:15 UTC, arr_delay 11
    assert first.event_timestamp == pd.Timestamp("2013-01-01 10:15", tz="UTC")
    assert (first.sched_dep_hour, first.weekday, first.month, first.arr_delayed) == (5, 1, 1, 0)


def test_build_partitions_idempotent_and_names_checked(tmp_path, transforms):
    from mlops_provider.examples.flights.data import write_landing_planes

    landing = tmp_path / "landing"
    flights = synthetic_flights()
    flights["year"], flights["month"], flights["day"], flights["hour"] = 2013, 1, 1, 5
    flights["tailnum"], flights["origin"], flights["distance"], flights["flight"] = "N1", "JFK", 100, 1
    landing.mkdir()
    flights.to_parquet(landing / "flights_2013_01.parquet")
    files = [str(landing / "flights_2013_01.parquet"), write_landing_planes(landing)]
    a = transforms.build_partitions(files, str(tmp_path / "lake"))
    snap = {p: p.read_bytes() for p in (tmp_path / "lake").rglob("*.parquet")}
    b = transforms.build_partitions(files, str(tmp_path / "lake"))
    assert a == b and {p: p.read_bytes() for p in (tmp_path / "lake").rglob("*.parquet")} == snap
    assert a["months"] == ["2013-01"] and a["rows"]["labels"] == int(flights.arr_delay.notna().sum())
    with pytest.raises(DataValidationError, match="unexpected name"):
        transforms.build_partitions([str(landing / "other.parquet")], str(tmp_path / "lake"))
