"""Feast definitions of the ``flights_delay`` model (entities, sources, views, feature service).

Data paths: every FileSource reads a directory of parquet partitions written by
``transforms.build_partitions`` under ``ModelPaths.for_model("flights_delay").offline``, i.e.
``$MLOPS_HOME/lake/flights_delay/offline/<view>/`` (``$MLOPS_HOME`` defaults to ``./.mlops``). The
home is resolved when Feast imports this file (``feast apply`` / ``FeastApplyOperator``), so run the
apply with the same ``MLOPS_HOME`` as the feature pipeline. Production points ``MLOPS_LAKE_URI`` at
an object-store prefix (e.g. ``s3://bucket/lake/flights_delay``) instead.
"""

import os
from datetime import timedelta

import pandas as pd
from feast import Entity, FeatureService, FeatureView, Field, FileSource, Project, RequestSource, ValueType
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64

from mlops_provider.paths import ModelPaths

MODEL = "flights_delay"

project = Project(name=MODEL, description="Flight arrival delay (> 15 min) from weather, carrier and plane")


def _offline(view: str) -> str:
    """Directory of one feature view's parquet partitions (local path or object-store URI)."""
    lake_uri = os.environ.get("MLOPS_LAKE_URI")
    if lake_uri:
        return f"{lake_uri.rstrip('/')}/offline/{view}/"
    return str(ModelPaths.for_model(MODEL).offline / view)


# --- entities: the keys a caller passes ---------------------------------------------------------------
origin = Entity(name="origin", join_keys=["origin"], value_type=ValueType.STRING, description="Departure airport")
carrier = Entity(name="carrier", join_keys=["carrier"], value_type=ValueType.STRING, description="Airline code")
tailnum = Entity(name="tailnum", join_keys=["tailnum"], value_type=ValueType.STRING, description="Plane tail number")

# --- batch sources: parquet partitions produced by the feature pipeline -------------------------------
weather_source = FileSource(
    name="origin_weather_hourly_source",
    path=_offline("origin_weather_hourly"),
    timestamp_field="event_timestamp",
)
carrier_stats_source = FileSource(
    name="carrier_delay_stats_source",
    path=_offline("carrier_delay_stats"),
    timestamp_field="event_timestamp",
)
planes_source = FileSource(
    name="plane_attributes_source",
    path=_offline("plane_attributes"),
    timestamp_field="event_timestamp",
)

# --- feature views ------------------------------------------------------------------------------------
# Hourly METAR-like observations at the departure airport; a flight sees the latest hour <= 3 h old.
origin_weather_hourly = FeatureView(
    name="origin_weather_hourly",
    entities=[origin],
    ttl=timedelta(hours=3),
    schema=[
        Field(name=name, dtype=Float64)
        for name in ("temp", "dewp", "humid", "wind_speed", "wind_gust", "precip", "pressure", "visib")
    ],
    source=weather_source,
    online=True,
    tags={"model": MODEL},
)

# Rolling 7-day carrier punctuality, stamped at 00:00 UTC of day D: the carrier's flights whose outcome was known
# (actual arrival, UTC) on one of the 7 UTC days before D; nothing arriving on or after D counts (no label
# leakage). A carrier without such flights has no row on D (null features, imputed by the model).
carrier_delay_stats = FeatureView(
    name="carrier_delay_stats",
    entities=[carrier],
    ttl=timedelta(days=2),
    schema=[
        Field(name="carrier_delay_rate_7d", dtype=Float64),
        Field(name="carrier_mean_arr_delay_7d", dtype=Float64),
        Field(name="carrier_flights_7d", dtype=Float64),
    ],
    source=carrier_stats_source,
    online=True,
    tags={"model": MODEL},
)

# Static plane attributes (one row per tail number, stamped 2013-01-01).
plane_attributes = FeatureView(
    name="plane_attributes",
    entities=[tailnum],
    ttl=timedelta(days=3650),
    schema=[
        Field(name="plane_year", dtype=Float64),
        Field(name="plane_seats", dtype=Float64),
        Field(name="plane_engines", dtype=Float64),
    ],
    source=planes_source,
    online=True,
    tags={"model": MODEL},
)

# --- request-time fields: known only when the caller asks for a prediction ---------------------------
# The caller passes them next to the entity keys (online: in each entity row; training: as columns of
# the entity frame). The on-demand view hands them back as float features so the FeatureService lists
# them. Offline, the entity-frame columns and the view's outputs share names: readers keep the outputs.
flight_request = RequestSource(
    name="flight_request",
    schema=[
        Field(name="sched_dep_hour", dtype=Int64),
        Field(name="weekday", dtype=Int64),
        Field(name="month", dtype=Int64),
        Field(name="distance", dtype=Float64),
    ],
)


@on_demand_feature_view(
    sources=[flight_request],
    schema=[
        Field(name="sched_dep_hour", dtype=Float64),
        Field(name="weekday", dtype=Float64),
        Field(name="month", dtype=Float64),
        Field(name="distance", dtype=Float64),
    ],
    mode="pandas",
)
def request_time_features(inputs: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame(index=inputs.index)
    for name in ("sched_dep_hour", "weekday", "month", "distance"):
        out[name] = inputs[name].astype("float64")
    return out


# --- the model version's feature set --------------------------------------------------------------------
flights_delay_v1 = FeatureService(
    name="flights_delay_v1",
    features=[origin_weather_hourly, carrier_delay_stats, plane_attributes, request_time_features],
    description="Inputs of flights_delay model v1 (categoricals origin/carrier are the entity keys)",
    tags={"model": MODEL},
)
