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
from mlops_provider.runtime.gate.checks import comparison_checks, decide, floor_checks, power_statement
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
    validation_start = ts.max() - pd.Timedelta(days=10)  # as the training dataset cuts it: on the data's clock
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
    # cut on the data's own clock: exactly 4 days before the last event (2013-03-30 23:00), not at a midnight
    assert ev["event_timestamp"].min() == pd.Timestamp("2013-03-26 23:00", tz="UTC")
    assert ev["event_timestamp"].max() - ev["event_timestamp"].min() == pd.Timedelta(days=4)
    assert len(ev) == 4 * 24 + 1 and fields["rows"] == {"train": 20 * 24 - 1, "validation": 6 * 24,
                                                        "evaluation": 97}
    seen = out[out["split"] != "evaluation"]["event_timestamp"].max()
    assert seen < ev["event_timestamp"].min()
    assert (
        fields["split"]["training_end"] == "2013-03-26T23:00:00+00:00"
        and fields["split"]["validation_days"] == 6
    )
    start, end, inclusive = training_window(fields)
    assert end == pd.Timestamp("2013-03-26 23:00", tz="UTC") and inclusive is False
    # immutable, content-addressed: the same input gives the same snapshot path and hash
    src, _ = write_snapshot(df, MANIFEST, tmp_path / "scratch")
    a, man_a = add_evaluation_split(src, 4, tmp_path / "snapshots")
    b, man_b = add_evaluation_split(src, 4, tmp_path / "snapshots")
    assert a == b and man_a["hash"] == man_b["hash"] and len(list((tmp_path / "snapshots").iterdir())) == 1
    data, manifest = load_snapshot(a)  # verifies the hash
    assert manifest["rows"]["evaluation"] == 97 and set(data["split"]) == {
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
    champ = {"roc_auc": 0.70, "pr_auc": 0.5, "log_loss": 0.50, "brier": 0.2, "ece": 0.02}
    chal = {"roc_auc": 0.698, "pr_auc": 0.5, "log_loss": 0.52, "brier": 0.2, "ece": 0.02}
    floors = {c["name"]: c for c in floor_checks("binary", chal, {"log_loss": 0.6, "roc_auc": 0.7})}
    assert floors["floor.log_loss"]["passed"] and floors["floor.log_loss"]["direction"] == "<="  # a ceiling
    assert not floors["floor.roc_auc"]["passed"]
    # paired-bootstrap intervals of challenger - champion: the check fails only when the whole interval lies
    # on the worse side of the tolerance
    delta = {"roc_auc": [-0.009, 0.004], "log_loss": [0.011, 0.03], "brier": [-0.001, 0.002], "ece": [0.0, 0.01]}
    checks = {c["name"]: c for c in comparison_checks(
        "binary", chal, champ, delta, primary="roc_auc", guards=["log_loss", "brier", "ece"],
        max_regression={"roc_auc": 0.005, "log_loss": 0.01}, confidence=0.95)}
    assert set(checks) == {"regression.roc_auc", "guard.log_loss", "guard.brier", "guard.ece"}
    r = checks["regression.roc_auc"]  # a higher-is-better metric: the upper end must reach -tolerance
    assert r["passed"] and r["value"] == 0.004 and r["bound"] == -0.005 and r["direction"] == ">="
    g = checks["guard.log_loss"]  # lower-is-better: the lower end must not exceed the tolerance
    assert not g["passed"] and g["value"] == 0.011 and g["bound"] == 0.01 and g["guard"]
    assert "log_loss significantly worse" in g["message"] and "[+0.0110, +0.0300]" in g["message"]
    assert checks["guard.ece"]["passed"]  # [0, 0.01] touches 0: not significantly worse
    # a significant drop of the primary metric beyond the tolerance rejects
    (worse,) = comparison_checks("binary", chal, champ, {"roc_auc": [-0.02, -0.006]}, primary="roc_auc",
                                 guards=[], max_regression={"roc_auc": 0.005}, confidence=0.95)
    assert not worse["passed"]
    with pytest.raises(ConfigError, match="'f1' is not a binary metric"):
        floor_checks("binary", chal, {"f1": 0.1})


def test_better_roc_auc_with_significantly_worse_log_loss_is_rejected_with_that_reason() -> None:
    """The challenger ranks better (higher ROC AUC) but is overconfident: its log loss is significantly worse,
    so the default guards reject it and the reason names the log loss with its interval."""
    from mlops_provider.runtime.gate.verdict import failed_checks_summary, xcom_summary
    from mlops_provider.runtime.metrics import detectable_difference

    rng = np.random.default_rng(7)
    n = 4000
    score = rng.normal(size=n)
    y = (score + rng.normal(scale=1.5, size=n) > 0).astype(np.int64)
    champion = 1 / (1 + np.exp(-0.9 * (score + rng.normal(scale=0.4, size=n))))  # calibrated-ish, noisier
    challenger = 1 / (1 + np.exp(-4.0 * score))  # ranks better, but is far too confident
    chal, champ = all_metrics(y, challenger), all_metrics(y, champion)
    assert chal["roc_auc"] > champ["roc_auc"] and chal["log_loss"] > champ["log_loss"]
    ci = bootstrap_intervals(y, {"challenger": challenger, "champion": champion}, samples=200, confidence=0.95,
                             seed=0)
    checks = floor_checks("binary", chal, {"roc_auc": 0.55}) + comparison_checks(
        "binary", chal, champ, ci["delta"], primary="roc_auc", guards=["log_loss", "brier", "ece"],
        max_regression={"roc_auc": 0.005}, confidence=0.95)
    verdict = {"decision": None, "primary_metric": "roc_auc", "challenger": {"version": "2", "metrics": chal},
               "champion": {"version": "1", "metrics": champ}, "comparison": [
                   {k: c[k] for k in ("metric", "guard", "delta", "ci", "tolerance", "passed", "message")}
                   for c in checks if c["kind"] in ("regression", "guard")]}
    decide(verdict, checks, floors_only=False)
    assert verdict["decision"] == "reject"
    assert "regression.roc_auc" not in verdict["failed"] and "guard.log_loss" in verdict["failed"]
    reason = failed_checks_summary(verdict)
    assert "guard.log_loss: log_loss significantly worse: challenger - champion = +" in reason and "95% CI" in reason
    summary = xcom_summary(verdict)  # the headline shows every guard metric with its interval
    assert {c["metric"] for c in summary["comparison"]} == {"roc_auc", "log_loss", "brier", "ece"}
    assert all(len(c["ci"]) == 2 for c in summary["comparison"])
    # the power statement: 2.80 x the paired standard error at 95 % / 80 %
    se = ci["delta_se"]["roc_auc"]
    statement = power_statement(se, metric="roc_auc", rows=n, confidence=0.95, power=0.8, basis="paired")
    assert statement["mde"] == pytest.approx(2.8016 * se, rel=1e-3)
    assert statement["mde"] == pytest.approx(detectable_difference(se, confidence=0.95, power=0.8))
    assert f"{n} evaluation rows" in statement["statement"]


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
    with pytest.raises(ConfigError, match="'nope' is not a model input"):
        behavioral.run_test({"name": "n", "kind": "invariance", "column": "nope", "set": 1}, x, predict_x)
    # a column that is no model input cannot move the prediction: a config error, not a pass
    with pytest.raises(ConfigError, match="'tailnum' is not a model input.*could never fail"):
        behavioral.run_test({"name": "t", "kind": "invariance", "column": "tailnum", "values": ["N9"]}, x,
                            predict_x, inputs=["origin", "x"])
    # a directional test on an input the model ignores measures exactly zero everywhere: it fails, named
    ignored = behavioral.run_test(
        {"name": "ign", "kind": "directional", "column": "origin", "set": "JFK", "expect": "not_lower",
         "min_pass_rate": 0.5}, x, predict_x, inputs=["origin", "x"])
    assert ignored["value"] == 1.0 and not ignored["passed"] and ignored["insensitive"]
    assert ignored["message"].startswith("model insensitive to origin")
    assert "insensitive" not in up
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


def test_behavioral_tests_per_task() -> None:
    x = frame()[["origin", "x"]]

    def regress(f: pd.DataFrame) -> np.ndarray:  # point prediction then two quantiles
        v = 10 * f["x"].to_numpy(dtype=float)
        return np.c_[v, v - 5, v + 5]

    def classes3(f: pd.DataFrame) -> np.ndarray:  # P(low), P(mid), P(high) moving with x
        z = f["x"].to_numpy(dtype=float)
        e = np.exp(np.c_[-2 * z, np.zeros_like(z), 2 * z])
        return e / e.sum(axis=1, keepdims=True)

    up = behavioral.run_test({"name": "u", "kind": "directional", "column": "x", "add": 0.1, "expect": "not_lower",
                              "tolerance": 0.0, "min_pass_rate": 1.0}, x, regress, task="regression")
    assert up["passed"] and up["mean_shift"] == pytest.approx(1.0)  # the point value, in the label's units
    cases = behavioral.run_test({"name": "c", "kind": "minimum_functionality", "min_pass_rate": 1.0, "cases": [
        {"name": "hi", "input": {"x": 3.0}, "min_value": 25.0, "max_value": 35.0},
        {"name": "lo", "input": {"x": -3.0}, "max_value": -40.0}]}, x, regress, task="regression")
    assert cases["value"] == 0.5 and cases["failures"][0]["case"] == "lo" and cases["cases"]["hi"] == 30.0
    cls = ["low", "mid", "high"]
    high = behavioral.run_test({"name": "h", "kind": "directional", "column": "x", "add": 0.5,
                                "expect": "not_lower", "target_class": "high", "tolerance": 0.0,
                                "min_pass_rate": 1.0}, x, classes3, task="multiclass", classes=cls)
    low = behavioral.run_test({"name": "l", "kind": "directional", "column": "x", "add": 0.5,
                               "expect": "not_lower", "target_class": "low", "tolerance": 0.0,
                               "min_pass_rate": 1.0}, x, classes3, task="multiclass", classes=cls)
    assert high["passed"] and not low["passed"]
    inv = behavioral.run_test({"name": "i", "kind": "invariance", "column": "x", "add": 1e-6, "tolerance": 1e-3,
                               "min_pass_rate": 1.0}, x, classes3, task="multiclass", classes=cls)
    assert inv["passed"]
    mf = behavioral.run_test({"name": "m", "kind": "minimum_functionality", "min_pass_rate": 1.0, "cases": [
        {"name": "a", "input": {"x": 2.0}, "expect_class": "high", "min_probability": 0.9},
        {"name": "b", "input": {"x": -2.0}, "expect_class": "high"}]}, x, classes3, task="multiclass",
        classes=cls)
    assert mf["value"] == 0.5 and mf["cases"]["a"]["prediction"] == "high"
    assert mf["failures"][0]["case"] == "b"


def test_model_card_per_task(tmp_path: Path) -> None:
    from mlops_provider.runtime.gate.model_card import write_model_card
    from mlops_provider.runtime.metrics import confusion_matrix, multiclass_metrics

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    p = rng.dirichlet(np.ones(3), 300)
    classes = ["a", "b", "c"]
    metrics = multiclass_metrics(y, p, classes)
    base = {"model": "m", "decision": "promote", "bootstrap": False, "evaluated_at": "t",
            "challenger": {"version": "2", "metrics": metrics}, "champion": {"version": "1", "metrics": metrics},
            "evaluation_set": {"rows": 300, "class_counts": {"a": 100, "b": 100, "c": 100}},
            "comparison": [{"metric": "log_loss", "guard": False, "delta": 0.001, "ci": [-0.01, 0.012],
                            "tolerance": 0.005, "passed": True}],
            "power": {"metric": "log_loss", "confidence": 0.95, "statement": "with 300 evaluation rows ..."}}
    mc = {**base, "task": "multiclass", "primary_metric": "log_loss", "guard_metrics": ["log_loss", "ece"],
          "confusion": {"classes": classes, "challenger": confusion_matrix(y, p, 3)}}
    files = write_model_card(mc, tmp_path / "mc")
    md = files["markdown"].read_text()
    for part in ("Task: multiclass", "## Confusion matrix", "## Per-class recall", "| b |",
                 "## Comparison with the champion (paired bootstrap, 95% CI", "Power: with 300 evaluation rows",
                 "classes a: 100"):
        assert part in md, part
    assert "confusion" in files
    reg = {**base, "task": "regression", "primary_metric": "rmse", "challenger": {"version": "2", "metrics": {}},
           "residuals": {"challenger": {"predicted": [1.0, 2.0], "residual": [0.5, -0.5]}}}
    files = write_model_card(reg, tmp_path / "reg")
    assert "residuals" in files and "Task: regression" in files["markdown"].read_text()
