"""The bike_demand Feast repo for real: apply, point-in-time join of the labels, materialize, online read."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[2]
BIKE_REPO = REPO / "feature_repo" / "bike_demand"
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    home = tmp_path_factory.mktemp("bike_feast")
    mp = pytest.MonkeyPatch()
    mp.setenv("MLOPS_HOME", str(home))
    from mlops_provider.examples.bike_demand.data import write_landing_months
    from mlops_provider.paths import ModelPaths
    from mlops_provider.runtime.features.store import apply_repo, open_store

    spec = importlib.util.spec_from_file_location("bike_demand_transforms_it", BIKE_REPO / "transforms.py")
    transforms = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = transforms
    spec.loader.exec_module(transforms)
    paths = ModelPaths.for_model("bike_demand")
    result = transforms.build_partitions(write_landing_months(home / "landing", 2011, [1, 2]), str(paths.lake))
    fs = open_store(BIKE_REPO)
    assert apply_repo(fs)["changed"] is True
    yield {"fs": fs, "paths": paths, "result": result, "home": home}
    mp.undo()


def _read(path: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in sorted(path.glob("*.parquet"))], ignore_index=True)


def test_the_registry_and_online_store_are_the_models_own(store) -> None:
    assert (store["home"] / "feast" / "bike_demand" / "registry.db").is_file()
    assert not (store["home"] / "feast" / "registry.db").exists()  # flights_delay's file stays untouched


def test_labels_join_their_own_hour_point_in_time(store) -> None:
    fs, paths = store["fs"], store["paths"]
    labels = _read(paths.labels)
    joined = fs.get_historical_features(entity_df=labels, features=fs.get_feature_service("bike_demand_v1")).to_df()
    joined = joined.loc[:, ~joined.columns.duplicated(keep="last")]
    assert len(joined) == len(labels) == 2674
    history = _read(paths.offline / "segment_demand_history")
    weather = _read(paths.offline / "city_weather_hourly")
    merged = joined.merge(history, on=["segment", "event_timestamp"], suffixes=("", "_view"))
    assert len(merged) == len(joined)  # every label hour has its history row, stamped at the same hour
    pd.testing.assert_series_equal(merged["riders_mean_7d"], merged["riders_mean_7d_view"], check_names=False)
    w = joined.merge(weather, on=["city", "event_timestamp"], suffixes=("", "_view"))
    assert len(w) == len(joined) and (w["weathersit"] == w["weathersit_view"]).all()
    assert joined[["hr", "weekday", "workingday", "holiday", "season"]].notna().all().all()
    assert joined["temp"].notna().all() and joined["riders_mean_24h"].notna().mean() > 0.99


def test_materialized_online_values_are_the_latest(store) -> None:
    from mlops_provider.runtime.features.materialize import materialize

    fs, result = store["fs"], store["result"]
    materialize(fs, result["window_start"], result["window_end"])
    online = fs.get_online_features(
        features=fs.get_feature_service("bike_demand_v1"),
        entity_rows=[{"segment": "registered", "city": "washington_dc", "hr": 8, "weekday": 1, "workingday": 1,
                      "holiday": 0, "season": 1}],
    ).to_dict()
    history = _read(store["paths"].offline / "segment_demand_history")
    last = history[history["segment"] == "registered"].sort_values("event_timestamp").iloc[-1]
    assert online["riders_mean_7d"][0] == pytest.approx(last["riders_mean_7d"])
    assert online["hr"][0] == 8.0 and online["weathersit"][0] is not None
