"""The demo's replay clock (``mlops_provider.examples.flights.replay``) shows nothing from the future.

Each replayed day's requests are that day's flights with their scheduled departure as event time; the
carrier statistics written at a day's midnight count only outcomes known before it; the labels written for a
day are exactly the outcomes of the flights that departed on it (the transform's label frame); the named fault
changes one column of the served rows and nothing else; the demo's per-day line names the decision.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
DAY = pd.Timestamp("2013-07-03", tz="UTC")


@pytest.fixture(scope="module")
def replay():
    from mlops_provider.examples.flights.replay import FlightsReplay

    return FlightsReplay(REPO)


def test_requests_are_the_days_flights_with_their_event_time(replay) -> None:
    req = replay.requests(DAY)
    assert len(req) > 800  # a July weekday from NYC
    assert req["event_timestamp"].min() >= DAY and req["event_timestamp"].max() < DAY + pd.Timedelta(days=1)
    assert req["request_id"].is_unique and req["event_timestamp"].is_monotonic_increasing
    labels = replay.labels(DAY)
    keys = ["event_timestamp", "origin", "carrier", "tailnum"]
    # every request has its outcome in the day's label partition (joined later by the monitor), and only then
    merged = req.merge(labels[[*keys, "arr_delayed"]].drop_duplicates(keys), on=keys, how="left")
    assert merged["arr_delayed"].notna().all()


def test_carrier_stats_at_midnight_count_only_outcomes_known_before(replay) -> None:
    stats = replay.carrier_stats(DAY)
    assert (stats["event_timestamp"] == DAY).all() and len(stats) >= 10
    tf = replay.tf
    flights = replay.flights.drop(columns="_dep")
    known = tf.outcome_known_utc(flights)
    done = flights[(known >= DAY - pd.Timedelta(days=7)) & (known < DAY)]
    ua = done[done["carrier"] == "UA"]
    row = stats[stats["carrier"] == "UA"].iloc[0]
    assert row["carrier_flights_7d"] == len(ua)
    assert row["carrier_delay_rate_7d"] == pytest.approx((ua["arr_delay"] > 15).mean())


def test_weather_rows_are_the_days_hours(replay) -> None:
    w = replay.weather_rows(DAY)
    assert set(w["origin"]) == {"EWR", "JFK", "LGA"} and w["event_timestamp"].dt.floor("D").eq(DAY).all()
    assert len(w) == 72


def test_the_named_fault_changes_only_its_column(replay) -> None:
    from mlops_provider.examples.flights.replay import FAULTS

    fault = FAULTS["temp_celsius"]
    w = replay.weather_rows(DAY)
    bad = fault.apply(w)
    assert bad.drop(columns="temp").equals(w.drop(columns="temp"))
    assert bad["temp"].to_numpy() == pytest.approx(((w["temp"] - 32) * 5 / 9).to_numpy())


def test_partitions_are_named_by_day(tmp_path) -> None:
    from mlops_provider.examples.flights.replay import write_partition

    path = write_partition(pd.DataFrame({"a": [1]}), tmp_path / "labels", DAY)
    assert Path(path).name == "day=2013-07-03.parquet" and pd.read_parquet(path)["a"].tolist() == [1]
    assert not list((tmp_path / "labels").glob(".*"))


def test_the_days_line_names_what_was_decided_and_why() -> None:
    from mlops_provider.examples.flights.demo import decision_text, replay_table

    quiet = {"day": "2013-07-02", "ok": 900, "sent": 900, "rows": 900, "n_labelled": 880, "realized_auc": 0.71,
             "estimated_auc": 0.69, "drifted_columns": [], "trigger": False, "drift": False,
             "detector": {"status": "ok", "statistic": 0.4, "limit": 4.1}}
    assert decision_text(quiet) == "no retrain: no drift, detector ok (CUSUM 0.40 < limit 4.10)"
    fired = {**quiet, "day": "2013-07-11", "fault": "temp_celsius", "drifted_columns": ["temp"], "trigger": True,
             "drift": True, "trigger_reasons": ["data drift: temp level_shift 3.1 > 0.4"],
             "policy": {"action": "train", "reason": "drift signal"}, "gate": "reject"}
    text = decision_text(fired)
    assert text.startswith("RETRAIN signal: data drift: temp") and "training policy: train" in text
    table = "\n".join(replay_table([quiet, fired], {"description": "temp in C"}, 60.0))
    assert "1 of 1 without a retrain signal" in table and "fault day 2013-07-11 (temp_celsius): the policy FIRED" in table
