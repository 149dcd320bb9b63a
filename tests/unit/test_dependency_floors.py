"""The lock never resolves a dependency below the first release past its known advisories.

Floors: mlflow >= 3.10 (path traversal / SSRF / auth advisories of 2.x-3.9), bentoml >= 1.4.39 (remote code
execution through crafted pickles and SSRF advisories up to 1.4.38), feast >= 0.63 (advisories of the
feature server), and Airflow and torch at least at the versions the lock pins today (both had advisories
fixed in recent releases; a lock refresh may move them forward, never back). ``make audit`` runs pip-audit
against the whole lock for everything else.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
FLOORS = {
    "mlflow": "3.10",
    "bentoml": "1.4.39",
    "feast": "0.63",
    "apache-airflow": "3.3.2",
    "apache-airflow-core": "3.3.2",
    "apache-airflow-task-sdk": "1.3.2",
    "torch": "2.15.0",
}


def _locked() -> dict[str, list[str]]:
    data = tomllib.loads((REPO / "uv.lock").read_text())
    out: dict[str, list[str]] = {}
    for pkg in data["package"]:
        out.setdefault(re.sub(r"[-_.]+", "-", pkg["name"]).lower(), []).append(pkg["version"])
    return out


@pytest.mark.parametrize("name,floor", sorted(FLOORS.items()))
def test_locked_version_is_past_its_advisories(name: str, floor: str) -> None:
    versions = _locked().get(name)
    assert versions, f"{name} is not in uv.lock"
    for v in versions:
        assert Version(v) >= Version(floor), f"uv.lock pins {name}=={v}, below the floor {floor}"


def test_pyproject_floors_do_not_allow_older_releases() -> None:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = [*deps["dependencies"], *(d for ds in deps["optional-dependencies"].values() for d in ds)]
    for name in ("mlflow", "bentoml", "feast"):
        lows = [Version(m.group(1)) for s in specs if re.match(rf"{name}(\[|>|=|<|\s|$)", s)
                for m in [re.search(r">=\s*([0-9][0-9.]*)", s)] if m]
        assert lows and min(lows) >= Version(FLOORS[name]), (name, lows)
