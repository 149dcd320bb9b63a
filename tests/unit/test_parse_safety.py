"""DAG files and operator modules must not import heavy libraries at parse time (DESIGN.md §4)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = ["torch", "mlflow", "feast", "bentoml", "evidently", "pandas", "numpy", "sklearn"]
LIGHT_PACKAGES = ["operators", "hooks", "sensors", "triggers", "links"]


def _light_modules() -> list[str]:
    mods = ["mlops_provider", "mlops_provider.config", "mlops_provider.factory", "mlops_provider.paths",
            "mlops_provider.exceptions", "mlops_provider.get_provider_info"]
    for pkg in LIGHT_PACKAGES:
        for f in sorted((REPO / "provider" / "mlops_provider" / pkg).glob("*.py")):
            mods.append(f"mlops_provider.{pkg}" + ("" if f.stem == "__init__" else f".{f.stem}"))
    return mods


def _run(code: str, tmp_path: Path) -> dict:
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"), "MLOPS_HOME": str(tmp_path / "mlops")}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True,
                         text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-4000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_dag_files_parse_without_errors_or_heavy_imports(tmp_path: Path) -> None:
    result = _run(
        f"""
        import json, sys
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(dag_folder={str(REPO / 'dags')!r})
        heavy = sorted(m for m in {HEAVY!r} if m in sys.modules)
        print(json.dumps({{"dags": sorted(bag.dag_ids), "errors": {{k: str(v) for k, v in bag.import_errors.items()}},
                           "heavy": heavy}}))
        """,
        tmp_path,
    )
    assert result["errors"] == {}, result["errors"]
    assert result["heavy"] == [], f"parsing dags/ imported heavy modules: {result['heavy']}"
    for kind in ("features", "training", "deploy", "monitor"):
        assert f"flights_delay__{kind}" in result["dags"]


def test_operator_modules_are_light(tmp_path: Path) -> None:
    mods = _light_modules()
    assert any(".operators." in m for m in mods)
    result = _run(
        f"""
        import importlib, json, sys
        offenders = {{}}
        for mod in {mods!r}:
            before = set(sys.modules)
            importlib.import_module(mod)
            new = {{m.split('.')[0] for m in set(sys.modules) - before}}
            bad = sorted(new & set({HEAVY!r}))
            if bad:
                offenders[mod] = bad
        print(json.dumps({{"offenders": offenders, "heavy": sorted(m for m in {HEAVY!r} if m in sys.modules)}}))
        """,
        tmp_path,
    )
    assert result["offenders"] == {}, f"modules importing heavy libraries: {result['offenders']}"
    assert result["heavy"] == []
