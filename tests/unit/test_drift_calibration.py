"""Calibrated drift thresholds (runtime/monitoring/calibration.py, verdict.py) on synthetic daily data: the
statistics, the calibration (chunks, Bonferroni k, the reference-max floor), the false-alarm rate it promises,
the injected faults it must catch on their first day, fixed thresholds where a user sets them."""

from __future__ import annotations

from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest

from mlops_provider.runtime.monitoring import calibration as cal
from mlops_provider.runtime.monitoring.drift import DriftRules, compute_drift, reference_statistics

NUM, CAT = ["temp", "load"], ["site"]
DAY = pd.Timedelta(days=1)


def _days(first: str, n_days: int, rows: int, seed: int) -> pd.DataFrame:
    """Daily windows: ``temp`` has a daily level (weather-like, concentrated within a day), ``load`` is iid,
    ``site`` is one of four categories."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n_days):
        day = pd.Timestamp(first, tz="UTC") + i * DAY
        level = 50 + 15 * np.sin(i / 9) + rng.normal(0, 4)
        frames.append(pd.DataFrame({
            "event_timestamp": day + pd.to_timedelta(np.sort(rng.uniform(0, 86_399, rows)), unit="s"),
            "temp": np.round(level + rng.normal(0, 3, rows), 0),
            "load": rng.gamma(2.0, 2.0, rows),
            "site": rng.choice(["a", "b", "c", "d"], rows, p=[0.4, 0.3, 0.2, 0.1]),
        }))
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return _days("2024-01-01", 90, 400, seed=0)


@pytest.fixture(scope="module")
def rules() -> DriftRules:
    return DriftRules(window_hours=24.0, evidently_report=False)


@pytest.fixture(scope="module")
def ref_stats(reference, rules):
    return reference_statistics(reference, NUM, CAT, rules)


def _judge(reference, day: pd.DataFrame, previous: pd.DataFrame | None, rules) -> dict:
    return compute_drift(reference, day, NUM, CAT, rules=rules, previous=previous)


def test_distances_are_effect_sizes_in_their_natural_range():
    a = np.array([10, 20, 30, 0], dtype=float)
    assert cal.distance("jensenshannon", a, a) == pytest.approx(0.0)
    assert cal.distance("jensenshannon", np.array([1, 0, 0.0]), np.array([0, 0, 1.0])) == pytest.approx(1.0)
    assert cal.distance("hellinger", np.array([1, 0, 0.0]), np.array([0, 0, 1.0])) == pytest.approx(1.0)
    assert cal.distance("psi", a, a) == pytest.approx(0.0) and cal.distance("psi", a, a[::-1]) > 1
    # wasserstein on the quantile bins, in reference standard deviations: one bin of shift = the bin width / std
    widths = np.array([1.0, 1.0, 1.0])
    d = cal.distance("wasserstein", np.array([1, 0, 0, 0.0]), np.array([0, 1, 0, 0.0]), widths=widths, ref_std=2.0)
    assert d == pytest.approx(0.5)
    assert cal.distance("jensenshannon", np.zeros(3), a[:3]) is None  # an empty side: no distance


def test_small_helpers():
    assert cal.stuck(np.array([3.0, 3.0, np.nan, 3.0])) == 1.0 and cal.stuck(np.array([1.0, 2.0])) == 0.0
    assert cal.stuck(np.array([1.0, np.nan])) is None
    assert [cal.natural_hours(h) for h in (0.5, 5, 19.5, 24, 30)] == [1, 6, 24, 24, 48]
    ids = cal.chunk_ids(pd.Series(pd.to_datetime(["2024-01-01T05:00Z", "2024-01-02T00:00Z", None], utc=True)), 24)
    assert ids[1] == ids[0] + 1 and ids[2] == -1
    r, c = cal.categorical_vectors({"a": 3, "b": 1}, 0, {"a": 1, "zz": 2}, 1)
    assert r.tolist() == [3, 1, 0, 0] and c.tolist() == [1, 0, 2, 1]  # seen, then unseen, then nulls


def test_calibration_cuts_the_reference_into_window_chunks(ref_stats):
    c = cal.Calibration.from_dict(ref_stats.calibration)
    assert c is not None and c.status == "ok" and c.n_chunks == 90 and c.chunk_hours == 24
    # numeric: 4 checks, categorical: 2; k: the stricter of the normal quantile of each test's share of the
    # false-alarm rate (Bonferroni) and the k at which the reference's own chunks alarm at most at that rate
    assert c.tests == 2 * 4 + 2
    assert c.k_normal == pytest.approx(NormalDist().inv_cdf(1 - 0.05 / c.tests))
    assert c.k == max(c.k_normal, c.k_reference) and c.reference_false_alarm_rate <= 0.05
    for col, checks in c.thresholds.items():
        for check, t in checks.items():
            assert t["threshold"] >= t["max"] and t["threshold"] >= t["mean"] + c.k * t["std"] - 1e-12, (col, check)
    assert set(c.thresholds["temp"]) == {"distance", "null_share", "stuck", "level_shift"}
    assert set(c.thresholds["site"]) == {"distance", "null_share"}
    # a day of temp is concentrated: its distance to 90 days is large every day, and the threshold knows it
    assert c.thresholds["temp"]["distance"]["mean"] > 5 * c.thresholds["load"]["distance"]["mean"]
    assert ref_stats.sample[cal.CHUNK_COLUMN].nunique() == 90  # the sample keeps its chunk ids (resizing)


def test_heavy_tails_in_the_reference_raise_k_beyond_the_normal_quantile():
    """20 statistics whose chunks have rare large values (rain-like): judged against the others, the chunks
    alarm at the normal (Bonferroni) k far more often than the false-alarm rate; the reference's own k does not."""
    rng = np.random.default_rng(4)
    settings = cal.Settings()
    features = [f"f{i}" for i in range(20)]
    table = {c: {f: {"distance": float(rng.pareto(1.5))} for f in features} for c in range(150)}
    wanted = {f: ["distance"] for f in features}
    k, rate = cal._family_k(table, wanted, settings, rows=400)
    normal = NormalDist().inv_cdf(1 - 0.05 / len(features))
    assert k > normal and rate <= 0.05
    worst = np.max([cal._critical_k(np.array([table[c][f]["distance"] for c in table]), "distance", settings, 400)
                    for f in features], axis=0)
    assert np.mean(worst > normal) > 0.05 and np.mean(worst > k) <= 0.05  # what each k does to the reference


