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


DEST = {"BOS": ("America/New_York", 75), "ORD": ("America/Chicago", 150), "LAX": ("America/Los_Angeles", 380)}


def synthetic_flights(seed: int = 0, n: int = 3000) -> pd.DataFrame:
    """Raw-flight-like rows: scheduled departure (UTC, local date parts), destination, scheduled arrival
    (HHMM local at the destination), arrival delay (some cancelled)."""
    rng = np.random.default_rng(seed)
    sched = pd.Timestamp("2013-01-01", tz="UTC") + pd.to_timedelta(rng.integers(0, 40 * 24 * 60, n), unit="min")
    time_hour = sched.floor("h")
    local = sched.tz_convert("America/New_York")
    dest = rng.choice(list(DEST), n)
    arrival = [(s + pd.Timedelta(minutes=DEST[d][1])).tz_convert(DEST[d][0]) for s, d in zip(sched, dest, strict=True)]
    arr_delay = rng.normal(10, 30, n).round()
    arr_delay[rng.random(n) < 0.05] = np.nan  # cancelled
    return pd.DataFrame(
        {
            "time_hour": time_hour,
            "minute": (sched - time_hour).total_seconds() // 60,
            "year": local.year, "month": local.month, "day": local.day,
            "dest": dest,
            "sched_arr_time": [a.hour * 100 + a.minute for a in arrival],
            "carrier": rng.choice(["UA", "AA", "B6"], n),
            "arr_delay": arr_delay,
        }
    )


def _arrival(flights: pd.DataFrame) -> pd.Series:
    """The actual arrival instant, computed independently of the transform: departure + block time + delay
    (the synthetic block times are known)."""
    sched = flights["time_hour"] + pd.to_timedelta(flights["minute"], unit="min")
    block = flights["dest"].map({d: m for d, (_, m) in DEST.items()})
    return sched + pd.to_timedelta(block, unit="min") + pd.to_timedelta(flights["arr_delay"], unit="min")


def test_outcome_known_is_the_actual_arrival_in_utc(transforms):
    flights = synthetic_flights()
    known, truth = transforms.outcome_known_utc(flights), _arrival(flights)
    assert known.isna().equals(flights["arr_delay"].isna())
    assert (known.dropna() == truth.dropna()).all()  # across zones, DST and midnight
    odd = flights.assign(dest="XXX")  # a destination whose zone is unknown: never known, never counted
    assert transforms.outcome_known_utc(odd).isna().all()


def test_carrier_stats_count_only_outcomes_known_in_the_7_days_before_d(transforms):
    flights = synthetic_flights()
    days = pd.date_range("2013-01-01", "2013-02-15", freq="D", tz="UTC")
    stats = transforms.carrier_stats_for_days(flights, days)
    assert len(stats) > 0
    arrival = _arrival(flights)
    for row in stats.itertuples():
        d = row.event_timestamp
        window = flights[
            (flights.carrier == row.carrier)
            & (arrival >= d - pd.Timedelta(days=7))
            & (arrival < d)  # arrived (outcome known) before the feature's timestamp
        ]
        assert row.carrier_flights_7d == len(window)
        assert row.carrier_delay_rate_7d == pytest.approx((window.arr_delay > 15).mean())
        assert row.carrier_mean_arr_delay_7d == pytest.approx(window.arr_delay.mean())


def test_a_flight_arriving_after_the_feature_timestamp_never_contributes(transforms):
    """Even a flight scheduled days before D, once delayed past D, is not in the stats of D (the former
    "scheduled before D-1" rule counted it: a margin, not a guarantee); it counts from the next day on."""
    flights = synthetic_flights(seed=1)
    d = pd.Timestamp("2013-01-20", tz="UTC")
    base = transforms.carrier_stats_for_days(flights, pd.DatetimeIndex([d]))
    sched = flights["time_hour"] + pd.to_timedelta(flights["minute"], unit="min")
    late = flights.copy()
    pick = late.index[(sched < d - pd.Timedelta(days=2)) & (sched > d - pd.Timedelta(days=3))
                      & late["arr_delay"].notna()][:5]
    late.loc[pick, "arr_delay"] = 3 * 24 * 60.0  # three days late: arrives after D
    assert (_arrival(late).loc[pick] >= d).all()
    after = transforms.carrier_stats_for_days(late, pd.DatetimeIndex([d]))
    assert not after.equals(base)  # they left the stats of D (which they had counted in) ...
    without = transforms.carrier_stats_for_days(flights.drop(index=pick), pd.DatetimeIndex([d]))
    pd.testing.assert_frame_equal(after, without)  # ... as if they did not exist
    # and changing anything arriving after D never changes the stats of D
    never = flights.copy()
    never.loc[_arrival(flights) >= d, "arr_delay"] += 500.0
    pd.testing.assert_frame_equal(transforms.carrier_stats_for_days(never, pd.DatetimeIndex([d])), base)
    # once landed it counts: in the stats of the day after its arrival
    day_after = (_arrival(late).loc[pick].max() + pd.Timedelta(days=1)).floor("D")
    counted = transforms.carrier_stats_for_days(late, pd.DatetimeIndex([day_after])).set_index("carrier")
    absent = transforms.carrier_stats_for_days(flights.drop(index=pick), pd.DatetimeIndex([day_after]))
    extra = counted["carrier_flights_7d"] - absent.set_index("carrier")["carrier_flights_7d"]
    assert extra.sum() == len(pick)


def test_real_2013_stats_never_use_a_flight_that_had_not_arrived(transforms):
    from mlops_provider.examples.flights.data import load_table

    flights = load_table("flights")
    flights = flights[flights.month.isin([2, 3])].reset_index(drop=True)
    days = pd.date_range("2013-03-01", "2013-03-31", freq="D", tz="UTC")
    stats = transforms.carrier_stats_for_days(flights, days)
    known = transforms.outcome_known_utc(flights)
    for row in stats.sample(40, random_state=0).itertuples():
        d = row.event_timestamp
        mine = flights[(flights.carrier == row.carrier) & (known >= d - pd.Timedelta(days=7)) & (known < d)]
        assert row.carrier_flights_7d == len(mine)
    # the old rule's hole: in 2013 some flights land more than 24 h after their scheduled departure, so
    # "scheduled before D-1" could count a flight that had not arrived by D
    year = load_table("flights")
    late = transforms.outcome_known_utc(year) - transforms.scheduled_departure_utc(year)
    assert (late > pd.Timedelta(hours=24)).sum() > 0


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
    flights["hour"] = 5
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
