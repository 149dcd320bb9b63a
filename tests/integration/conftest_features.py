"""Shared fixtures of the features-area tests (imported explicitly by tests/*/test_features_*.py)."""

from __future__ import annotations

import importlib.util
import socket
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
FEATURE_REPO = REPO_ROOT / "feature_repo"
TRANSFORM = f"{FEATURE_REPO / 'transforms.py'}:build_partitions"
FEATURE_SERVICE = "flights_delay_v1"
FEATURES = [
    "temp", "dewp", "humid", "wind_speed", "wind_gust", "precip", "pressure", "visib",
    "carrier_delay_rate_7d", "carrier_mean_arr_delay_7d", "carrier_flights_7d",
    "plane_year", "plane_seats", "plane_engines", "sched_dep_hour", "weekday", "month", "distance",
]


def load_transforms():
    """``feature_repo/transforms.py`` as a module (it is not a package)."""
    name = "flights_delay_transforms_under_test"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, FEATURE_REPO / "transforms.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def make_features_home(tmp_path_factory):
    """Generator: a home with Jan 2013 + planes landed and built into lake partitions (MLOPS_HOME set)."""
    from mlops_provider.examples.flights.data import write_landing_month, write_landing_planes
    from mlops_provider.paths import ModelPaths

    home = tmp_path_factory.mktemp("mlops_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_HOME", str(home))
        paths = ModelPaths.for_model("flights_delay", home)
        landed = write_landing_month(paths.landing, 2013, 1) + [write_landing_planes(paths.landing)]
        built = load_transforms().build_partitions(landed, str(paths.lake))
        yield {"home": home, "paths": paths, "landed": landed, "built": built}


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def purge_sql_registry(url: str, project: str) -> None:
    """Remove every registry row of ``project`` (Feast 0.67's teardown leaves feature_view_version_history
    rows behind, which makes the next apply of the same project fail with a unique violation)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for table in sa.inspect(conn).get_table_names():
            cols = {c["name"] for c in sa.inspect(conn).get_columns(table)}
            if "project_id" in cols:
                conn.execute(sa.text(f'DELETE FROM "{table}" WHERE project_id = :p'), {"p": project})
    engine.dispose()
