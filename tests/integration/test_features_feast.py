"""Real Feast on a temp home: land Jan 2013, partitions, apply, materialize, online + training snapshot."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest
from conftest_features import (
    FEATURE_REPO,
    FEATURE_SERVICE,
    FEATURES,
    TRANSFORM,
    make_features_home,
    port_open,
    purge_sql_registry,
)

from mlops_provider.exceptions import FeatureStoreError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def features_home(tmp_path_factory):
    yield from make_features_home(tmp_path_factory)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_build_partitions_is_idempotent_and_covers_january(features_home):
    from mlops_provider.operators.feast import OfflinePartitionOperator

    paths, built = features_home["paths"], features_home["built"]
    files = sorted(p for p in paths.lake.rglob("*.parquet"))
    before = {p: _digest(p) for p in files}
    # the operator path (file.py:function), same input -> same result and byte-identical files
    again = OfflinePartitionOperator(
        task_id="partition", transform=TRANSFORM, landed_files=features_home["landed"], lake_dir=str(paths.lake)
    ).execute(context={})
    assert again == built
    assert {p: _digest(p) for p in sorted(paths.lake.rglob("*.parquet"))} == before

    assert built["months"] == ["2013-01"]
    assert built["window_start"].startswith("2013-01-01")
    assert built["window_end"].startswith("2013-02-01")
    for view in ("origin_weather_hourly", "carrier_delay_stats", "plane_attributes"):
        assert any((paths.offline / view).glob("*.parquet")), view
    labels = pd.read_parquet(paths.labels / "month=2013-01.parquet")
    assert len(labels) == built["rows"]["labels"] > 25_000
    assert labels["arr_delayed"].isin([0, 1]).all()
    assert str(labels["event_timestamp"].dt.tz) == "UTC"
    # cancelled flights (no arr_delay) are not labelled
    raw = pd.read_parquet(paths.raw / "flights" / "month=2013-01.parquet")
    assert len(labels) == int(raw["arr_delay"].notna().sum())


def test_apply_twice_materialize_and_online_features(features_home):
    from mlops_provider.operators.feast import FeastApplyOperator, FeastMaterializeOperator

    built = features_home["built"]
    apply = FeastApplyOperator(task_id="apply", repo_path=str(FEATURE_REPO))
    first = apply.execute(context={})
    assert first["changed"] is True
    assert "flights_delay_v1" in first["diff"]

    mat = FeastMaterializeOperator(
        task_id="materialize", repo_path=str(FEATURE_REPO), start=built["window_start"], end=built["window_end"]
    ).execute(context={})
    assert sorted(mat["feature_views"]) == ["carrier_delay_stats", "origin_weather_hourly", "plane_attributes"]
    assert mat["rows"]["origin_weather_hourly"] == 3  # EWR, JFK, LGA
    assert mat["rows"]["plane_attributes"] > 3000

    # a second apply (fresh operator, fresh store) sees no change and keeps materialization history
    second = FeastApplyOperator(task_id="apply", repo_path=str(FEATURE_REPO)).execute(context={})
    assert second == {"changed": False, "diff": ""}
    store = FeastApplyOperator(task_id="x", repo_path=str(FEATURE_REPO)).feature_store
    assert store.get_feature_view("origin_weather_hourly").materialization_intervals

    fs = store.get_feature_service(FEATURE_SERVICE)
    online = store.get_online_features(
        features=fs,
        entity_rows=[
            {"origin": "JFK", "carrier": "UA", "tailnum": "N14228",
             "sched_dep_hour": 7, "weekday": 2, "month": 1, "distance": 1400.0}
        ],
    ).to_dict()
    for name in FEATURES:
        assert name in online, name
    non_null = ["temp", "humid", "visib", "carrier_delay_rate_7d", "carrier_flights_7d", "plane_year",
                "plane_seats", "sched_dep_hour", "distance"]
    assert all(online[n][0] is not None for n in non_null), {n: online[n] for n in non_null}
    assert online["sched_dep_hour"][0] == 7.0 and online["distance"][0] == 1400.0
    # the last carrier stats of January (day 2013-01-31) are what the online store serves
    stats = pd.read_parquet(features_home["paths"].offline / "carrier_delay_stats")
    last = stats[(stats["carrier"] == "UA")].sort_values("event_timestamp").iloc[-1]
    assert online["carrier_flights_7d"][0] == pytest.approx(last["carrier_flights_7d"])


def test_training_snapshot_point_in_time_and_reproducible(features_home):
    from mlops_provider.operators.feast import FeastApplyOperator, FeastTrainingDatasetOperator
    from mlops_provider.runtime.features.snapshot import load_snapshot

    paths = features_home["paths"]
    FeastApplyOperator(task_id="apply", repo_path=str(FEATURE_REPO)).execute(context={})  # no-op if applied

    def run() -> dict:
        return FeastTrainingDatasetOperator(
            task_id="dataset",
            repo_path=str(FEATURE_REPO),
            feature_service=FEATURE_SERVICE,
            labels_dir=str(paths.labels),
            label="arr_delayed",
            snapshot_root=str(paths.snapshots),
            validation_days=7,
        ).execute(context={})

    first, second = run(), run()
    assert first["path"] == second["path"] and first["hash"] == second["hash"]
    assert len(list(paths.snapshots.iterdir())) == 1  # no temp dirs left, no second copy

    df, manifest = load_snapshot(first["path"])
    labels = pd.read_parquet(paths.labels)
    assert len(df) == len(labels)  # a point-in-time join keeps every entity row
    assert manifest["rows"] == first["rows"] and sum(first["rows"].values()) == len(df)
    for col in ["event_timestamp", "origin", "carrier", "tailnum", *FEATURES, "arr_delayed", "split"]:
        assert col in df.columns, col
    assert df.columns.is_unique
    # time split: every validation row is later than every train row, last 7 days are validation
    assert df.loc[df.split == "train", "event_timestamp"].max() < df.loc[df.split == "validation", "event_timestamp"].min()
    # cut on the data's own clock: exactly 7 days before the last event (not at a UTC midnight)
    last = df["event_timestamp"].max()
    assert pd.Timestamp(first["split"]["validation_start"]) == last - pd.Timedelta(days=7)
    # point in time: weather comes from the latest hour at or before departure, within 3 hours
    row = df[(df.origin == "EWR") & (df.event_timestamp == pd.Timestamp("2013-01-01 10:15", tz="UTC"))].iloc[0]
    weather = pd.read_parquet(paths.offline / "origin_weather_hourly")
    expected = weather[(weather.origin == "EWR") & (weather.event_timestamp <= row.event_timestamp)]
    assert row["temp"] == expected.sort_values("event_timestamp").iloc[-1]["temp"]
    # no carrier stats exist before 2013-01-02 (a 1-day gap), so the first day has none
    assert df.loc[df.event_timestamp < pd.Timestamp("2013-01-02", tz="UTC"), "carrier_flights_7d"].isna().all()
    assert df.loc[df.event_timestamp >= pd.Timestamp("2013-01-03", tz="UTC"), "carrier_flights_7d"].notna().mean() > 0.99


def test_training_snapshot_end_and_sample_are_deterministic(features_home):
    from mlops_provider.operators.feast import FeastApplyOperator, FeastTrainingDatasetOperator

    paths = features_home["paths"]
    FeastApplyOperator(task_id="apply", repo_path=str(FEATURE_REPO)).execute(context={})
    kwargs = dict(
        task_id="dataset", repo_path=str(FEATURE_REPO), feature_service=FEATURE_SERVICE,
        labels_dir=str(paths.labels), label="arr_delayed", snapshot_root=str(paths.snapshots),
        validation_days=3, end="2013-01-15T00:00:00+00:00", max_rows=2000,
    )
    a = FeastTrainingDatasetOperator(**kwargs).execute(context={})
    b = FeastTrainingDatasetOperator(**kwargs).execute(context={})
    assert a["hash"] == b["hash"]
    assert sum(a["rows"].values()) == 2000
    assert a["window"]["end"] < "2013-01-15"


def test_invalid_repo_raises_feature_store_error(tmp_path, monkeypatch):
    from mlops_provider.operators.feast import FeastApplyOperator

    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "home"))
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "feature_store.yaml").write_text((FEATURE_REPO / "feature_store.yaml").read_text())
    (repo / "broken_defs.py").write_text("from feast import Entity\nx = Entity(name='x', join_keys=[\n")
    with pytest.raises(FeatureStoreError, match="importing the definitions failed"):
        FeastApplyOperator(task_id="apply", repo_path=str(repo)).execute(context={})
    with pytest.raises(FeatureStoreError, match="does not exist"):
        FeastApplyOperator(task_id="apply", repo_path=str(tmp_path / "nope")).execute(context={})


@pytest.mark.parametrize("yaml_file", ["feature_store.yaml", "feature_store.production.yaml"])
def test_feast_itself_loads_both_configs(yaml_file, tmp_path, monkeypatch):
    from feast.repo_config import load_repo_config as feast_load_repo_config

    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    cfg = feast_load_repo_config(FEATURE_REPO, FEATURE_REPO / yaml_file)
    assert cfg.project == "flights_delay"
    assert type(cfg.offline_store).__name__ == "PointInTimeFileOfflineStoreConfig"
    if yaml_file == "feature_store.yaml":
        assert cfg.registry.path == f"{tmp_path}/feast/registry.db"
        assert cfg.online_store.path == f"{tmp_path}/feast/online_store.db"


def test_production_config_loads():
    from mlops_provider.runtime.features.store import load_repo_config

    cfg = load_repo_config(FEATURE_REPO, fs_yaml_file="feature_store.production.yaml")
    assert cfg.project == "flights_delay"
    assert cfg.registry.registry_type == "sql"
    assert cfg.registry.path.startswith("postgresql+psycopg://")
    assert cfg.online_store.type == "redis"
    assert cfg.online_store.connection_string == "127.0.0.1:6379"


@pytest.mark.skipif(not (port_open(5432) and port_open(6379)), reason="loopback PostgreSQL/Redis not running")
def test_production_apply_materialize_on_loopback_redis_postgres(features_home):
    from mlops_provider.runtime.features.materialize import materialize
    from mlops_provider.runtime.features.store import apply_repo, open_store

    store = open_store(FEATURE_REPO, fs_yaml_file="feature_store.production.yaml")
    registry_url = store.config.registry.path
    purge_sql_registry(registry_url, "flights_delay")
    try:
        apply_repo(store)
        assert apply_repo(store)["changed"] is False
        result = materialize(store, "2013-01-31T00:00:00+00:00", "2013-02-02T00:00:00+00:00", ["carrier_delay_stats"])
        assert result["rows"]["carrier_delay_stats"] > 5
        online = store.get_online_features(
            features=["carrier_delay_stats:carrier_flights_7d"], entity_rows=[{"carrier": "UA"}]
        ).to_dict()
        assert online["carrier_flights_7d"][0] and online["carrier_flights_7d"][0] > 100
    finally:
        store.teardown()
        purge_sql_registry(registry_url, "flights_delay")