def test_explicit_k_quantile_and_too_few_chunks(reference):
    k3 = reference_statistics(reference, NUM, CAT, DriftRules(window_hours=24, calibration={"method": "std", "k": 3}))
    assert k3.calibration["k"] == 3
    q = reference_statistics(reference, NUM, CAT, DriftRules(window_hours=24, calibration={"method": "quantile"}))
    t = q.calibration["thresholds"]["load"]["distance"]
    assert t["threshold"] <= t["max"]  # an empirical quantile never extrapolates
    few = reference_statistics(reference.iloc[:800], NUM, CAT, DriftRules(window_hours=24))  # 2 days
    assert few.calibration["status"] == "too_few_chunks" and "fixed thresholds decide" in few.calibration["warnings"][0]
    rough = reference_statistics(reference.iloc[:2000], NUM, CAT, DriftRules(window_hours=24))  # 5 days
    assert rough.calibration["status"] == "ok" and "rough" in " ".join(rough.calibration["warnings"])
    none = reference_statistics(reference, NUM, CAT, DriftRules(calibration={"method": "none"}))
    assert none.calibration is None


def test_clean_days_rarely_alarm_and_the_rate_is_what_was_asked(reference, rules):
    """40 fresh days from the same process: the family-wise false-alarm rate asked is 5 %."""
    fresh = _days("2024-04-01", 41, 400, seed=7)
    days = [g for _, g in fresh.groupby(fresh["event_timestamp"].dt.floor("D"))]
    ref = reference_statistics(reference, NUM, CAT, rules)
    alarms = 0
    for prev, day in zip(days[:-1], days[1:], strict=True):
        r = _verdict(ref, day, prev, rules)
        assert r["rule"]["thresholds"] == "calibrated" and r["rule"]["min_drifted_columns"] == 1
        alarms += int(r["drift"])
    assert alarms <= 3, alarms  # 40 days at 5 % -> 2 expected; 4 or more has probability < 15 %


def _verdict(ref, day, prev, rules) -> dict:
    import tempfile

    from mlops_provider.runtime.monitoring.drift import _prepare, evaluate_drift
    from mlops_provider.runtime.monitoring.statistics import stream_current
    from mlops_provider.runtime.monitoring.window import frame_window

    with tempfile.TemporaryDirectory() as tmp:
        win = frame_window(_prepare(day, NUM, CAT).assign(timestamp=day["event_timestamp"].to_numpy()), tmp)
        cur = stream_current(win, ref, NUM, CAT)
    means = {c: float(prev[c].mean()) for c in NUM} if prev is not None else None
    return evaluate_drift(ref, cur, NUM, CAT, rules, previous_means=means)[0]


