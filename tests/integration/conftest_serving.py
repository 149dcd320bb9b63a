"""Fixtures of the serving integration tests (imported from test_serving_*.py).

A tiny world in a tmp home: a Feast repo with the contract's feature names (file offline store,
SQLite online store, a few materialized rows), and an MLflow sqlite registry holding a small
"models from code" pyfunc registered as ``flights_delay`` with alias ``@champion``. The pyfunc
follows the training contract: ``predict(DataFrame of raw feature columns) -> probabilities``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

MODEL_NAME = "flights_delay"
FEATURE_SERVICE = "flights_delay_v1"
WEATHER = ["temp", "dewp", "humid", "wind_speed", "wind_gust", "precip", "pressure", "visib"]
CARRIER = ["carrier_delay_rate_7d", "carrier_mean_arr_delay_7d", "carrier_flights_7d"]
PLANE = ["plane_year", "plane_seats", "plane_engines"]
REQUEST = ["sched_dep_hour", "weekday", "month", "distance"]
FEATURES = {"categorical": ["origin", "carrier"], "numeric": [*WEATHER, *CARRIER, *PLANE, *REQUEST]}

GOOD_REQUEST = {
    "origin": "JFK", "carrier": "UA", "tailnum": "N14228",
    "sched_dep_hour": 17, "weekday": 4, "month": 6, "distance": 1400.0,
}

FEATURE_DEFS = '''
from datetime import timedelta

import pandas as pd
from feast import Entity, FeatureService, FeatureView, Field, FileSource, RequestSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64
from feast.value_type import ValueType

WEATHER = {weather!r}
CARRIER = {carrier!r}
PLANE = {plane!r}


def _fv(name, entity, cols, ttl):
    src = FileSource(name=f"{{name}}_src", path=f"data/{{name}}.parquet", timestamp_field="event_timestamp")
    return FeatureView(name=name, entities=[entity], ttl=ttl, online=True, source=src,
                       schema=[Field(name=c, dtype=Float64) for c in cols])


origin = Entity(name="origin", join_keys=["origin"], value_type=ValueType.STRING)
carrier = Entity(name="carrier", join_keys=["carrier"], value_type=ValueType.STRING)
tailnum = Entity(name="tailnum", join_keys=["tailnum"], value_type=ValueType.STRING)
origin_weather_hourly = _fv("origin_weather_hourly", origin, WEATHER, timedelta(hours=3))
carrier_delay_stats = _fv("carrier_delay_stats", carrier, CARRIER, timedelta(days=2))
plane_attributes = _fv("plane_attributes", tailnum, PLANE, timedelta(days=3650))
flight_request = RequestSource(name="flight_request", schema=[
    Field(name="sched_dep_hour", dtype=Int64), Field(name="weekday", dtype=Int64),
    Field(name="month", dtype=Int64), Field(name="distance", dtype=Float64)])


@on_demand_feature_view(sources=[flight_request], mode="pandas",
                        schema=[Field(name=c, dtype=Float64) for c in {request!r}])
def request_time_features(df: pd.DataFrame) -> pd.DataFrame:
    return df[{request!r}].astype("float64")


flights_delay_v1 = FeatureService(name="flights_delay_v1", features=[
    origin_weather_hourly, carrier_delay_stats, plane_attributes, request_time_features])
'''

MODEL_CODE = '''
import mlflow
import numpy as np
import pandas as pd


class DelayModel(mlflow.pyfunc.PythonModel):
    """Deterministic toy: later departures and colder weather -> more delays."""

    def predict(self, context, model_input: pd.DataFrame, params=None):
        hour = pd.to_numeric(model_input["sched_dep_hour"], errors="coerce").fillna(12.0) / 23.0
        temp = pd.to_numeric(model_input["temp"], errors="coerce").fillna(50.0) / 100.0
        z = 3.0 * hour - 2.0 * temp - 0.5
        return (1.0 / (1.0 + np.exp(-z))).to_numpy(dtype="float64")


mlflow.models.set_model(DelayModel())
'''


@dataclass
class ServingWorld:
    home: Path
    feature_repo: Path
    tracking_uri: str
    inference_log: Path
    bentoml_home: Path
    state_dir: Path


def build_feature_repo(repo: Path, *, store_yaml: str | None = None, fs_yaml_file: str = "feature_store.yaml") -> None:
    """The serving tests' Feast repo (SQLite beside the data), applied and materialized; with ``store_yaml``
    written as ``fs_yaml_file`` the objects go to that YAML's backends instead."""
    import numpy as np
    import pandas as pd
    from feast import FeatureStore

    (repo / "data").mkdir(parents=True, exist_ok=True)
    (repo / "definitions.py").write_text(
        FEATURE_DEFS.format(weather=WEATHER, carrier=CARRIER, plane=PLANE, request=REQUEST)
    )
    (repo / "feature_store.yaml").write_text(textwrap.dedent("""\
        project: serving_test
        registry: data/registry.db
        provider: local
        online_store:
          type: sqlite
          path: data/online.db
        entity_key_serialization_version: 3
        """))
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)

    def write(name: str, key: str, keys: list[str], cols: list[str]) -> None:
        df = pd.DataFrame({key: keys, "event_timestamp": [now - timedelta(minutes=30)] * len(keys)})
        for i, c in enumerate(cols):
            df[c] = np.arange(len(keys), dtype="float64") * 10.0 + i
        df.to_parquet(repo / "data" / f"{name}.parquet")

    write("origin_weather_hourly", "origin", ["JFK", "LGA", "EWR"], WEATHER)
    write("carrier_delay_stats", "carrier", ["UA", "AA", "B6"], CARRIER)
    write("plane_attributes", "tailnum", ["N14228", "N24211"], PLANE)

    import importlib.util

    from feast import Entity, FeatureService, FeatureView, OnDemandFeatureView

    spec = importlib.util.spec_from_file_location(f"serving_test_defs_{abs(hash(repo))}", repo / "definitions.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    kinds = (Entity, FeatureView, OnDemandFeatureView, FeatureService)
    objects = [v for v in vars(module).values() if isinstance(v, kinds)]
    if store_yaml is not None:
        (repo / fs_yaml_file).write_text(store_yaml)
    store = FeatureStore(repo_path=str(repo), fs_yaml_file=repo / fs_yaml_file)
    store.apply(objects)
    store.materialize(now - timedelta(days=1), now + timedelta(minutes=1))


#: A model that takes ``delay_s`` per call (overload tests): the same answers as MODEL_CODE.
SLOW_MODEL_CODE = MODEL_CODE.replace(
    "    def predict(self, context, model_input: pd.DataFrame, params=None):\n",
    "    def predict(self, context, model_input: pd.DataFrame, params=None):\n"
    "        import time\n\n        time.sleep({delay_s})\n",
)


def register_model(
    tracking_uri: str, artifacts: Path, code_dir: Path, *, alias: str = "champion", code: str = MODEL_CODE
) -> str:
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name("serving_test")
    exp_id = exp.experiment_id if exp else client.create_experiment("serving_test", artifact_location=artifacts.as_uri())
    code_file = code_dir / "delay_model.py"
    code_file.write_text(code)
    example = pd.DataFrame([{**{c: 1.0 for c in FEATURES["numeric"]}, "origin": "JFK", "carrier": "UA"}])
    example = example[[*FEATURES["categorical"], *FEATURES["numeric"]]]
    with mlflow.start_run(experiment_id=exp_id):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=str(code_file), input_example=example,
            pip_requirements=["pandas", "numpy"], registered_model_name=MODEL_NAME,
        )
    version = str(info.registered_model_version)
    client.set_registered_model_alias(MODEL_NAME, alias, version)
    return version


