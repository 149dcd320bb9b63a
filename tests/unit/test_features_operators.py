"""Feast hook / operators without Feast itself: connection settings, arguments, transforms."""

from __future__ import annotations

import json

import pytest

from mlops_provider.exceptions import ConfigError, FeatureStoreError
from mlops_provider.hooks.feast import FeastHook
from mlops_provider.operators.feast import (
    FeastMaterializeOperator,
    FeastTrainingDatasetOperator,
    OfflinePartitionOperator,
    as_path_list,
)


def test_hook_without_connection_falls_back_to_repo_yaml(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_FEAST_DEFAULT", raising=False)
    assert FeastHook().settings == {}


def test_hook_connection_extras_become_overrides(monkeypatch):
    extra = {
        "fs_yaml_file": "feature_store.production.yaml",
        "registry_path": "postgresql+psycopg://u@h/db",
        "config_overrides": json.dumps({"online_store": {"connection_string": "h:6379"}}),
    }
    monkeypatch.setenv("AIRFLOW_CONN_FEAST_DEFAULT", json.dumps({"conn_type": "feast", "extra": extra}))
    hook = FeastHook()
    assert hook.settings["fs_yaml_file"] == "feature_store.production.yaml"
    assert hook.build_overrides(hook.settings) == {
        "online_store": {"connection_string": "h:6379"},
        "registry": {"path": "postgresql+psycopg://u@h/db"},
    }
    with pytest.raises(ConfigError, match="not valid JSON"):
        FeastHook.build_overrides({"config_overrides": "{oops"})


def test_hook_metadata():
    assert (FeastHook.conn_type, FeastHook.default_conn_name, FeastHook.hook_name) == ("feast", "feast_default", "Feast")
    assert FeastHook.conn_name_attr == "feast_conn_id"
    assert "hidden_fields" in FeastHook.get_ui_field_behaviour()
    assert set(FeastHook.CONN_FIELDS) >= {"fs_yaml_file", "registry_path", "online_store_path"}


def test_store_settings_need_a_repo_path_and_are_plain_values(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_FEAST_DEFAULT", raising=False)
    with pytest.raises(FeatureStoreError, match="no Feast repo path"):
        FeastHook().store_settings()
    assert FeastHook(repo_path="/repo").store_settings() == {
        "repo_path": "/repo", "fs_yaml_file": None, "overrides": None, "online_store_password": None,
    }
    extra = {"online_store_path": "/o.db", "repo_path": "/from_conn"}
    monkeypatch.setenv("AIRFLOW_CONN_FEAST_DEFAULT",
                       json.dumps({"conn_type": "feast", "password": "s3cret", "extra": extra}))
    assert FeastHook().store_settings() == {
        "repo_path": "/from_conn", "fs_yaml_file": None, "overrides": {"online_store": {"path": "/o.db"}},
        "online_store_password": "s3cret",
    }


def test_as_path_list_forms(tmp_path):
    (tmp_path / "b.parquet").write_bytes(b"")
    (tmp_path / "a.parquet").write_bytes(b"")
    (tmp_path / ".hidden.parquet").write_bytes(b"")
    assert as_path_list(["x", "y"]) == ["x", "y"]
    assert as_path_list('["x", "y"]') == ["x", "y"]
    assert as_path_list("['x', 'y']") == ["x", "y"]
    assert as_path_list("x, y") == ["x", "y"]
    assert as_path_list(str(tmp_path)) == [str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")]
    assert as_path_list(None) == []


def test_constructors_store_only_and_declare_templates():
    op = FeastTrainingDatasetOperator(
        task_id="t", repo_path="/nope", feature_service="fs", labels_dir="{{ x }}", label="y", snapshot_root="/s",
    )
    assert op.label_column == "y" and op.validation_days == 21 and op.max_rows is None
    assert {"labels_dir", "end", "snapshot_root"} <= set(op.template_fields)
    mat = FeastMaterializeOperator(task_id="m", repo_path="/nope", start="{{ a }}", end="{{ b }}")
    assert {"start", "end"} <= set(mat.template_fields)


def test_offline_partition_operator_runs_a_file_transform(tmp_path):
    code = "def build(files, lake):\n    return {'n': len(files), 'lake': lake}\n"
    (tmp_path / "t.py").write_text(code)
    op = OfflinePartitionOperator(
        task_id="p", transform=f"{tmp_path / 't.py'}:build", landed_files='["a", "b"]', lake_dir="/lake"
    )
    assert op.execute(context={}) == {"n": 2, "lake": "/lake"}
    bad = OfflinePartitionOperator(task_id="p", transform=f"{tmp_path / 't.py'}:nope", landed_files="a", lake_dir="/l")
    with pytest.raises(FeatureStoreError, match="not a function"):
        bad.execute(context={})
    with pytest.raises(FeatureStoreError, match="must look like"):
        OfflinePartitionOperator(task_id="p", transform="nocolon", landed_files="a", lake_dir="/l").execute(context={})


def test_offline_partition_hands_the_transform_utc_for_declared_zones(tmp_path):
    """A transform that reads its files with plain pandas (no read_landed) still gets UTC instants for every
    column whose contract declares its zone: naive New York wall-clock times, parquet and CSV alike; the other
    columns and the undeclared files arrive as landed."""
    import pandas as pd

    landing = tmp_path / "landing"
    landing.mkdir()
    local = ["2013-01-01 05:00", "2013-07-01 05:00", "2013-11-03 01:30"]  # winter, summer, the repeated hour
    pd.DataFrame({"sched": pd.to_datetime(local), "flight": [1, 2, 3], "note": ["a", "b", "c"]}).to_parquet(
        landing / "flights_2013_01.parquet", index=False)
    (landing / "flights_2013_02.csv").write_text("sched,flight,code\n2013-01-01 05:00,7,007\n,8,\n")
    pd.DataFrame({"time_hour": pd.to_datetime(local)}).to_parquet(landing / "weather_2013.parquet", index=False)
    code = (
        "import pandas as pd\n"
        "def build(files, lake):\n"
        "    out = {}\n"
        "    for f in files:\n"
        "        df = pd.read_parquet(f) if f.endswith('.parquet') else pd.read_csv(f, dtype=str,"
        " keep_default_na=False)\n"
        "        out[f.rsplit('/', 1)[-1]] = {c: [str(v) for v in df[c]] for c in df.columns}\n"
        "    return out\n"
    )
    (tmp_path / "t.py").write_text(code)
    contract = {"tables": {
        "flights": {"columns": {"sched": {"dtype": "datetime", "tz": "America/New_York"}, "flight": {"dtype": "int"}}},
        "weather": {"columns": {"time_hour": {"dtype": "datetime"}}},  # no zone declared: handed over as landed
    }}
    files = sorted(str(p) for p in landing.iterdir())
    op = OfflinePartitionOperator(task_id="p", transform=f"{tmp_path / 't.py'}:build", landed_files=files,
                                  lake_dir="/lake", contract=contract)
    got = op.execute(context={})
    assert got["flights_2013_01.parquet"]["sched"] == [
        "2013-01-01 10:00:00+00:00", "2013-07-01 09:00:00+00:00", "2013-11-03 05:30:00+00:00"]  # EST, EDT, first
    assert got["flights_2013_01.parquet"]["flight"] == ["1", "2", "3"]
    assert got["flights_2013_02.csv"] == {"sched": ["2013-01-01T10:00:00+00:00", ""], "flight": ["7", "8"],
                                          "code": ["007", ""]}  # other cells keep their text
    assert got["weather_2013.parquet"]["time_hour"][0] == "2013-01-01 05:00:00"  # undeclared: as landed
    # without a contract the files are the landed ones
    plain = OfflinePartitionOperator(task_id="p", transform=f"{tmp_path / 't.py'}:build", landed_files=files,
                                     lake_dir="/lake").execute(context={})
    assert plain["flights_2013_01.parquet"]["sched"][0] == "2013-01-01 05:00:00"
    # the landed files themselves are never modified
    assert str(pd.read_parquet(landing / "flights_2013_01.parquet")["sched"].dt.tz) == "None"
