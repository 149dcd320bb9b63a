from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mlops_provider.config import load_config, load_configs
from mlops_provider.exceptions import ConfigError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "dags" / "flights_delay.yaml"


def _write(tmp_path: Path, data: dict) -> Path:
    (tmp_path / "dags").mkdir(exist_ok=True)
    if not (tmp_path / "feature_repo").exists():
        shutil.copytree(REPO / "feature_repo", tmp_path / "feature_repo",
                        ignore=shutil.ignore_patterns("__pycache__", "data"))
    p = tmp_path / "dags" / "model.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def _example() -> dict:
    return yaml.safe_load(EXAMPLE.read_text())


def test_example_config_loads() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.model == "flights_delay"
    assert cfg.features.feature_service == "flights_delay_v1"
    assert Path(cfg.repo_path) == REPO / "feature_repo"
    assert cfg.transform_ref.endswith("feature_repo/transforms.py:build_partitions")
    assert "origin" in cfg.training.features.categorical
    assert cfg.dag_id("training") == "flights_delay__training"


def test_unknown_key_names_file_key_and_fix(tmp_path: Path) -> None:
    data = _example()
    data["training"]["epochz"] = 3
    p = _write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert str(p) in msg and "training.epochz" in msg and "did you mean 'epochs'" in msg


def test_wrong_type_names_key(tmp_path: Path) -> None:
    data = _example()
    data["training"]["epochs"] = "many"
    p = _write(tmp_path, data)
    with pytest.raises(ConfigError, match=r"training\.epochs.*fix: expected"):
        load_config(p)


def test_missing_feature_service_key(tmp_path: Path) -> None:
    data = _example()
    del data["features"]["feature_service"]
    with pytest.raises(ConfigError, match=r"features\.feature_service.*add this key"):
        load_config(_write(tmp_path, data))


def test_feature_service_not_in_repo(tmp_path: Path) -> None:
    data = _example()
    data["features"]["feature_service"] = "flights_delay_v9"
    with pytest.raises(ConfigError, match=r"'flights_delay_v9' is not defined .*flights_delay_v1"):
        load_config(_write(tmp_path, data))


def test_duplicate_model_names(tmp_path: Path) -> None:
    p = _write(tmp_path, _example())
    shutil.copy(p, p.with_name("copy.yaml"))
    with pytest.raises(ConfigError, match="also used by"):
        load_configs(p.parent)


def test_bad_yaml_is_a_dag_import_error(tmp_path: Path) -> None:
    """The bad config surfaces as a DagBag import error that names the file, the key and the fix."""
    data = _example()
    data["gate"]["flors"] = {"roc_auc": 0.7}
    p = _write(tmp_path, data)
    shutil.copy(REPO / "dags" / "mlops_pipelines.py", p.parent / "mlops_pipelines.py")
    code = (
        "import json; from airflow.dag_processing.dagbag import DagBag;"
        f"b = DagBag(dag_folder={str(p.parent)!r});"
        "print(json.dumps({k: str(v) for k, v in b.import_errors.items()}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={"AIRFLOW_HOME": str(tmp_path / "af"), "PATH": "/usr/bin:/bin",
                              "MLOPS_HOME": str(tmp_path / "home")})
    assert out.returncode == 0, out.stderr[-3000:]
    errors = out.stdout.strip().splitlines()[-1]
    assert "mlops_pipelines.py" in errors
    assert "gate.flors" in errors and "did you mean 'floors'" in errors and str(p) in errors
