"""Fresh features between batch windows: rows pushed through a Feast PushSource are served at once, and the
online value served at t equals the point-in-time (training) value at t. Real Feast (SQLite online store,
the project's point-in-time file offline store)."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_provider.exceptions import ConfigError, DataValidationError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

T0 = datetime(2024, 3, 1, tzinfo=UTC)
DEFS = '''
from datetime import timedelta

import pandas as pd
from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource, RequestSource
from feast.on_demand_feature_view import on_demand_feature_view
from feast.types import Float64, Int64
from feast.value_type import ValueType

station = Entity(name="station", join_keys=["station"], value_type=ValueType.STRING)
readings = FileSource(name="readings_src", path="data/readings", timestamp_field="event_timestamp")
readings_push = PushSource(name="readings_push", batch_source=readings)
sensor_hourly = FeatureView(name="sensor_hourly", entities=[station], ttl=timedelta(hours=2), online=True,
                            source=readings_push, schema=[Field(name="level", dtype=Float64),
                                                          Field(name="flow", dtype=Float64)])
req = RequestSource(name="req", schema=[Field(name="horizon", dtype=Int64)])


@on_demand_feature_view(sources=[req], schema=[Field(name="horizon", dtype=Float64)], mode="pandas")
def request_features(df: pd.DataFrame) -> pd.DataFrame:
    return df[["horizon"]].astype("float64")


flood_v1 = FeatureService(name="flood_v1", features=[sensor_hourly, request_features])
'''


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):
    from feast import FeatureStore

    repo = tmp_path_factory.mktemp("push_repo")
    (repo / "data" / "readings").mkdir(parents=True)
    (repo / "definitions.py").write_text(DEFS)
    (repo / "feature_store.yaml").write_text(textwrap.dedent("""\
        project: push_test
        registry: data/registry.db
        provider: local
        online_store: {type: sqlite, path: data/online.db}
        offline_store:
          type: mlops_provider.runtime.features.offline_store.PointInTimeFileOfflineStore
        entity_key_serialization_version: 3
        """))
    # the batch history: hourly readings of two stations for the first day
    hours = [T0 + timedelta(hours=h) for h in range(24)]
    batch = pd.DataFrame({
        "station": ["A"] * 24 + ["B"] * 24,
        "event_timestamp": hours * 2,
        "level": np.arange(48, dtype="float64"),
        "flow": np.arange(48, dtype="float64") * 10,
    })
    batch.to_parquet(repo / "data" / "readings" / "day1.parquet")
    import importlib.util

    spec = importlib.util.spec_from_file_location("push_test_defs", repo / "definitions.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from feast import Entity, FeatureService, FeatureView, OnDemandFeatureView, PushSource

    fs = FeatureStore(repo_path=str(repo))
    fs.apply([v for v in vars(module).values()
              if isinstance(v, Entity | FeatureView | OnDemandFeatureView | FeatureService | PushSource)])
    fs.materialize(T0, T0 + timedelta(days=1))  # the batch window: online = the readings of 23:00
    return fs, repo


def _served(fs, rows: list[dict], at: list[datetime]) -> pd.DataFrame:
    from mlops_provider.runtime.serving.feature_service import OnlineFeatures, feature_service_info

    info = feature_service_info(fs, "flood_v1")
    got = OnlineFeatures(fs, fs.get_feature_service("flood_v1"), info).read(rows, at)
    return pd.DataFrame({k: got.values[k] for k in ("level", "flow")})


def _point_in_time(repo: Path, rows: list[dict], at: list[datetime]) -> pd.DataFrame:
    """The training path: the point-in-time join of the offline store at the same instants."""
    from feast import FeatureStore

    entity = pd.DataFrame(rows)
    entity["event_timestamp"] = pd.to_datetime(at, utc=True)
    fs = FeatureStore(repo_path=str(repo))
    out = fs.get_historical_features(entity_df=entity, features=fs.get_feature_service("flood_v1")).to_df()
    return out[["level", "flow"]].reset_index(drop=True)


def test_pushed_rows_are_served_and_equal_the_point_in_time_values(store) -> None:
    from mlops_provider.runtime.serving.push import push_features

    fs, repo = store
    rows = [{"station": "A", "horizon": 1}, {"station": "B", "horizon": 1}]
    t = T0 + timedelta(days=1, hours=3, minutes=30)  # 4.5 h after the last batch reading: stale (TTL 2 h)
    before = _served(fs, rows, [t, t])
    assert before.isna().all().all()
    # new readings land between batch windows: pushed online, and written to the lake (the offline truth)
    fresh = pd.DataFrame({
        "station": ["A", "A", "B"],
        "event_timestamp": [T0 + timedelta(days=1, hours=2), T0 + timedelta(days=1, hours=3),
                            T0 + timedelta(days=1, hours=2)],
        "level": [100.0, 101.0, 200.0],
        "flow": [1000.0, 1010.0, 2000.0],
    })
    fresh.to_parquet(repo / "data" / "readings" / "day2.parquet")
    out = push_features(fs, "readings_push", fresh)
    assert out["rows_in"] == 3 and out["rows_pushed"] == 2 and out["views"] == ["sensor_hourly"]  # latest per station
    served = _served(fs, rows, [t, t])
    assert served.to_dict("list") == {"level": [101.0, 200.0], "flow": [1010.0, 2000.0]}
    pd.testing.assert_frame_equal(served, _point_in_time(repo, rows, [t, t]), check_dtype=False)
    # later, B's pushed reading (02:00) is past its TTL at 04:30, online and offline alike
    t2 = T0 + timedelta(days=1, hours=4)
    t2b = T0 + timedelta(days=1, hours=4, minutes=30)
    served2 = _served(fs, rows, [t2, t2b])
    assert served2.loc[0, "level"] == 101.0 and np.isnan(served2.loc[1, "level"])
    pd.testing.assert_frame_equal(served2, _point_in_time(repo, rows, [t2, t2b]), check_dtype=False)


def test_an_older_row_never_replaces_a_fresher_online_value(store) -> None:
    from mlops_provider.runtime.serving.push import push_features

    fs, _ = store
    late = pd.DataFrame({"station": ["A"], "event_timestamp": [T0 + timedelta(days=1)], "level": [-1.0],
                         "flow": [-1.0]})
    assert push_features(fs, "readings_push", late)["rows_pushed"] == 0
    at = T0 + timedelta(days=1, hours=3, minutes=30)
    assert _served(fs, [{"station": "A", "horizon": 1}], [at]).loc[0, "level"] == 101.0


def test_push_errors_name_the_fix(store) -> None:
    from mlops_provider.runtime.serving.push import push_features

    fs, _ = store
    with pytest.raises(ConfigError, match=r"readings_push"):
        push_features(fs, "no_such_push", pd.DataFrame())
    with pytest.raises(DataValidationError, match=r"lacks column\(s\) \['flow'\]"):
        push_features(fs, "readings_push", pd.DataFrame({"station": ["A"], "event_timestamp": [T0], "level": [1.0]}))
    with pytest.raises(ConfigError, match="use one of"):
        push_features(fs, "readings_push", pd.DataFrame(), to="sideways")
