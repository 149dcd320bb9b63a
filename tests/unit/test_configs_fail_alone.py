"""A bad YAML beside a good one: Airflow's DagBag (the DAG processor's) records an import error naming the
bad file, key and line, and still loads every DAG of the good one."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def _folder(tmp_path: Path) -> Path:
    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy(REPO / "dags" / "mlops_pipelines.py", dags)
    shutil.copytree(REPO / "feature_repo", tmp_path / "feature_repo", ignore=shutil.ignore_patterns("__pycache__", "data"))
    good = yaml.safe_load((REPO / "dags" / "flights_delay.yaml").read_text())
    (dags / "flights_delay.yaml").write_text(yaml.safe_dump(good, sort_keys=False))
    bad = dict(good, model="broken_model")
    bad["training"] = {**good["training"], "epoch": 3}  # the typo users make: epoch for epochs
    (dags / "broken_model.yaml").write_text(yaml.safe_dump(bad, sort_keys=False))
    return dags


def test_a_bad_yaml_fails_alone_in_airflows_import_errors(tmp_path: Path, monkeypatch) -> None:
    from airflow.dag_processing.dagbag import BundleDagBag

    monkeypatch.setenv("MLOPS_CONFIG_CACHE_DIR", str(tmp_path / "cache"))
    dags = _folder(tmp_path)
    bag = BundleDagBag(dag_folder=str(dags), bundle_path=dags, bundle_name="test", load_op_links=False)
    assert {"flights_delay__features", "flights_delay__training", "flights_delay__deploy",
            "flights_delay__monitor"} <= set(bag.dag_ids)
    assert not any(d.startswith("broken_model__") for d in bag.dag_ids)
    assert "mlops_invalid_configs" not in bag.dag_ids
    assert len(bag.import_errors) == 1
    message = next(iter(bag.import_errors.values()))
    assert "broken_model.yaml" in message and "training.epoch" in message and "did you mean 'epochs'" in message
    assert "(line " in message


def test_all_good_yamls_give_no_placeholder(tmp_path: Path, monkeypatch) -> None:
    from mlops_provider.factory import dags_from_directory

    monkeypatch.setenv("MLOPS_CONFIG_CACHE_DIR", str(tmp_path / "cache"))
    dags = _folder(tmp_path)
    (dags / "broken_model.yaml").unlink()
    assert "mlops_invalid_configs" not in dags_from_directory(dags)
