"""Monitoring per task type (binary | multiclass | regression) on synthetic inference logs and delayed labels.

The champion's task comes from its model version's tags (mlops.task, mlops.classes, mlops.quantiles,
mlops.label); the log carries the prediction columns of the TASK-CONTRACT (binary probability + 0/1
prediction; multiclass prediction + probabilities JSON; regression prediction [+ quantile_<q>]). Checked:
metric definitions against scikit-learn, CBPE where it applies, fixed bounds (max_drop), per-slice metrics,
champion vs challenger, the detector on the task's primary metric, prediction drift, and the whole monitor
(run_monitor with an in-memory registry)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score, log_loss, mean_absolute_error, mean_squared_error, r2_score

from mlops_provider.runtime.monitoring import live
from mlops_provider.runtime.monitoring.live_metrics import (
    expected_multiclass,
    multiclass_live_metrics,
    regression_live_metrics,
)
from mlops_provider.runtime.monitoring.performance import compare_variants, performance_report
from mlops_provider.runtime.monitoring.task_metrics import MonitorTask

CLASSES = ["a", "b", "c"]
W = np.array([[2.0, -1.0], [0.0, 1.5], [-2.0, -0.5]])  # class logits = W @ [x, 1]
START = pd.Timestamp("2024-01-01", tz="UTC")
DAY_ROWS = 300


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _true_proba(x: np.ndarray) -> np.ndarray:
    return _softmax(np.c_[x, np.ones_like(x)] @ W.T)


def _rows(days: range, seed: int) -> pd.DataFrame:
    """Feature rows: ``DAY_ROWS`` a day, x ~ N(0, 1), a segment, ts spread over each day."""
    rng = np.random.default_rng(seed)
    n = len(days) * DAY_ROWS
    day = np.repeat(np.array(list(days)), DAY_ROWS)
    ts = START + pd.to_timedelta(day, unit="D") + pd.to_timedelta(rng.integers(0, 86_400, n), unit="s")
    return pd.DataFrame({"ts": ts, "x": rng.normal(0, 1, n), "seg": rng.choice(["n", "s"], n)}).sort_values(
        "ts", kind="stable").reset_index(drop=True)


def _labels(task: str, x: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if task == "multiclass":
        p = _true_proba(x)
        return np.array([CLASSES[i] for i in (p.cumsum(axis=1) > rng.random((len(x), 1))).argmax(axis=1)])
    return 3 * x + rng.normal(0, 1, len(x))


class Model:
    """The champion: the true probabilities (multiclass) or 3 x (regression, with 10/90 % quantiles);
    ``broken`` answers noise."""

    def __init__(self, task: str, broken: bool = False, seed: int = 7) -> None:
        self.task, self.broken, self.rng = task, broken, np.random.default_rng(seed)

    def __call__(self, frame: pd.DataFrame) -> np.ndarray:
        x = frame["x"].to_numpy("float64")
        if self.task == "multiclass":
            return self.rng.dirichlet([1, 1, 1], len(x)) if self.broken else _true_proba(x)
        point = 3 * x + (4.0 if self.broken else 0.0)
        return np.c_[point, point - 1.2816, point + 1.2816]


def _log_columns(task: str, out: np.ndarray) -> dict[str, object]:
    """The inference-log prediction columns of the TASK-CONTRACT for a pyfunc output."""
    if task == "multiclass":
        return {"prediction": [CLASSES[i] for i in out.argmax(axis=1)],
                "probabilities": [json.dumps(dict(zip(CLASSES, map(float, r), strict=True))) for r in out]}
    return {"prediction": out[:, 0], "quantile_0.1": out[:, 1], "quantile_0.9": out[:, 2]}


def _write_log(root, frame: pd.DataFrame, task: str, model: Model, version: str = "3", prefix: str = "r") -> str:
    log = pd.DataFrame({"timestamp": frame["ts"], "request_id": [f"{prefix}{i}" for i in range(len(frame))],
                        "traffic": "live", "model_version": version, "x": frame["x"], "seg": frame["seg"],
                        **_log_columns(task, model(frame))})
    for day, part in log.groupby(log["timestamp"].dt.strftime("%Y-%m-%d")):
        (root / f"date={day}").mkdir(parents=True, exist_ok=True)
        part.to_parquet(root / f"date={day}" / "part.parquet", index=False)
    return str(root)


def _tags(task: str) -> dict[str, str]:
    if task == "multiclass":
        return {"mlops.task": "multiclass", "mlops.classes": json.dumps(CLASSES), "mlops.label": "y"}
    return {"mlops.task": "regression", "mlops.quantiles": json.dumps([0.1, 0.9]), "mlops.label": "y"}


# ----------------------------------------------------------------------------------- definitions
def test_task_from_version_tags_defaults_to_binary():
    assert MonitorTask.from_tags(None).name == "binary" and MonitorTask.from_tags({}).primary == "roc_auc"
    mc = MonitorTask.from_tags({"mlops.task": "multiclass", "mlops.classes": "[0, 1, 2]", "mlops.label": "k"})
    assert mc.classes == ("0", "1", "2") and mc.label == "k" and mc.primary == "log_loss"
    assert mc.metrics == {"log_loss": False, "accuracy": True, "macro_f1": True, "ece": False}
    reg = MonitorTask.from_tags({"mlops.task": "regression", "mlops.quantiles": "[0.1, 0.9]"})
    assert reg.quantiles == (0.1, 0.9) and reg.primary == "rmse" and not reg.has_cbpe
    odd = MonitorTask.from_tags({"mlops.task": "ranking"})
    assert odd.name == "binary" and "ranking" in odd.notes[0]


def test_multiclass_metrics_match_sklearn_and_labels_match_across_types():
    rng = np.random.default_rng(0)
    p = rng.dirichlet([2, 1, 1], 3000)
    y = np.array([["0", "1", "2"][i] for i in (p.cumsum(1) > rng.random((3000, 1))).argmax(1)])
    pred = np.array(["0", "1", "2"])[p.argmax(1)]
    m = multiclass_live_metrics(y, pred, p, ["0", "1", "2"], detail=True)
    assert m["log_loss"] == pytest.approx(log_loss(y, p, labels=["0", "1", "2"]), rel=1e-6)
    assert m["accuracy"] == pytest.approx(np.mean(y == pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert set(m["per_class"]) == {"0", "1", "2"} and 0 <= m["ece"] < 0.05  # calibrated by construction
    # label partitions may carry the class as an int: it is the same class as the logged "1"
    task = MonitorTask.from_tags({"mlops.task": "multiclass", "mlops.classes": "[0, 1, 2]"})
    labels = task.labels(pd.Series(y.astype(int)))
    assert list(labels[:3]) == list(y[:3])
    # a label outside the classes counts as a wrong prediction and is reported
    odd = multiclass_live_metrics(["0", "9"], ["0", "0"], p[:2], ["0", "1", "2"])
    assert odd["unknown_labels"] == 1 and odd["accuracy"] == 0.5


def test_regression_metrics_match_sklearn():
    rng = np.random.default_rng(1)
    y = rng.normal(10, 3, 2000)
    yhat = y + rng.normal(0.5, 1, 2000)
    m = regression_live_metrics(y, yhat, {0.9: yhat + 1.28})
    assert m["rmse"] == pytest.approx(np.sqrt(mean_squared_error(y, yhat)))
    assert m["mae"] == pytest.approx(mean_absolute_error(y, yhat))
    assert m["r2"] == pytest.approx(r2_score(y, yhat))
    assert m["bias"] == pytest.approx(0.5, abs=0.1) and 0.93 < m["coverage_0.9"] < 0.98 and m["pinball_0.9"] > 0
    assert regression_live_metrics(np.ones(5), np.ones(5))["r2"] is None  # constant label


def test_multiclass_cbpe_matches_realized_when_calibrated():
    rng = np.random.default_rng(2)
    p = rng.dirichlet([1, 2, 3], 20_000)
    y = (p.cumsum(1) > rng.random((len(p), 1))).argmax(1)
    real = multiclass_live_metrics([str(v) for v in y], [str(v) for v in p.argmax(1)], p, ["0", "1", "2"])
    est = expected_multiclass(p)
    for k, tol in (("accuracy", 0.01), ("log_loss", 0.02), ("macro_f1", 0.02)):
        assert est[k] == pytest.approx(real[k], abs=tol), k
    # overconfident probabilities are estimated too optimistically: CBPE needs calibration
    sharp = _softmax(np.log(p) * 3)
    assert expected_multiclass(sharp)["accuracy"] > real["accuracy"] + 0.05


def test_scores_from_every_log_shape():
    binary = MonitorTask()
    old_new = pd.DataFrame({"probability": [np.nan, 0.8], "prediction": [0.3, 1.0]})  # old row, new row
    assert binary.scores(old_new)["__score"].tolist() == [0.3, 0.8]
    mc = MonitorTask.from_tags(_tags("multiclass"))
    frame = pd.DataFrame({"prediction": ["a", None, None],
                          "probabilities": ['{"a": 0.7, "b": 0.2, "c": 0.1}', '{"a": 0.1, "b": 0.1, "c": 0.8}', None]})
    s = mc.scores(frame)
    assert s["__pred"].tolist() == ["a", "c", None] and s["__p::c"].tolist()[:2] == [0.1, 0.8]
    drift = mc.drift_frame(s)
    assert drift["top_probability"].tolist()[:2] == [0.7, 0.8] and np.isnan(drift["top_probability"].iloc[2])
    reg = MonitorTask.from_tags(_tags("regression"))
    r = reg.scores(pd.DataFrame({"prediction": [1.0], "quantile_0.1": [0.2], "quantile_0.9": [1.9]}))
    assert r.iloc[0].tolist() == [1.0, 0.2, 1.9]
    out = reg.scores_from_output(np.array([[1.0, 0.2, 1.9]]))
    assert out.iloc[0].tolist() == [1.0, 0.2, 1.9]
    with pytest.raises(ValueError, match="2 probability column"):
        mc.scores_from_output(np.ones((4, 2)) / 2)


# ------------------------------------------------------------------------------ the scored window
def _window(task: str, seed: int, broken: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = _rows(range(3), seed)
    out = Model(task, broken=broken)(rows)
    log = pd.DataFrame({"timestamp": rows["ts"], "request_id": [f"r{i}" for i in range(len(rows))],
                        "seg": rows["seg"], **_log_columns(task, out)})
    labels = pd.DataFrame({"event_timestamp": rows["ts"] + pd.Timedelta(hours=1), "request_id": log["request_id"],
                           "y": _labels(task, rows["x"].to_numpy(), seed + 100)})
    return log, labels


def test_multiclass_report_bounds_slices_and_challenger():
    task = MonitorTask.from_tags(_tags("multiclass"))
    log, labels = _window("multiclass", 3)
    ok = performance_report(log, labels, label="y", baseline={"log_loss": 0.62, "accuracy": 0.72}, task=task,
                            slices=["seg"], max_drop={"accuracy": 0.05, "rmse": 1.0}, bootstrap=100)
    assert ok["status"] == "ok" and ok["task"] == "multiclass" and ok["degraded"] is False, ok["reasons"]
    assert set(ok["overall"]) >= {"log_loss", "accuracy", "macro_f1", "ece", "per_class"}
    assert ok["overall"]["log_loss"] == pytest.approx(0.62, abs=0.05)
    assert ok["bounds"]["max_drop"] == {"log_loss": 0.05, "accuracy": 0.05} and ok["bounds"]["ignored"] == ["rmse"]
    assert set(ok["per_slice"]["seg"]) == {"n", "s"} and set(ok["per_day"]) == {"2024-01-01", "2024-01-02",
                                                                                 "2024-01-03"}
    assert "roc_auc" not in ok["overall"] and ok["experiment"] is None
    bad_log, bad_labels = _window("multiclass", 3, broken=True)
    bad = performance_report(bad_log, bad_labels, label="y", baseline={"log_loss": 0.62, "accuracy": 0.72},
                             task=task, max_drop={"accuracy": 0.05})
    assert bad["degraded"] is True and bad["drops"]["log_loss"] > 0.3 and bad["drops"]["accuracy"] > 0.2
    assert any("log loss" in r and "above" in r for r in bad["reasons"])
    assert any("accuracy" in r and "below" in r for r in bad["reasons"])
    # split mode: each arm judged on its own served probabilities, the winner on log loss
    split = pd.concat([log.assign(variant="champion"),
                       bad_log.assign(variant="challenger", request_id=bad_log["request_id"] + "x")])
    both = pd.concat([labels, bad_labels.assign(request_id=bad_labels["request_id"] + "x")])
    exp = performance_report(split, both, label="y", task=task, bootstrap=100)["experiment"]
    assert exp["mode"].startswith("split") and exp["decided_by"] == "log_loss" and exp["winner"] == "champion"
    assert exp["deltas"]["log_loss"]["p_challenger_better"] == 0.0 and exp["delta"]["accuracy"] < 0
    # shadow mode: the challenger's class only (TASK-CONTRACT), so accuracy decides
    shadow = log.assign(champion_prediction=log["prediction"], challenger_prediction="a")
    exp = compare_variants(shadow.merge(labels[["request_id", "y"]], on="request_id"), label="y", task=task,
                           n_boot=100)
    assert exp["mode"].startswith("shadow") and exp["decided_by"] == "accuracy" and exp["winner"] == "champion"
    assert "log_loss" not in exp["champion"]  # like with like: the challenger logged no probabilities


def test_regression_report_bounds_and_no_cbpe():
    task = MonitorTask.from_tags(_tags("regression"))
    log, labels = _window("regression", 4)
    base = {"rmse": 1.0, "mae": 0.8, "r2": 0.9}
    ok = performance_report(log, labels, label="y", baseline=base, task=task, max_drop={"rmse": 0.3})
    assert ok["degraded"] is False and ok["overall"]["rmse"] == pytest.approx(1.0, abs=0.1)
    assert ok["bounds"]["max_drop"] == {"r2": 0.05, "rmse": 0.3}  # r2's default, rmse from the YAML
    assert ok["overall"]["coverage_0.9"] == pytest.approx(0.9, abs=0.03) and "pinball_0.1" in ok["overall"]
    bad_log, bad_labels = _window("regression", 4, broken=True)
    bad = performance_report(bad_log, bad_labels, label="y", baseline=base, task=task, max_drop={"rmse": 0.3})
    assert bad["degraded"] is True and bad["drops"]["rmse"] > 2 and bad["overall"]["bias"] == pytest.approx(4, abs=0.2)
    assert task.expected(MonitorTask.scores(task, log)) is None
    split = pd.concat([log.assign(variant="champion"),
                       bad_log.assign(variant="challenger", request_id=bad_log["request_id"] + "x")])
    both = pd.concat([labels, bad_labels.assign(request_id=bad_labels["request_id"] + "x")])
    exp = performance_report(split, both, label="y", task=task, bootstrap=100)["experiment"]
    assert exp["decided_by"] == "rmse" and exp["winner"] == "champion" and exp["delta"]["rmse"] > 2


def test_binary_keys_of_before_still_bound_the_binary_task():
    rng = np.random.default_rng(5)
    x = rng.normal(size=2000)
    y = (rng.random(2000) < 1 / (1 + np.exp(-2 * x))).astype(int)
    ts = START + pd.to_timedelta(np.arange(2000) * 60, unit="s")
    log = pd.DataFrame({"timestamp": ts, "request_id": [f"r{i}" for i in range(2000)],
                        "probability": 1 / (1 + np.exp(-0.3 * x)), "prediction": (x > 0).astype(int)})
    labels = pd.DataFrame({"event_timestamp": ts, "request_id": log["request_id"], "y": y})
    rep = performance_report(log, labels, label="y", baseline={"roc_auc": 0.9, "log_loss": 0.45},
                             max_roc_auc_drop=0.5, max_log_loss_increase=0.01)
    assert rep["bounds"]["max_drop"] == {"roc_auc": 0.5, "log_loss": 0.01}
    assert rep["degraded"] is True and "roc_auc_drop" in rep and rep["log_loss_increase"] > 0.01
    assert rep["overall"]["roc_auc"] > 0.8  # read from `probability`, not the 0/1 `prediction`
    over = performance_report(log, labels, label="y", baseline={"roc_auc": 0.9, "log_loss": 0.45},
                              max_roc_auc_drop=0.5, max_log_loss_increase=0.01, max_drop={"log_loss": 1.0})
    assert over["degraded"] is False  # max_drop wins over the key of before


# -------------------------------------------------------------------- the whole monitor, per task
class Registry:
    """The few MLflow client calls the monitor makes, in memory."""

    def __init__(self, version, metrics: dict[str, float]) -> None:
        self.version, self.metrics, self.tags = version, metrics, {}

    def get_model_version_by_alias(self, model, alias):
        return self.version

    def get_run(self, run_id):
        return SimpleNamespace(data=SimpleNamespace(metrics=self.metrics, tags={}),
                               inputs=SimpleNamespace(dataset_inputs=[]))

    def log_artifact(self, *args, **kwargs):
        pass

    def set_model_version_tag(self, model, version, key, value):
        self.tags[key] = value


def _world(tmp_path, task: str, broken_from: int | None = None):
    """A champion trained on days 0-24, validated on 25-31, evaluated on 32-39 (its snapshot), and live
    traffic on days 40-60 answered by it (broken from ``broken_from`` on), with outcomes an hour later."""
    from mlops_provider.runtime.features.snapshot import write_snapshot

    hist = _rows(range(40), 10)
    day = (hist["ts"] - START).dt.days
    hist["split"] = np.where(day < 25, "train", np.where(day < 32, "validation", "evaluation"))
    hist["y"] = _labels(task, hist["x"].to_numpy(), 11)
    snap, _ = write_snapshot(hist.rename(columns={"ts": "event_timestamp"}), {"feature_service": "fs", "label": "y"},
                             tmp_path / "snapshots")
    current = _rows(range(40, 61), 12)  # sorted by time: the broken days come last
    cut = (current["ts"] >= START + pd.Timedelta(days=broken_from)) if broken_from is not None else (
        pd.Series(False, index=current.index))
    good = Model(task)
    _write_log(tmp_path / "log", current[~cut].reset_index(drop=True), task, good, prefix="r")
    if cut.any():
        _write_log(tmp_path / "log", current[cut].reset_index(drop=True), task, Model(task, broken=True), prefix="br")
    ids = [f"r{i}" for i in range(int((~cut).sum()))] + [f"br{i}" for i in range(int(cut.sum()))]
    lab = pd.DataFrame({"event_timestamp": current["ts"] + pd.Timedelta(hours=1), "request_id": ids,
                        "y": _labels(task, current["x"].to_numpy(), 13)})
    (tmp_path / "labels").mkdir()
    lab.to_parquet(tmp_path / "labels" / "part.parquet", index=False)
    log = str(tmp_path / "log")
    base = ({"log_loss": 0.62, "accuracy": 0.72, "macro_f1": 0.7} if task == "multiclass"
            else {"rmse": 1.0, "mae": 0.8, "r2": 0.9})
    version = SimpleNamespace(version="3", run_id="run-1", tags={"snapshot_path": snap, **_tags(task)})
    return {"log": log, "labels": str(tmp_path / "labels"), "client": Registry(version, base), "model": good,
            "report_dir": str(tmp_path / "reports"), "cache": str(tmp_path / "cache")}


def _monitor(w, day: int, **kw):
    from mlops_provider.runtime.monitoring.monitor import run_monitor
    from mlops_provider.specs import MonitoringSpec

    mon = MonitoringSpec.parse({"performance": {"bootstrap": 50, "min_labelled_rows": 100, **kw.pop("perf", {})},
                                "drift": {"evidently_report": False, **kw.pop("drift", {})}})
    start = START + pd.Timedelta(days=day)
    return run_monitor(model="m", inference_log_dir=w["log"], features={"numeric": ["x"], "categorical": ["seg"]},
                       report_dir=w["report_dir"], client=w["client"], window_start=start.isoformat(),
                       window_end=(start + pd.Timedelta(days=1)).isoformat(), drift=mon.drift.model_dump(),
                       performance=mon.performance.model_dump(), labels_dir=w["labels"], label_column=None,
                       reference_cache_dir=w["cache"], predictor=w["model"], **kw)


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_monitor_in_control_is_quiet_per_task(tmp_path, task):
    w = _world(tmp_path, task)
    r = _monitor(w, 60)
    assert r["task"]["task"] == task and r["drift"] is False and r["trigger"] is False, r["trigger_reasons"]
    perf = r["performance"]
    det = perf["detector"]
    primary = {"multiclass": "log_loss", "regression": "rmse"}[task]
    assert det["metric"] == primary and det["calibration"]["status"] == "ok"
    assert det["calibration"]["reference_days"] == 15 and det["calibration"]["higher_is_better"] is False
    assert perf["decided_by"] == "detector" and perf["degraded"] is False and det["alarm_day"] is None
    labelled = [d for d in perf["daily"] if d["realized"]]
    assert len(labelled) >= 18 and all(primary in d["realized"] for d in labelled)
    if task == "multiclass":
        assert all(d["estimated"]["log_loss"] is not None for d in perf["daily"])  # CBPE before labels land
        assert perf["estimated"]["accuracy"] == pytest.approx(0.7, abs=0.1)
    else:
        assert all(d["estimated"] is None for d in perf["daily"]) and "not applicable" in perf["cbpe"]
        assert perf.get("estimated") is None
    preds = r["prediction_drift"]
    assert preds["status"] == "ok" and preds["drift"] is False and preds["thresholds"] == "calibrated", preds
    assert preds["reference"]["splits"] == ["evaluation", "validation"]
    expected = {"multiclass": {"prediction", "top_probability"}, "regression": {"prediction"}}[task]
    assert set(preds["columns"]) == expected and r["signals"]["prediction_drift"] is False
    # the small XCom carries the task and its headline metrics
    from mlops_provider.runtime.monitoring.reports import xcom_summary

    small = xcom_summary(r)
    assert small["performance"]["task"] == task and primary in small["performance"]["overall"]
    assert small["prediction_drift"]["status"] == "ok"


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_monitor_finds_a_sustained_decline_and_the_prediction_drift_per_task(tmp_path, task):
    w = _world(tmp_path, task, broken_from=50)
    r = _monitor(w, 60)
    perf = r["performance"]
    det = perf["detector"]
    assert perf["degraded"] is True and det["alarm"] is True, det.get("why")
    assert "2024-02-20" <= det["alarm_day"] <= "2024-02-27", det["alarm_day"]  # day 50 is Feb 20
    assert r["trigger"] is True and r["signals"]["performance"] is True
    preds = r["prediction_drift"]
    assert preds["drift"] is True and preds["alarms"] and all(a.startswith("prediction ") for a in preds["alarms"])
    # reported, not a drift signal unless monitoring.drift.predictions.trigger
    assert r["drift"] is False and r["signals"]["prediction_drift"] is True
    again = _monitor(w, 60, drift={"predictions": {"trigger": True}})
    assert again["drift"] is True and any(t.startswith("data drift: prediction drift") for t in
                                          again["trigger_reasons"])
    # the fixed bounds on the scored window name the worsening in the task's metrics
    bounds = _monitor(w, 60, perf={"detector": {"method": "none"}, "max_drop": {"mae": 0.5, "macro_f1": 0.05}})
    assert bounds["performance"]["decided_by"] == "bounds" and bounds["performance"]["degraded"] is True
    worse = bounds["performance"]["drops"]
    assert (worse["log_loss"] > 0.3) if task == "multiclass" else (worse["rmse"] > 2 and worse["mae"] > 2)


def test_detector_metric_and_shift_follow_the_task(tmp_path):
    from mlops_provider.runtime.monitoring.detector import DetectorSettings, calibrate

    reg = MonitorTask.from_tags(_tags("regression"))
    s, note = DetectorSettings.for_task({"metric": "roc_auc"}, reg.metrics, reg.primary)
    assert s.metric == "rmse" and "roc_auc" in note
    s, note = DetectorSettings.for_task({"metric": "r2", "shift": None}, reg.metrics, reg.primary)
    assert s.metric == "r2" and note is None and s.shift_for(0.3) == 0.04
    rmse, _ = DetectorSettings.for_task(None, reg.metrics, reg.primary)
    cal = calibrate(list(np.random.default_rng(0).normal(5.0, 0.5, 20)), rmse)
    assert cal["shift"] == pytest.approx(cal["std"]) and cal["higher_is_better"] is False  # in the label's unit


def test_monitoring_spec_keys():
    from mlops_provider.runtime.monitoring.drift import DriftRules
    from mlops_provider.specs import MonitoringSpec

    mon = MonitoringSpec.parse({"performance": {"max_drop": {"rmse": 2.5, "r2": 0.1}, "detector": {"metric": "mae"}},
                                "drift": {"predictions": {"trigger": True}}})
    assert mon.performance.max_drop == {"rmse": 2.5, "r2": 0.1} and mon.drift.predictions.trigger is True
    DriftRules.from_config(mon.drift.model_dump())  # the prediction settings are not a drift rule
    default = MonitoringSpec()
    assert default.performance.detector.metric is None and default.drift.predictions.enabled is True
    for bad in ({"performance": {"max_drop": {"auc": 0.1}}}, {"performance": {"max_drop": {"rmse": -1}}},
                {"performance": {"detector": {"metric": "f1"}}}):
        with pytest.raises(ValueError, match="max_drop|metric"):
            MonitoringSpec.parse(bad)


def test_reference_days_are_scored_per_task_and_cached(tmp_path):
    from mlops_provider.runtime.features.snapshot import write_snapshot

    hist = _rows(range(20), 20)
    hist["split"] = np.where((hist["ts"] - START).dt.days < 12, "train", "validation")
    hist["y"] = _labels("multiclass", hist["x"].to_numpy(), 21)
    snap, _ = write_snapshot(hist.rename(columns={"ts": "event_timestamp"}), {"feature_service": "fs", "label": "y"},
                             tmp_path / "snaps")
    calls = []

    def predictor(frame):
        calls.append(len(frame))
        return _true_proba(frame["x"].to_numpy())

    untagged = MonitorTask.from_tags({"mlops.task": "multiclass"})  # classes: the training split's, sorted
    ref = live.reference_performance(None, "m", "1", snap, features={"numeric": ["x"], "categorical": ["seg"]},
                                     label="y", cache_dir=str(tmp_path / "c"), predictor=predictor, task=untagged)
    assert ref["status"] == "ok" and ref["task"] == "multiclass" and len(ref["days"]) == 8
    assert all(0.4 < d["realized"]["log_loss"] < 0.9 for d in ref["days"])
    assert all(abs(d["estimated"]["accuracy"] - d["realized"]["accuracy"]) < 0.1 for d in ref["days"])
    assert calls == [8 * DAY_ROWS]
    from mlops_provider.runtime.monitoring.predictions import score_reference

    scored, task = score_reference(None, "m", "1", snap, features={}, label="y", task=untagged,
                                   cache_dir=str(tmp_path / "c"))  # from the cache: no predictor needed
    assert task.classes == ("a", "b", "c") and len(scored) == 8 * DAY_ROWS and calls == [8 * DAY_ROWS]


def test_prediction_drift_reads_the_champions_rows_only_and_says_when_predictions_are_missing(tmp_path):
    from mlops_provider.runtime.monitoring.drift import DriftRules
    from mlops_provider.runtime.monitoring.predictions import prediction_drift

    task = MonitorTask.from_tags(_tags("regression"))
    hist = _rows(range(20), 30)
    scored = pd.concat([pd.DataFrame({"event_timestamp": hist["ts"], "split": "validation"}),
                        task.scores_from_output(Model("regression")(hist))], axis=1)
    day = _rows(range(20, 21), 31)
    _write_log(tmp_path / "log", day, "regression", Model("regression"))
    other = tmp_path / "log" / "date=2024-01-21" / "part-challenger.parquet"  # a split-mode challenger: wrong
    pd.read_parquet(tmp_path / "log" / "date=2024-01-21" / "part.parquet").assign(
        model_version="4", prediction=100.0).to_parquet(other, index=False)
    kw = dict(task=task, scored=scored, unavailable=None, start="2024-01-21T00:00:00+00:00",
              end="2024-01-22T00:00:00+00:00", rules=DriftRules(window_hours=24.0), min_rows=100, model="m",
              version="3", cache_dir=str(tmp_path / "cache"), trigger=False)
    ok = prediction_drift(inference_log_dir=str(tmp_path / "log"), tmp_dir=tmp_path / "t1", **kw)
    assert ok["status"] == "ok" and ok["n_current"] == DAY_ROWS and ok["drift"] is False, ok["alarms"]
    bare = tmp_path / "bare" / "date=2024-01-21"
    bare.mkdir(parents=True)
    pd.DataFrame({"timestamp": day["ts"], "x": day["x"], "model_version": "3"}).to_parquet(bare / "p.parquet")
    none = prediction_drift(inference_log_dir=str(tmp_path / "bare"), tmp_dir=tmp_path / "t2", **kw)
    assert none["status"] == "no_predictions" and "regression" in none["why"]
    gone = prediction_drift(inference_log_dir=str(tmp_path / "log"), tmp_dir=tmp_path / "t3",
                            **{**kw, "scored": None, "unavailable": "OSError: no model"})
    assert gone["status"] == "unavailable" and gone["why"] == "OSError: no model"
