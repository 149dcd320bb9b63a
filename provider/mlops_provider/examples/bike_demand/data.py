"""Read the real hourly bike-share data (UCI Bike Sharing, Washington DC, 2011) without importing ISLP.

The ISLP package (the *Introduction to Statistical Learning* labs, a dev dependency) ships the year 2011
of the UCI Bike Sharing data set as ``ISLP/data/Bikeshare.csv``: 8,645 hourly rows (115 hours of 8,760
are missing in the source) with the calendar (``season``, ``mnth``, ``day`` = day of the year, ``hr``,
``holiday``, ``weekday`` 0 = Sunday, ``workingday``), the weather (``weathersit``, ``temp``, ``atemp``,
``hum``, ``windspeed``, normalized as in UCI: temp / 41 °C, atemp / 50 °C, hum / 100, windspeed / 67)
and the rentals of the hour (``casual``, ``registered``, ``bikers`` = their sum).

``import ISLP`` pulls torch, lifelines, pygam ...; we only need one CSV, so the package directory is found
with ``importlib.util.find_spec`` (nothing executed) and the file read with pandas.

The landing helpers play the upstream system: one month of rides and one month of weather as parquet,
named ``rides_YYYY_MM.parquet`` / ``weather_YYYY_MM.parquet`` (the data contract's table names are the
file-name prefixes). Like a real export they carry a *naive local* wall-clock column ``time_local`` (the
hour's start in Washington DC, America/New_York); the feature pipeline declares that zone and converts it
to UTC. Runs inside tasks, tests and demos only (pandas is heavy).
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import pandas as pd

from mlops_provider.exceptions import MissingDependencyError
from mlops_provider.runtime.io.atomic import atomic_path

YEAR = 2011
#: The zone of ``time_local`` in the landed files (the feature pipeline declares the same one).
LOCAL_TZ = "America/New_York"
RIDE_COLUMNS = ["time_local", "season", "mnth", "day", "hr", "holiday", "weekday", "workingday",
                "casual", "registered", "bikers"]
WEATHER_COLUMNS = ["time_local", "weathersit", "temp", "atemp", "hum", "windspeed"]
TABLES = {"rides": RIDE_COLUMNS, "weather": WEATHER_COLUMNS}


def data_file() -> Path:
    """Path of ``Bikeshare.csv`` inside the installed ISLP package (the package is not imported)."""
    spec = importlib.util.find_spec("ISLP")  # finds the package without executing it
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError("ISLP", "dev")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "Bikeshare.csv"
    if not path.is_file():
        raise MissingDependencyError("ISLP (with data/Bikeshare.csv)", "dev")
    return path


@lru_cache(maxsize=1)
def _load() -> pd.DataFrame:
    df = pd.read_csv(data_file())
    df = df.drop(columns=[c for c in df.columns if c.startswith("Unnamed")])
    # ``day`` is the day of the year 2011 (1..365), ``hr`` the hour of the day (local wall clock)
    df.insert(0, "time_local", pd.Timestamp(f"{YEAR}-01-01")
              + pd.to_timedelta(df["day"] - 1, unit="D") + pd.to_timedelta(df["hr"], unit="h"))
    return df.sort_values("time_local", kind="stable").reset_index(drop=True)


def load_hourly() -> pd.DataFrame:
    """The whole year, one row per hour, with the naive local ``time_local`` (a fresh copy)."""
    return _load().copy()


def months() -> list[int]:
    """The months the data covers (1..12)."""
    return sorted(int(m) for m in _load()["time_local"].dt.month.unique())


def month_table(table: str, year: int, month: int) -> pd.DataFrame:
    """The raw ``rides`` or ``weather`` rows of one local-time month."""
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; expected one of {sorted(TABLES)}")
    df = _load()
    local = df["time_local"]
    part = df[(local.dt.year == year) & (local.dt.month == month)]
    if part.empty:
        raise ValueError(f"Bikeshare.csv has no rows for {year:04d}-{month:02d} (it covers {YEAR} only)")
    return part[TABLES[table]].reset_index(drop=True)


# --- landing helpers (demos and tests "land" real data the way an upstream system would) --------------


def _atomic_parquet(df: pd.DataFrame, path: Path) -> str:
    """Write ``df`` to ``path`` atomically (hidden temp file + rename): watchers never see half a file."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False, engine="pyarrow")
    return str(path)


def write_landing_month(landing_dir: str | Path, year: int, month: int) -> list[str]:
    """Land one month: ``rides_YYYY_MM.parquet`` and ``weather_YYYY_MM.parquet`` (raw columns + the naive
    local ``time_local``). Returns the two paths. Rewriting a month writes identical files."""
    landing = Path(landing_dir)
    return [
        _atomic_parquet(month_table(table, year, month), landing / f"{table}_{year:04d}_{month:02d}.parquet")
        for table in ("rides", "weather")
    ]


def write_landing_months(landing_dir: str | Path, year: int, months_: list[int]) -> list[str]:
    """Land several months (see :func:`write_landing_month`), oldest first."""
    out: list[str] = []
    for m in sorted(months_):
        out += write_landing_month(landing_dir, year, m)
    return out


__all__ = ["LOCAL_TZ", "TABLES", "YEAR", "data_file", "load_hourly", "month_table", "months",
           "write_landing_month", "write_landing_months"]
