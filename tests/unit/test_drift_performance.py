"""Unit tests of live performance with delayed labels (runtime/monitoring/performance.py) on synthetic traffic."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from mlops_provider.exceptions import DriftError
from mlops_provider.runtime.monitoring.performance import (
    compare_variants,
    join_outcomes,
    metrics,
    performance_report,
    read_labels,
)

KEYS = ["origin", "tailnum", "sched_dep_hour"]


def _traffic(
    n: int, seed: int, skill: float = 2.0, start: str = "2013-07-01", noise: float = 0.0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(inference log rows, label rows): the outcome lands 3 h after the request, keyed by entity."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-1.5 * signal))).astype(int)
    ts = pd.Timestamp(start, tz="UTC") + pd.to_timedelta(np.sort(rng.integers(0, 3 * 86_400, n)), unit="s")
    log = pd.DataFrame(
        {
            "timestamp": ts,
            "request_id": [f"r{i}" for i in range(n)],
            "origin": rng.choice(["JFK", "LGA", "EWR"], n),
            "tailnum": [f"N{i:05d}" for i in range(n)],
            "sched_dep_hour": rng.integers(5, 23, n).astype(float),  # logged as float, labels carry int
            "prediction": 1 / (1 + np.exp(-skill * (signal + noise * rng.normal(size=n)))),
        }
    )
    labels = pd.DataFrame(
        {
            "event_timestamp": ts + pd.Timedelta(hours=3),
            "origin": log["origin"],
            "tailnum": log["tailnum"],
            "sched_dep_hour": log["sched_dep_hour"].astype(int),
            "arr_delayed": y,
        }
    )
    return log, labels


def test_metrics_match_sklearn_and_one_class_is_not_an_error():
    log, labels = _traffic(2000, 0)
    m = metrics(labels["arr_delayed"], log["prediction"], with_bins=True)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(labels["arr_delayed"], log["prediction"]))
    assert m["log_loss"] == pytest.approx(log_loss(labels["arr_delayed"], log["prediction"]), rel=1e-6)
    assert 0 <= m["ece"] < 0.1 and sum(b["n"] for b in m["calibration"]) == 2000
    one = metrics(np.zeros(50), np.full(50, 0.2))
    assert (
        one["roc_auc"] is None
        and "one class" in one["note"]
        and one["log_loss"] == pytest.approx(-np.log(0.8))
    )


def test_join_by_keys_and_time_and_by_request_id():
    log, labels = _traffic(500, 1)
    joined = join_outcomes(log, labels, label="arr_delayed", keys=KEYS, time_tolerance_hours=6)
    assert len(joined) == 500
    assert (
        joined.set_index("request_id")["arr_delayed"] == labels.set_index(log["request_id"])["arr_delayed"]
    ).all()
    # an outcome 3 h later is outside a 1 h tolerance; an outcome before the request never matches
    assert join_outcomes(log, labels, label="arr_delayed", keys=KEYS, time_tolerance_hours=1).empty
    early = labels.assign(event_timestamp=labels["event_timestamp"] - pd.Timedelta(hours=6))
    assert join_outcomes(log, early, label="arr_delayed", keys=KEYS, time_tolerance_hours=24).empty
    by_id = labels.assign(request_id=log["request_id"]).iloc[:100]
    assert len(join_outcomes(log, by_id, label="arr_delayed", keys=KEYS)) == 100
    with pytest.raises(DriftError, match=r"join key\(s\) \['gate'\].*inference log"):
        join_outcomes(log, labels.assign(gate=1), label="arr_delayed", keys=["gate"])


def test_report_flags_a_drop_beyond_the_bound_per_day_and_slice():
    log, labels = _traffic(3000, 2, skill=0.3, noise=2.0)  # a weak model: AUC ~0.6, badly calibrated
    baseline = {"roc_auc": 0.80, "log_loss": 0.50}
    rep = performance_report(
        log,
        labels,
        label="arr_delayed",
        baseline=baseline,
        join_keys=KEYS,
        time_tolerance_hours=6,
        slices=["origin", "nope"],
        max_roc_auc_drop=0.05,
    )
    assert rep["status"] == "ok" and rep["n_labelled"] == 3000 and rep["degraded"] is True
    assert any("ROC AUC" in r for r in rep["reasons"]) and rep["roc_auc_drop"] > 0.05
    assert sorted(rep["per_day"]) == ["2013-07-01", "2013-07-02", "2013-07-03"]
    assert set(rep["per_slice"]["origin"]) == {"JFK", "LGA", "EWR"} and "skipped" in rep["per_slice"]["nope"]
    assert rep["experiment"] is None  # no champion/challenger columns: skipped cleanly
    good, labels2 = _traffic(3000, 3, skill=1.5)
    ok = performance_report(good, labels2, label="arr_delayed", baseline={"roc_auc": 0.75}, join_keys=KEYS)
    assert ok["degraded"] is False and ok["reasons"] == []


def test_no_traffic_no_labels_too_few_labels_and_one_class():
    log, labels = _traffic(300, 4)
    kw = {"label": "arr_delayed", "baseline": {"roc_auc": 0.9, "log_loss": 0.1}, "join_keys": KEYS}
    assert performance_report(log.iloc[0:0], labels, **kw)["status"] == "no_traffic"
    assert performance_report(log, labels.iloc[0:0], **kw)["status"] == "no_labels"
    few = performance_report(log, labels.iloc[:50], **kw)
    assert few["status"] == "insufficient_labels" and few["degraded"] is False and few["n_labelled"] == 50
    one = performance_report(log, labels.assign(arr_delayed=0), **{**kw, "baseline": {"roc_auc": 0.9}})
    assert one["status"] == "one_class" and one["overall"]["roc_auc"] is None
    assert one["degraded"] is False  # AUC undefined is not a drop


def test_champion_vs_challenger_shadow_and_split():
    log, labels = _traffic(4000, 5, skill=0.4)
    rng = np.random.default_rng(0)
    signal = np.log(log["prediction"] / (1 - log["prediction"])) / 0.4
    shadow = log.assign(challenger_prediction=1 / (1 + np.exp(-1.5 * signal)))  # the better model
    joined = join_outcomes(shadow, labels, label="arr_delayed", keys=KEYS)
    res = compare_variants(joined, label="arr_delayed", n_boot=200)
    assert res["mode"].startswith("shadow") and res["n"] == 4000
    # same ranking, better calibrated: AUC ties, log loss must favour the challenger
    assert res["p_challenger_better_log_loss"] == 1.0
    assert res["p_challenger_better_auc"] == 0.5 and res["winner"] == "inconclusive"
    noisy = log.assign(
        challenger_prediction=np.clip(log["prediction"] + rng.normal(0, 0.3, len(log)), 0.01, 0.99)
    )
    worse = compare_variants(
        join_outcomes(noisy, labels, label="arr_delayed", keys=KEYS), label="arr_delayed", n_boot=200
    )
    assert worse["winner"] == "champion" and worse["delta_roc_auc"] < 0
    split = joined.drop(columns=["challenger_prediction"]).assign(
        variant=np.where(np.arange(len(joined)) % 10 == 0, "challenger", "champion")
    )
    split.loc[split["variant"] == "challenger", "prediction"] = 0.5  # a useless challenger
    res = compare_variants(split, label="arr_delayed", n_boot=200)
    assert res["mode"].startswith("split") and res["winner"] == "champion"
    assert res["n"] == {"champion": 3600, "challenger": 400}


def test_read_labels_reads_partitions_and_names_a_bad_one(tmp_path):
    _, labels = _traffic(200, 6)
    (tmp_path / "labels").mkdir()
    labels.to_parquet(tmp_path / "labels" / "month=2013-07.parquet", index=False)
    got = read_labels(tmp_path / "labels", label="arr_delayed", keys=KEYS, start="2013-07-02T00:00:00+00:00")
    assert 0 < len(got) < 200 and got["event_timestamp"].min() >= pd.Timestamp("2013-07-02", tz="UTC")
    assert read_labels(tmp_path / "nowhere", label="arr_delayed", keys=KEYS).empty
    labels.drop(columns=["arr_delayed"]).to_parquet(
        tmp_path / "labels" / "month=2013-08.parquet", index=False
    )
    with pytest.raises(DriftError, match="month=2013-08.parquet lacks 'arr_delayed'"):
        read_labels(tmp_path / "labels", label="arr_delayed", keys=KEYS)