@contextmanager
def serve_bento(world: ServingWorld, bento_tag: str, name: str, timeout: float = 180) -> Iterator[dict]:
    """``bentoml serve`` ``bento_tag`` on a free loopback port until the block ends: {url, proc, log}."""
    from mlops_provider.runtime.serving.process import free_port, start_server, stop_server, wait_ready

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_file = world.home / f"{name}-{port}.log"
    proc, offset = start_server(bento_tag, "127.0.0.1", port, log_file, bentoml_home_dir=world.bentoml_home)
    try:
        wait_ready(proc, url, log_file, offset, timeout, bento_tag, consequence="the test server is gone")
        yield {"url": url, "proc": proc, "log": log_file}
    finally:
        stop_server(proc.pid, timeout=20)


@pytest.fixture(scope="module", name="serving_world")
def serving_world_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingWorld]:
    home = tmp_path_factory.mktemp("mlops_home")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLOPS_HOME", str(home))
    tracking_uri = f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    (home / "mlflow").mkdir()
    mp.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    mp.setenv("BENTOML_HOME", str(home / "bentoml"))
    mp.setenv("BENTOML_DO_NOT_TRACK", "True")
    try:
        repo = home / "feature_repo"
        build_feature_repo(repo)
        register_model(tracking_uri, home / "mlflow" / "artifacts", home)
        yield ServingWorld(
            home=home, feature_repo=repo, tracking_uri=tracking_uri,
            inference_log=home / "inference_log" / MODEL_NAME,
            bentoml_home=home / "bentoml", state_dir=home / "state" / "bento" / MODEL_NAME,
        )
    finally:
        mp.undo()
