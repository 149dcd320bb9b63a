"""Performance before and after labels land: CBPE estimates (estimation.py), the sequential detector
(detector.py) and the champion's reference days (live.reference_performance)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mlops_provider.runtime.monitoring import detector as det
from mlops_provider.runtime.monitoring import live
from mlops_provider.runtime.monitoring.estimation import expected_metrics, expected_roc_auc
from mlops_provider.runtime.monitoring.performance import metrics

NOISE = 0.073  # realized daily ROC AUC of the example varies by this much (FIELD-NOTES)


def test_cbpe_matches_realized_metrics_when_probabilities_are_calibrated():
    rng = np.random.default_rng(0)
    p = rng.beta(2, 5, 20_000)
    y = (rng.random(p.size) < p).astype(float)  # labels drawn from the probabilities: calibrated
    est, real = expected_metrics(p), metrics(y, p)
    for k, tol in (("roc_auc", 0.01), ("log_loss", 0.01), ("brier", 0.005), ("accuracy", 0.01)):
        assert est[k] == pytest.approx(real[k], abs=tol), k
    # a miscalibrated model (overconfident) is estimated too optimistically: CBPE needs calibration
    sharp = np.clip((p - 0.5) * 3 + 0.5, 0.001, 0.999)
    assert expected_metrics(sharp)["accuracy"] > metrics(y, sharp)["accuracy"] + 0.02


def test_expected_auc_edge_cases():
    assert expected_roc_auc(np.array([0.3])) is None
    assert expected_roc_auc(np.array([0.0, 0.0, 1.0, 1.0])) == pytest.approx(1.0)
    assert expected_roc_auc(np.full(50, 0.3)) == pytest.approx(0.5)  # one score: every pair is a tie


def _days(values):
    return [{"day": f"d{i:02d}", "value": v, "n": 900} for i, v in enumerate(values)]


@pytest.mark.parametrize("method", ["cusum", "ewma"])
def test_detector_ignores_single_bad_days_and_finds_a_sustained_decline(method):
    settings = det.DetectorSettings(method=method)
    rng = np.random.default_rng(1)
    cal = det.calibrate(rng.normal(0.72, NOISE, 28), settings)
    assert cal["status"] == "ok" and cal["h"] > 0
    one_bad = [0.72] * 10 + [0.72 - 3 * NOISE] + [0.72] * 10  # a single day three sigma down
    assert det.run(_days(one_bad), cal, settings)["alarm_day"] is None
    decline = [0.72] * 5 + [0.72 - 0.10] * 25  # sustained, larger than the shift it is tuned to
    state = det.run(_days(decline), cal, settings)
    assert state["alarm"] is True and state["alarm_day"] is not None and "limit" in state["why"]
    assert int(state["alarm_day"][1:]) > 5  # never before the decline starts
    assert state["days"][-1]["statistic"] > state["limit"]


def test_the_limit_holds_the_false_alarm_rate_on_in_control_series():
    """Fresh reference and fresh in-control days per replicate (parameters are estimated each time)."""
    settings = det.DetectorSettings(horizon_days=30)
    rng = np.random.default_rng(2)
    alarms = 0
    for rep in range(150):
        cal = det.calibrate(rng.normal(0.72, NOISE, 28), settings, seed=rep)
        alarms += det.run(_days(rng.normal(0.72, NOISE, 30)), cal, settings)["alarm_day"] is not None
    assert alarms / 150 <= 0.10, alarms  # asked 5 %; 0.10 leaves room for 150 replicates


def test_detector_without_enough_reference_days_is_uncalibrated():
    settings = det.DetectorSettings(min_reference_days=7)
    cal = det.calibrate([0.7, 0.71, None, 0.69], settings)
    assert cal["status"] == "uncalibrated" and "min_reference_days" in cal["why"]
    state = det.run(_days([0.3] * 20), cal, settings)
    assert state["alarm"] is False and state["status"] == "uncalibrated"
    assert det.calibrate([0.7] * 10, settings)["status"] == "uncalibrated"  # no variation
    assert det.calibrate([0.7] * 10, det.DetectorSettings(method="none"))["status"] == "disabled"
    # log loss: higher is worse
    assert det.shortfall(np.array([0.6]), 0.5, 0.1, "log_loss")[0] == pytest.approx(1.0)


def test_reference_days_are_the_champions_held_out_days_scored_and_cached(tmp_path):
    from mlops_provider.runtime.features.snapshot import write_snapshot

    rng = np.random.default_rng(3)
    ts = pd.date_range("2024-01-01", periods=30 * 200, freq="432s", tz="UTC")  # 30 days, 200 rows a day
    x = rng.normal(0, 1, ts.size)
    y = (rng.random(ts.size) < 1 / (1 + np.exp(-2 * x))).astype(int)
    split = np.where(ts < pd.Timestamp("2024-01-23", tz="UTC"), "train",
                     np.where(ts < pd.Timestamp("2024-01-28", tz="UTC"), "validation", "evaluation"))
    snap, _ = write_snapshot(pd.DataFrame({"event_timestamp": ts, "x": x, "c": "a", "y": y, "split": split}),
                             {"feature_service": "fs", "label": "y"}, tmp_path / "snaps")
    calls = []

    def predictor(frame: pd.DataFrame) -> np.ndarray:
        calls.append(list(frame.columns))
        return 1 / (1 + np.exp(-2 * frame["x"].to_numpy()))

    kw = dict(features={"numeric": ["x"], "categorical": ["c"]}, label="y", cache_dir=str(tmp_path / "cache"),
              predictor=predictor)
    ref = live.reference_performance(None, "m", "3", snap, **kw)
    assert ref["status"] == "ok" and ref["splits"] == ["evaluation", "validation"]
    assert [d["day"] for d in ref["days"]] == [f"2024-01-{d}" for d in range(23, 31)]  # held-out days only
    assert all(0.7 < d["realized"]["roc_auc"] < 0.95 for d in ref["days"])
    assert all(abs(d["estimated"]["roc_auc"] - d["realized"]["roc_auc"]) < 0.08 for d in ref["days"])
    assert calls == [["c", "x"]]
    again = live.reference_performance(None, "m", "3", snap, **kw)  # from the per-version cache
    assert again == json.loads(json.dumps(ref)) and len(calls) == 1

    def broken(frame):
        raise RuntimeError("model cannot load")

    gone = live.reference_performance(None, "m", "4", snap, **{**kw, "predictor": broken})
    assert gone["status"] == "unavailable" and "cannot load" in gone["why"] and gone["days"] == []


def test_outcomes_join_by_the_label_partitions_request_columns_when_no_key_is_set(tmp_path):
    from mlops_provider.exceptions import DriftError
    from mlops_provider.runtime.monitoring.performance import join_outcomes

    ts = pd.date_range("2024-01-01", periods=4, freq="h", tz="UTC")
    labels = pd.DataFrame({"event_timestamp": ts, "origin": ["A", "B", "A", "B"], "hour": [0, 1, 2, 3],
                           "y": [1, 0, 1, 0]})
    (tmp_path / "labels").mkdir()
    labels.to_parquet(tmp_path / "labels" / "month=2024-01.parquet")
    keys = live.default_join_keys(str(tmp_path / "labels"), "y", None)
    assert keys == ["origin", "hour"]  # every column but the timestamp and the label
    requests = pd.DataFrame({"timestamp": ts - pd.Timedelta(minutes=30), "origin": ["A", "B", "A", "B"],
                             "hour": [0.0, 1.0, 2.0, 3.0], "prediction": [0.9, 0.1, 0.8, 0.2]})
    joined = join_outcomes(requests, labels, label="y", keys=keys)
    assert joined["y"].tolist() == [1, 0, 1, 0]  # 0.0 in the log matches 0 in the labels
    with pytest.raises(DriftError, match="no join key"):
        join_outcomes(requests, labels, label="y", keys=[])  # the empty default used to fail with an IndexError
    assert live.default_join_keys(str(tmp_path / "none"), "y", None) == []
