"""Gate building blocks without a registry: evaluation split, leakage window, metrics, behavioral tests,
slices, the model card."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_provider.exceptions import ConfigError, DataValidationError, GateInputError
from mlops_provider.runtime.features.snapshot import (
    add_evaluation_split,
    load_snapshot,
    split_evaluation,
    training_window,
    write_snapshot,
)
from mlops_provider.runtime.gate import behavioral
from mlops_provider.runtime.gate.checks import build_checks
from mlops_provider.runtime.gate.evaluation_set import overlaps
from mlops_provider.runtime.gate.slices import slice_checks, slice_table
from mlops_provider.runtime.metrics import (
    all_metrics,
    bootstrap_intervals,
    expected_calibration_error,
    roc_points,
)


def frame(days: int = 30, per_day: int = 24, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ts = pd.date_range("2013-03-01", periods=days * per_day, freq="h", tz="UTC")
    x = rng.normal(size=len(ts))
    df = pd.DataFrame(
        {
            "event_timestamp": ts,
            "origin": rng.choice(["EWR", "JFK", "LGA"], len(ts)),
            "tailnum": rng.choice(["N1", "N2", "N3"], len(ts)),
            "x": x,
            "y": (x + rng.normal(scale=1.0, size=len(ts)) > 0).astype("int64"),
        }
    )
    validation_start = ts.max().floor("D") + pd.Timedelta(days=1) - pd.Timedelta(days=10)
    df["split"] = np.where(df["event_timestamp"] >= validation_start, "validation", "train")
    return df


MANIFEST = {
    "feature_service": "fs",
    "label": "y",
    "split": {"method": "time", "validation_days": 10},
    "window": {"start": "2013-03-01T00:00:00+00:00", "end": "2013-03-30T23:00:00+00:00"},
}


def test_evaluation_split_is_the_last_days_after_every_training_row(tmp_path: Path) -> None:
    df = frame()
    out, fields = split_evaluation(df, MANIFEST, 4)
    ev = out[out["split"] == "evaluation"]
    assert ev["event_timestamp"].min() == pd.Timestamp("2013-03-27", tz="UTC")
    assert len(ev) == 4 * 24 and fields["rows"] == {"train": 20 * 24, "validation": 6 * 24, "evaluation": 96}
    seen = out[out["split"] != "evaluation"]["event_timestamp"].max()
    assert seen < ev["event_timestamp"].min()
    assert (
        fields["split"]["training_end"] == "2013-03-27T00:00:00+00:00"
        and fields["split"]["validation_days"] == 6
    )
    start, end, inclusive = training_window(fields)
    assert end == pd.Timestamp("2013-03-27", tz="UTC") and inclusive is False
    # immutable, content-addressed: the same input gives the same snapshot path and hash
    src, _ = write_snapshot(df, MANIFEST, tmp_path / "scratch")
    a, man_a = add_evaluation_split(src, 4, tmp_path / "snapshots")
    b, man_b = add_evaluation_split(src, 4, tmp_path / "snapshots")
    assert a == b and man_a["hash"] == man_b["hash"] and len(list((tmp_path / "snapshots").iterdir())) == 1
    data, manifest = load_snapshot(a)  # verifies the hash
    assert manifest["rows"]["evaluation"] == 96 and set(data["split"]) == {
        "train",
        "validation",
        "evaluation",
    }
    # training code reads only train / validation: the same rows as before the evaluation split
    assert (data["split"] == "train").sum() == (df["split"] == "train").sum()


def test_evaluation_split_refuses_empty_sides() -> None:
    with pytest.raises(DataValidationError, match="empty side"):
        split_evaluation(frame(), MANIFEST, 10)  # the whole validation window: no validation left
    with pytest.raises(DataValidationError, match="reach into the train split"):
        split_evaluation(frame(), MANIFEST, 15)


def test_overlap_of_the_evaluation_window_with_a_training_window() -> None:
    window = {
        "start": pd.Timestamp("2013-01-01", tz="UTC"),
        "end": pd.Timestamp("2013-02-01", tz="UTC"),
        "end_inclusive": False,
    }
    t = pd.Timestamp
    assert not overlaps(window, t("2013-02-01", tz="UTC"), t("2013-02-07", tz="UTC"))  # right after
    assert overlaps(window, t("2013-01-25", tz="UTC"), t("2013-02-07", tz="UTC"))
    assert not overlaps(window, t("2012-12-01", tz="UTC"), t("2012-12-07", tz="UTC"))  # before
    legacy = {**window, "end_inclusive": True}  # a snapshot without an evaluation split: its whole window
    assert overlaps(legacy, t("2013-02-01", tz="UTC"), t("2013-02-07", tz="UTC"))
    assert not overlaps(None, t("2013-01-25", tz="UTC"), t("2013-02-07", tz="UTC"))


def test_metrics_match_scikit_learn() -> None:
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    p = np.clip(0.3 * y + rng.random(500) * 0.7, 0, 1).round(2)  # ties included
    m = all_metrics(y, p)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert m["pr_auc"] == pytest.approx(average_precision_score(y, p))
    assert m["brier"] == pytest.approx(brier_score_loss(y, p))
    ece, table = expected_calibration_error(y, p, 10)
    assert 0 <= ece <= 1 and sum(b["n"] for b in table) == 500
    perfect = expected_calibration_error(np.array([0, 1] * 50), np.full(100, 0.5), 10)[0]
    assert perfect == pytest.approx(0.0)
    ci = bootstrap_intervals(
        y, {"challenger": p, "champion": p[::-1].copy()}, samples=50, confidence=0.9, seed=0
    )
    lo, hi = ci["challenger"]["roc_auc"]
    assert lo < m["roc_auc"] < hi and ci["delta"]["roc_auc"][0] < ci["delta"]["roc_auc"][1]


def test_checks_use_each_metric_direction_and_name_unknown_keys() -> None:
    champ = {"roc_auc": 0.70, "pr_auc": 0.5, "log_loss": 0.50, "brier": 0.2}
    chal = {"roc_auc": 0.698, "pr_auc": 0.5, "log_loss": 0.52, "brier": 0.2}
    checks = {
        c["name"]: c
        for c in build_checks(
            chal, champ, "roc_auc", {"log_loss": 0.6}, {"roc_auc": 0.005, "log_loss": 0.01}
        )
    }
    assert checks["regression.roc_auc"]["passed"] and checks["regression.roc_auc"]["bound"] == pytest.approx(
        0.695
    )
    assert not checks["regression.log_loss"]["passed"] and checks["regression.log_loss"]["direction"] == "<="
    assert checks["floor.log_loss"]["passed"]  # a ceiling for a lower-is-better metric
    with pytest.raises(ConfigError, match="gate.max_regression.*unknown metric 'f1'"):
        build_checks(chal, champ, "roc_auc", {}, {"f1": 0.1})


def predict_x(frame: pd.DataFrame) -> np.ndarray:
    """A 'model' that uses x (monotone increasing) and ignores everything else."""
    return 1 / (1 + np.exp(-frame["x"].to_numpy(dtype=float)))


def test_behavioral_tests_invariance_directional_minimum_functionality() -> None:
    x = frame()[["origin", "tailnum", "x"]]
    inv = behavioral.run_test(
        {
            "name": "tail",
            "kind": "invariance",
            "column": "tailnum",
            "values": ["N9", "N8"],
            "tolerance": 1e-9,
            "min_pass_rate": 1.0,
            "rows": 200,
        },
        x,
        predict_x,
    )
    assert inv["passed"] and inv["value"] == 1.0 and inv["rows"] == 200
    moved = behavioral.run_test(
        {
            "name": "x",
            "kind": "invariance",
            "column": "x",
            "set": 3.0,
            "tolerance": 0.01,
            "min_pass_rate": 1.0,
        },
        x,
        predict_x,
    )
    assert not moved["passed"] and moved["failures"]
    up = behavioral.run_test(
        {
            "name": "up",
            "kind": "directional",
            "column": "x",
            "add": 0.5,
            "expect": "not_lower",
            "tolerance": 0.0,
            "min_pass_rate": 1.0,
        },
        x,
        predict_x,
    )
    down = behavioral.run_test(
        {
            "name": "down",
            "kind": "directional",
            "column": "x",
            "add": 0.5,
            "expect": "not_higher",
            "tolerance": 0.0,
            "min_pass_rate": 0.5,
        },
        x,
        predict_x,
    )
    assert up["passed"] and up["mean_shift"] > 0 and not down["passed"] and down["value"] == 0.0
    mf = behavioral.run_test(
        {
            "name": "cases",
            "kind": "minimum_functionality",
            "min_pass_rate": 1.0,
            "cases": [
                {"name": "high", "input": {"x": 4.0}, "min_probability": 0.9, "max_probability": 1.0},
                {
                    "name": "low",
                    "input": {"x": -4.0, "origin": "JFK"},
                    "min_probability": 0.5,
                    "max_probability": 1.0,
                },
            ],
        },
        x,
        predict_x,
    )
    assert mf["value"] == 0.5 and not mf["passed"] and mf["failures"][0]["case"] == "low"
    with pytest.raises(ConfigError, match="'nope' is not in the evaluation set"):
        behavioral.run_test({"name": "n", "kind": "invariance", "column": "nope", "set": 1}, x, predict_x)
    with pytest.raises(ConfigError, match="'add' needs a numeric column"):
        behavioral.run_test(
            {"name": "n", "kind": "directional", "column": "origin", "add": 1.0, "expect": "not_lower"},
            x,
            predict_x,
        )


def test_slices_report_small_ones_and_refuse_empty_declared_ones() -> None:
    df = frame()
    x, side = df[["x"]], df[["origin"]]
    y = df["y"].to_numpy()
    p = predict_x(x)
    spec = {"column": "origin", "metric": "roc_auc", "max_regression": 0.01, "min_rows": 200}
    table = slice_table(spec, side, x, y, p, p * 0.5 + 0.25)  # same ranking: no regression
    assert {r["value"] for r in table} == {"EWR", "JFK", "LGA"} and all(r["judged"] for r in table)
    checks = slice_checks(spec, table, bootstrap=False)
    assert len(checks) == 3 and all(c["passed"] for c in checks)
    assert slice_checks(spec, table, bootstrap=True) == []  # no champion: no regression checks
    small = slice_table({**spec, "min_rows": 10_000}, side, x, y, p, None)
    assert not any(r["judged"] for r in small) and "min_rows" in small[0]["reason"]
    with pytest.raises(GateInputError, match=r"origin=\['BOS'\] has no rows"):
        slice_table({**spec, "values": ["EWR", "BOS"]}, side, x, y, p, None)


def test_model_card_renders_every_section(tmp_path: Path) -> None:
    from mlops_provider.runtime.gate.model_card import write_model_card

    df = frame()
    y = df["y"].to_numpy()
    p = predict_x(df[["x"]])
    metrics = all_metrics(y, p)
    verdict = {
        "model": "m",
        "decision": "reject",
        "bootstrap": False,
        "primary_metric": "roc_auc",
        "failed": ["x"],
        "evaluated_at": "2026-01-01T00:00:00+00:00",
        "challenger": {
            "version": "2",
            "run_id": "r",
            "metrics": metrics,
            "ci": {"roc_auc": [0.6, 0.8]},
            "training_window": {"start": "2013-01-01", "end": "2013-02-01"},
        },
        "champion": {"version": "1", "metrics": metrics, "ci": {}},
        "delta": {"metrics": {k: 0.0 for k in metrics}, "ci": {"roc_auc": [-0.01, 0.01]}},
        "evaluation_set": {
            "split": "evaluation",
            "snapshot_hash": "abcdef0123456789ff",
            "rows": 10,
            "positives": 4,
            "window": {"start": "a", "end": "b"},
        },
        "checks": [{"name": "x", "value": math.nan, "bound": 0.5, "passed": False, "direction": ">="}],
        "slices": [
            {
                "column": "origin",
                "value": "EWR",
                "rows": 5,
                "metric": "roc_auc",
                "challenger": 0.7,
                "champion": 0.7,
                "judged": True,
            }
        ],
        "behavioral": [
            {
                "name": "behavioral.t",
                "test": "invariance",
                "value": 1.0,
                "bound": 1.0,
                "rows": 3,
                "mean_shift": 0.0,
            }
        ],
        "importance": [{"feature": "x", "importance": 0.2}],
        "roc": {"challenger": roc_points(y, p), "champion": roc_points(y, p)},
        "calibration": {"challenger": expected_calibration_error(y, p)[1]},
    }
    files = write_model_card(verdict, tmp_path)
    md = files["markdown"].read_text()
    for part in (
        "# Model card — m v2",
        "REJECT",
        "abcdef0123456789",
        "[0.6000, 0.8000]",
        "## Slices",
        "origin=EWR",
        "## Behavioral tests",
        "Permutation feature importance",
        "**FAIL**",
        "![roc]",
    ):
        assert part in md, part
    html = files["html"].read_text()
    assert html.count("data:image/png;base64,") == 2 and "<table>" in html and "<script" not in html
