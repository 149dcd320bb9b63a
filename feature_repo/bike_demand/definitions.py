"""Feast definitions of the ``bike_demand`` model (entities, sources, views, feature service).

Hourly bike-share demand per rider segment (UCI Bike Sharing, Washington DC, 2011): the model predicts
``riders``, the rentals of one segment (casual | registered) in the hour starting at the request's time.

Data paths: every FileSource reads a directory of parquet partitions written by
``transforms.build_partitions`` under ``ModelPaths.for_model("bike_demand").offline``, i.e.
``$MLOPS_HOME/lake/bike_demand/offline/<view>/`` (``$MLOPS_HOME`` defaults to ``./.mlops``). The home is
resolved when Feast imports this file (``feast apply`` / ``FeastApplyOperator``), so run the apply with the
same ``MLOPS_HOME`` as the feature pipeline. Production points ``MLOPS_LAKE_ROOT`` at an object-store prefix
shared by every model (e.g. ``s3://bucket/lake``; this model reads ``<root>/bike_demand/offline/<view>/``).
"""

import os
from datetime import timedelta

import pandas as pd
from feast import Entity, FeatureService, FeatureView, Field, FileSource, Project, RequestSource, ValueType
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64, String

from mlops_provider.paths import ModelPaths

MODEL = "bike_demand"

project = Project(name=MODEL, description="Hourly bike-share rentals per rider segment from weather and "
                                           "recent demand")


def _offline(view: str) -> str:
    """Directory of one feature view's parquet partitions (local path or object-store URI)."""
    root = os.environ.get("MLOPS_LAKE_ROOT")  # e.g. s3://bucket/lake: one prefix for every model
    if root:
        return f"{root.rstrip('/')}/{MODEL}/offline/{view}/"
    return str(ModelPaths.for_model(MODEL).offline / view)


# --- entities: the keys a caller passes ---------------------------------------------------------------
segment = Entity(name="segment", join_keys=["segment"], value_type=ValueType.STRING,
                 description="Rider segment: casual | registered")
city = Entity(name="city", join_keys=["city"], value_type=ValueType.STRING,
              description="Bike-share system's city (washington_dc)")

# --- batch sources: parquet partitions produced by the feature pipeline -------------------------------
weather_source = FileSource(
    name="city_weather_hourly_source",
    path=_offline("city_weather_hourly"),
    timestamp_field="event_timestamp",
)
demand_source = FileSource(
    name="segment_demand_history_source",
    path=_offline("segment_demand_history"),
    timestamp_field="event_timestamp",
)

# --- feature views ------------------------------------------------------------------------------------
# The weather reported for the hour (normalized as in UCI: temp/41 C, atemp/50 C, hum/100, wind/67).
city_weather_hourly = FeatureView(
    name="city_weather_hourly",
    entities=[city],
    ttl=timedelta(hours=3),
    schema=[
        Field(name="weathersit", dtype=String),
        *(Field(name=name, dtype=Float64) for name in ("temp", "atemp", "hum", "windspeed")),
    ],
    source=weather_source,
    online=True,
    tags={"model": MODEL},
)

# A segment's recent demand, stamped at t from the hours that ended by t (no leakage of the hour itself).
segment_demand_history = FeatureView(
    name="segment_demand_history",
    entities=[segment],
    ttl=timedelta(hours=3),
    schema=[
        Field(name=name, dtype=Float64)
        for name in ("riders_lag_24h", "riders_lag_168h", "riders_mean_24h", "riders_mean_7d")
    ],
    source=demand_source,
    online=True,
    tags={"model": MODEL},
)

# --- request-time fields: the calendar of the hour, known when the caller asks ------------------------
# Passed next to the entity keys (online: in each entity row; training: columns of the label frame). The
# on-demand view hands them back as float features so that the FeatureService lists them.
ride_request = RequestSource(
    name="ride_request",
    schema=[
        Field(name="hr", dtype=Int64),
        Field(name="weekday", dtype=Int64),
        Field(name="workingday", dtype=Int64),
        Field(name="holiday", dtype=Int64),
        Field(name="season", dtype=Int64),
    ],
)



@on_demand_feature_view(
    sources=[ride_request],
    schema=[Field(name=name, dtype=Float64) for name in ("hr", "weekday", "workingday", "holiday", "season")],
    mode="pandas",
)
def ride_calendar_features(inputs: pd.DataFrame) -> pd.DataFrame:
    # Feast stores this function's source: it may use only its own names (no module constants)
    out = pd.DataFrame(index=inputs.index)
    for name in ("hr", "weekday", "workingday", "holiday", "season"):
        out[name] = inputs[name].astype("float64")
    return out


# --- the model version's feature set --------------------------------------------------------------------
bike_demand_v1 = FeatureService(
    name="bike_demand_v1",
    features=[city_weather_hourly, segment_demand_history, ride_calendar_features],
    description="Inputs of bike_demand model v1 (the categorical segment is an entity key)",
    tags={"model": MODEL},
)
