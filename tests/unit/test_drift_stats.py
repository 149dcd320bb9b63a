"""Unit tests of the scalable drift engine (runtime/monitoring/statistics.py) and the YAML drift rules."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mlops_provider.config import MonitoringConfig
from mlops_provider.exceptions import DriftError, MonitoredFeatureMissingError
from mlops_provider.runtime.monitoring import statistics as ds
from mlops_provider.runtime.monitoring import window as dw
from mlops_provider.runtime.monitoring.drift import DriftRules, compute_drift

NUM, CAT = ["x", "y"], ["c"]


def _frame(n: int, seed: int, shift: float = 0.0, cats=("a", "b", "c")) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "x": rng.normal(shift, 1.0, n),
            "y": rng.normal(0.0, 1.0, n),
            "c": rng.choice(list(cats), n),
        }
    )


def _write_jsonl(path, frame: pd.DataFrame, start: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ts = pd.Timestamp(start)
    with open(path, "w") as fh:
        for i, rec in enumerate(frame.to_dict("records")):
            rec["timestamp"] = (ts + pd.Timedelta(seconds=i)).isoformat()
            fh.write(json.dumps(rec) + "\n")
        fh.write('{"torn": \n')  # a killed worker's last line


def test_stratified_sample_is_seeded_capped_and_covers_every_stratum():
    strata = np.array(["d1"] * 9000 + ["d2"] * 900 + ["d3"] * 100)
    a = ds.stratified_positions(strata, 1000, seed=3)
    b = ds.stratified_positions(strata, 1000, seed=3)
    assert np.array_equal(a, b) and np.all(np.diff(a) > 0)
    assert 990 <= len(a) <= 1000
    picked = pd.Series(strata[a]).value_counts()
    assert picked["d1"] == 900 and picked["d2"] == 90 and picked["d3"] == 10  # proportional
    assert not np.array_equal(a, ds.stratified_positions(strata, 1000, seed=4))
    assert len(ds.stratified_positions(np.array(["x"] * 10), 1000)) == 10  # below the cap: every row


def test_jsonl_spill_streams_in_chunks_and_filters_the_window(tmp_path, monkeypatch):
    monkeypatch.setattr(dw, "SPILL_CHUNK_ROWS", 64)  # several row groups from a small file
    log = tmp_path / "log"
    _write_jsonl(log / "date=2013-07-01" / "w1.jsonl", _frame(300, 0), "2013-07-01T00:00:00+00:00")
    _write_jsonl(log / "date=2013-07-02" / "w1.jsonl", _frame(50, 1), "2013-07-02T00:00:00+00:00")
    cols = {"x": "float", "y": "float", "c": "string", "absent": "float"}
    win = dw.open_log_window(log, cols, "2013-07-01T00:00:00+00:00", "2013-07-01T00:04:00+00:00", tmp_path)
    assert win.n_rows == 240 and len(win.groups) == 4  # 4 minutes of 1 row/s, 64-row groups
    assert "absent" not in win.columns and {"x", "c", "timestamp"} <= win.columns
    positions = np.array([0, 63, 64, 200, 239])
    assert win.take("x", positions).to_pylist() == pytest.approx(_frame(300, 0)["x"].iloc[positions].tolist())
    whole = dw.open_log_window(log, cols, None, None, tmp_path / "all")
    assert whole.n_rows == 350


def test_streamed_stats_exact_psi_unseen_categories_and_missing_feature(tmp_path):
    ref = ds.reference_stats(_frame(5000, 0), NUM, CAT, max_rows=1000, seed=0, bins=10)
    assert len(ref.sample) == 1000 and ref.n_total == 5000
    same = dw.frame_window(
        _frame(4000, 1).assign(c=lambda d: d["c"].where(d.index % 10 != 0, "zz")), tmp_path
    )
    cur = ds.stream_current(same, ref, NUM, CAT, sample_rows=500, seed=0)
    assert cur.n_total == 4000 and len(cur.sample) <= 500
    assert cur.columns["x"]["psi"] < 0.02 and cur.columns["y"]["psi"] < 0.02
    assert cur.columns["c"]["unseen_values"] == {"zz": 400}
    assert cur.columns["c"]["unseen_share"] == pytest.approx(0.1)
    shifted = ds.stream_current(dw.frame_window(_frame(4000, 2, shift=1.0), tmp_path / "s"), ref, NUM, CAT)
    assert shifted.columns["x"]["psi"] > 0.5
    with pytest.raises(MonitoredFeatureMissingError, match=r"\['y'\]"):
        ds.stream_current(dw.frame_window(_frame(10, 3).drop(columns=["y"]), tmp_path / "m"), ref, NUM, CAT)


def test_reference_stats_cache_round_trip(tmp_path):
    ref = ds.reference_stats(_frame(3000, 0), NUM, CAT, max_rows=800, seed=1)
    ref.key = "k1"
    ref.to_dir(tmp_path / "entry")
    ref.to_dir(tmp_path / "entry")  # idempotent overwrite
    back = ds.ReferenceStats.from_dir(tmp_path / "entry")
    assert back is not None and back.key == "k1" and back.n_total == 3000
    pd.testing.assert_frame_equal(back.sample, ref.sample, check_dtype=False)
    assert back.numeric["x"]["counts"] == ref.numeric["x"]["counts"]
    assert ds.ReferenceStats.from_dir(tmp_path / "nothing") is None


def test_large_window_is_sampled_but_verdict_still_finds_the_shift():
    rules = DriftRules(sample_rows=2000, reference_rows=3000)
    result = compute_drift(_frame(6000, 0), _frame(20_000, 1, shift=0.6), NUM, CAT, rules=rules)
    assert result["n_current"] == 20_000 and result["n_sample"] <= 2000 and result["sampled"] is True
    assert result["methods"] == "evidently-default"  # >= 1000 sampled rows: Evidently's distances
    assert result["drifted_columns"] == ["x"]
    x = result["columns"]["x"]
    assert x["distance"] == x["score"] and x["p_value"] is None and x["psi"] > 0.1


def test_yaml_rules_per_column_method_critical_and_min_columns():
    cfg = MonitoringConfig.parse(
        drift={
            "columns": {"x": {"method": "psi", "threshold": 0.2}, "c": {"max_unseen_share": 0.5}},
            "critical": ["x"],
            "sample_rows": 5000,
        }
    )
    rules = DriftRules.from_config(cfg.drift.model_dump(), cfg.drift_share)
    result = compute_drift(_frame(3000, 0), _frame(3000, 1, shift=1.0), NUM, CAT, rules=rules)
    assert result["columns"]["x"]["method"] == "psi" and result["columns"]["x"]["stattest_threshold"] == 0.2
    assert result["drifted_columns"] == ["x"] and result["share"] == pytest.approx(1 / 3)
    assert result["drift"] is True and any("critical" in r for r in result["reasons"])
    # without the critical rule 1/3 < 0.5 is no drift; two columns required -> still none
    lax = DriftRules(drift_share=0.5, min_drifted_columns=2)
    assert compute_drift(_frame(3000, 0), _frame(3000, 1, shift=1.0), NUM, CAT, rules=lax)["drift"] is False
    with pytest.raises(DriftError, match="unknown drift setting"):
        DriftRules.from_config({"sampel_rows": 10})


def test_unseen_categories_flag_the_column_with_names():
    current = _frame(3000, 1, cats=("a", "b", "c", "NEW"))
    result = compute_drift(_frame(3000, 0), current, NUM, CAT)
    c = result["columns"]["c"]
    assert c["drifted"] is True and c["unseen_flag"] is True and "NEW" in c["unseen_values"]
    assert result["drifted_columns"] == ["c"]


def test_excluded_features_are_reported_but_not_tested():
    rules = DriftRules(exclude=["x"])
    result = compute_drift(_frame(3000, 0), _frame(3000, 1, shift=2.0), NUM, CAT, rules=rules)
    assert result["skipped_columns"] == {"x": "excluded by monitoring.drift.exclude"}
    assert "x" not in result["columns"] and result["drifted_columns"] == [] and result["drift"] is False