@pytest.mark.parametrize(
    ("fault", "column", "check"),
    [
        ("unit", "temp", "level_shift"),      # degrees F -> C: still a plausible level, but a jump from yesterday
        ("stuck", "temp", "stuck"),           # a sensor stuck at one value
        ("nulls", "load", "null_share"),      # a null burst
        ("remap", "site", "distance"),        # category codes renamed
    ],
)
def test_injected_faults_are_caught_on_their_first_day(reference, ref_stats, rules, fault, column, check):
    fresh = _days("2024-04-01", 2, 400, seed=11)
    prev, day = (g.copy() for _, g in fresh.groupby(fresh["event_timestamp"].dt.floor("D")))
    if fault == "unit":
        day["temp"] = (day["temp"] - 32) * 5 / 9
    elif fault == "stuck":
        day["temp"] = day["temp"].iloc[0]
    elif fault == "nulls":
        day.loc[day.index[: len(day) // 3], "load"] = np.nan
    else:
        day["site"] = day["site"].map({"a": "A1", "b": "B1", "c": "C1", "d": "D1"})
    r = _verdict(ref_stats, day, prev, rules)
    assert r["drift"] is True and column in r["drifted_columns"], r.get("alarms")
    info = r["columns"][column]
    assert check in info["alarms"] and info["judged_by"] == "calibrated"
    got = info["calibrated"][check]
    assert got["value"] > got["threshold"]
    (line,) = [a for a in r["alarms"] if a.startswith(f"{column}:")]
    assert check.replace("distance", "jensenshannon distance") in line and f"{got['threshold']:.4g}" in line
    assert set(r["drifted_columns"]) == {column}  # nothing else moved


def test_a_column_gone_all_null_is_a_null_burst_not_a_skip(ref_stats, rules):
    fresh = _days("2024-04-01", 1, 400, seed=3)
    fresh["load"] = np.nan
    r = _verdict(ref_stats, fresh, None, rules)
    assert "load" not in r["skipped_columns"] and "null_share" in r["columns"]["load"]["alarms"]


def test_fixed_thresholds_where_the_user_sets_them(reference):
    """A column with its own threshold keeps Evidently's test; method none restores fixed thresholds everywhere."""
    day = _days("2024-04-01", 1, 400, seed=5)
    mixed = DriftRules(window_hours=24, columns={"load": {"method": "ks", "threshold": 0.05}})
    r = compute_drift(reference, day, NUM, CAT, rules=mixed)
    assert r["columns"]["load"]["judged_by"] == "fixed" and r["columns"]["load"]["p_value"] is not None
    assert r["columns"]["temp"]["judged_by"] == "calibrated"
    fixed = compute_drift(reference, day, NUM, CAT, rules=DriftRules(calibration={"method": "none"}))
    assert {v["judged_by"] for v in fixed["columns"].values()} == {"fixed"} and fixed["calibration"] is None
    assert fixed["rule"]["thresholds"] == "fixed" and fixed["rule"]["min_drifted_columns"] is None
    # today's rule on one real-sized day of a concentrated feature: KS calls temp drifted, calibration does not
    assert "temp" in fixed["drifted_columns"] and "temp" not in r["drifted_columns"]


def test_a_small_window_gets_thresholds_recalibrated_at_its_size(reference, ref_stats, rules):
    fresh = _days("2024-04-01", 1, 400, seed=9).sample(60, random_state=0).sort_values("event_timestamp")
    r = _verdict(ref_stats, fresh, None, rules)
    assert r["calibration"]["resized_to"] == 60 and r["calibration"]["n_chunks"] >= 30
    full = cal.Calibration.from_dict(ref_stats.calibration)
    assert full is not None
    # 60 rows are noisier than 400: the distance threshold of the iid feature is higher at that size
    assert r["columns"]["load"]["calibrated"]["distance"]["threshold"] > full.thresholds["load"]["distance"]["threshold"]


def test_yaml_keys_defaults_and_constraints():
    from mlops_provider.config import load_config
    from mlops_provider.specs import DriftSpec, MonitoringSpec

    mon = load_config(Path(__file__).resolve().parents[2] / "dags" / "flights_delay.yaml").monitoring
    c = mon.drift.calibration
    assert (c.method, c.false_alarm_rate, c.statistic, c.checks) == (
        "std", 0.05, "jensenshannon", ["distance", "null_share", "stuck", "level_shift"])
    assert mon.performance.detector.method == "cusum" and mon.performance.lookback_days == 28
    assert mon.retrain_guards.retrain_when == ["drift", "performance"]
    rules = DriftRules.from_config(mon.drift.model_dump(), mon.drift_share)  # what the monitor DAG passes
    assert rules.calibration_settings.enabled and rules.evidently_report is True
    for bad in ({"calibration": {"checks": []}}, {"calibration": {"method": "p-value"}},
                {"calibration": {"false_alarm_rate": 0.7}}, {"calibration": {"statistic": "ks"}}):
        with pytest.raises(ValueError):
            DriftSpec.parse(bad)
    with pytest.raises(ValueError):
        MonitoringSpec.parse({"performance": {"detector": {"method": "page-hinkley"}}})
