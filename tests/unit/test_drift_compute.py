"""Unit tests of runtime/monitoring/drift.py's guards and helpers on small synthetic frames."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mlops_provider.exceptions import DriftError
from mlops_provider.runtime.monitoring.drift import compute_drift, drift_report, sample_reference
from mlops_provider.runtime.monitoring.reference import check_reference
from mlops_provider.runtime.monitoring.reports import report_stem, write_report

NUM, CAT = ["x", "y"], ["c"]


def _frame(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "x": rng.normal(shift, 1.0, n),
        "y": rng.normal(0.0, 1.0, n),
        "c": rng.choice(["a", "b", "c"], n),
    })


def test_empty_current_is_no_traffic_not_an_alarm():
    result = compute_drift(_frame(500, 0), _frame(0, 1), NUM, CAT)
    assert result["status"] == "no_traffic"
    assert result["drift"] is False and result["drifted_columns"] == [] and result["n_current"] == 0
    json.dumps(result)


def test_missing_feature_column_in_current_names_it():
    current = _frame(200, 1).drop(columns=["y"])
    with pytest.raises(DriftError, match=r"current window.*\['y'\]"):
        compute_drift(_frame(500, 0), current, NUM, CAT)


def test_small_window_uses_hypothesis_tests_and_detects_a_shift():
    result = compute_drift(_frame(3000, 0), _frame(300, 1, shift=2.0), NUM, CAT, drift_share=0.3)
    assert result["methods"] == {"num_method": "ks", "cat_method": "chisquare"}
    assert result["columns"]["x"]["drifted"] is True
    assert result["columns"]["y"]["drifted"] is False
    assert result["drifted_columns"] == ["x"]
    assert result["share"] == pytest.approx(1 / 3)
    assert result["drift"] is True  # 1/3 >= 0.3


def test_all_null_column_is_skipped_not_fatal():
    current = _frame(300, 1)
    current["y"] = np.nan
    result = compute_drift(_frame(3000, 0), current, NUM, CAT)
    assert "y" in result["skipped_columns"] and "y" not in result["columns"]
    assert set(result["columns"]) == {"x", "c"}


def test_reference_sampling_is_deterministic_and_bounded():
    ref = _frame(5000, 0)
    a, b = sample_reference(ref, 1000, seed=7), sample_reference(ref, 1000, seed=7)
    assert len(a) == 1000 and a.index.equals(b.index)
    assert not a.index.equals(sample_reference(ref, 1000, seed=8).index)
    assert sample_reference(ref, 10_000) is ref
    r1 = compute_drift(ref, _frame(400, 2), NUM, CAT, max_reference_rows=1000, seed=3)
    r2 = compute_drift(ref, _frame(400, 2), NUM, CAT, max_reference_rows=1000, seed=3)
    assert r1 == r2 and r1["n_reference"] == 1000 and r1["n_reference_total"] == 5000


def test_write_report_is_idempotent_by_stem(tmp_path):
    result, snapshot = drift_report(_frame(2000, 0), _frame(300, 1, shift=1.0), NUM, CAT)
    stem = report_stem("flights_delay", "3", "2013-07-01T00:00:00+00:00", "2013-07-02T00:00:00+00:00")
    assert "/" not in stem and ":" not in stem and "v3" in stem
    p1 = write_report(snapshot, tmp_path, stem, summary=result)
    p2 = write_report(snapshot, tmp_path, stem, summary=result)
    assert p1 == p2
    assert sorted(f.name for f in tmp_path.iterdir()) == [f"{stem}.html", f"{stem}.json"]
    body = json.loads((tmp_path / f"{stem}.json").read_text())
    assert body["summary"]["drifted_columns"] == result["drifted_columns"]
    assert any("ValueDrift" in m["metric_name"] for m in body["evidently"]["metrics"])
    assert "<html" in (tmp_path / f"{stem}.html").read_text()[:2000].lower()
    # no evidently snapshot (no traffic): JSON summary only
    p3 = write_report(None, tmp_path / "empty", stem, summary={"status": "no_traffic"})
    assert p3["html"] is None and json.loads(open(p3["json"]).read())["summary"]["status"] == "no_traffic"


def test_missing_reference_path_names_path_and_version(tmp_path):
    missing = tmp_path / "snapshots" / "flights_delay" / "deadbeef"
    with pytest.raises(DriftError, match=r"deadbeef.*version 7.*does not exist"):
        check_reference(str(missing), model="flights_delay", model_version="7")
    with pytest.raises(DriftError, match="no 'snapshot_path' tag"):
        check_reference(None, model="flights_delay", model_version="7")
