"""Feature pipeline of the ``bike_demand`` model: landed raw files -> lake partitions.

Called by ``OfflinePartitionOperator(transform="feature_repo/bike_demand/transforms.py:build_partitions")``
inside a worker (heavy imports are fine here). Listed in this repo's ``.feastignore``: it defines no Feast
objects.

Landed files (one month each, parquet or CSV; the data contract's tables are the file-name prefixes)::

    rides_YYYY_MM.parquet     one row per hour: time_local, season, mnth, day, hr, holiday, weekday,
                              workingday, casual, registered, bikers
    weather_YYYY_MM.parquet   one row per hour: time_local, weathersit, temp, atemp, hum, windspeed

Lake layout written under ``lake_dir`` (``ModelPaths.lake``)::

    raw/rides/month=YYYY-MM.parquet                 validated raw rides of one (local-time) month
    raw/weather/month=YYYY-MM.parquet               validated raw weather of one month
    offline/city_weather_hourly/month=YYYY-MM.parquet
    offline/segment_demand_history/month=YYYY-MM.parquet
    labels/month=YYYY-MM.parquet                    entity keys + request fields + label (the entity frame)

Time. ``time_local`` is naive wall-clock time in Washington DC: this pipeline DECLARES its zone
(:data:`LANDED_TZ`) and converts it to UTC; everything written is UTC. The spring-forward hour does not
exist in the data; at the fall-back hour the first occurrence of a repeated wall-clock time is taken as
daylight time (EDT), a second one as standard time. A landed column that already carries a zone is only
converted.

Label and features. The label ``riders`` is the number of rentals of one rider segment (casual |
registered) in the hour starting at ``event_timestamp``: two label rows per hour. The demand history of a
segment stamped at ``t`` uses only hours that have *ended* by ``t`` (hour starts ``<= t - 1h``): the same
hour yesterday (``t - 24h``), the same hour a week ago (``t - 168h``), the mean of the last 24 and of the
last 168 hours (missing hours of the source are unknown, not zero: the means are over the known hours).
The weather row stamped ``t`` is the observation reported for the hour starting at ``t`` (a nowcast; in
production the weather feed's current conditions). The first week of a month reads the previous month's
raw rides partition when it is in the lake (land months in order; re-landing a month rewrites it).

Every file is a pure function of the landed files (and the previous month's raw rides), written
atomically, so re-running with the same input rewrites identical files.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import pandas as pd

from mlops_provider.exceptions import DataValidationError
from mlops_provider.runtime.features.contracts import read_landed, transform_result
from mlops_provider.runtime.io.atomic import atomic_path

log = logging.getLogger(__name__)

#: The zone of the naive ``time_local`` column of the landed files.
LANDED_TZ = "America/New_York"
#: The one city of the weather entity (UCI Bike Sharing: Capital Bikeshare, Washington DC).
CITY = "washington_dc"
SEGMENTS = ("casual", "registered")
LABEL = "riders"
REQUEST_FIELDS = ["hr", "weekday", "workingday", "holiday", "season"]
WEATHER_NUMERIC = ["temp", "atemp", "hum", "windspeed"]
HISTORY_FEATURES = ["riders_lag_24h", "riders_lag_168h", "riders_mean_24h", "riders_mean_7d"]
HISTORY_HOURS = 168

_REQUIRED = {
    "rides": ["time_local", *REQUEST_FIELDS, *SEGMENTS],
    "weather": ["time_local", "weathersit", *WEATHER_NUMERIC],
}
_MONTHLY = re.compile(r"^(rides|weather)_(\d{4})_(\d{2})\.(?:parquet|csv)$")
# how a CSV landing is typed (parquet carries its own types); time_local is parsed here, as LOCAL time
_CSV_COLUMNS = {"weathersit": {"dtype": "str"}, "mnth": {"dtype": "str"}}


# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------


def _write(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:  # readers see the old file or the new one, never half of one
        df.reset_index(drop=True).to_parquet(tmp, index=False, engine="pyarrow")


def _classify(landed_files: list[str]) -> dict[str, dict[str, Path]]:
    """``{"2011-01": {"rides": p, "weather": p}}`` from the landed file names."""
    months: dict[str, dict[str, Path]] = {}
    for f in landed_files:
        p = Path(f)
        m = _MONTHLY.match(p.name)
        if not m:
            raise DataValidationError(
                f"landed file {p} has an unexpected name; expected rides_YYYY_MM.parquet or "
                "weather_YYYY_MM.parquet (or the same names with .csv). Rename it or remove it from the "
                "landing zone."
            )
        months.setdefault(f"{m.group(2)}-{m.group(3)}", {})[m.group(1)] = p
    return months


def _read(path: Path, table: str) -> pd.DataFrame:
    if not path.is_file():
        raise DataValidationError(f"landed {table} file {path} does not exist; was it moved after arrival?")
    try:
        df = read_landed(path, _CSV_COLUMNS)
    except DataValidationError:
        raise
    except Exception as e:  # truncated / garbled files: pyarrow and the CSV parser raise many types
        raise DataValidationError(
            f"landed {table} file {path} is unreadable ({type(e).__name__}: {e}); run the data validation "
            "task first and land the file again."
        ) from e
    missing = [c for c in _REQUIRED[table] if c not in df.columns]
    if missing:
        raise DataValidationError(
            f"landed {table} file {path} lacks column(s) {missing}; run the data validation task first."
        )
    df["event_timestamp"] = to_utc(df["time_local"])
    return df


def to_utc(local: pd.Series) -> pd.Series:
    """Wall-clock times in :data:`LANDED_TZ` (naive) -> UTC. Zoned values are only converted.

    A repeated wall-clock time (the fall-back hour) is daylight time at its first occurrence, standard
    time at the next; a wall-clock time that does not exist (spring forward) moves to the next valid one.
    """
    ts = pd.to_datetime(local)
    if getattr(ts.dt, "tz", None) is not None:
        return ts.dt.tz_convert("UTC")
    first = ~ts.duplicated(keep="first").to_numpy()
    zoned = ts.dt.tz_localize(LANDED_TZ, ambiguous=first, nonexistent="shift_forward")
    return zoned.dt.tz_convert("UTC").astype("datetime64[ns, UTC]")


def _prev_month(month: str) -> str:
    return (pd.Period(month, freq="M") - 1).strftime("%Y-%m")


# ----------------------------------------------------------------------------------------------------
# per-view transforms (pure functions, unit-tested)
# ----------------------------------------------------------------------------------------------------


def weather_hourly(weather: pd.DataFrame) -> pd.DataFrame:
    """``city_weather_hourly`` rows: city, event_timestamp (UTC hour start), weathersit, the weather floats."""
    out = pd.DataFrame({"city": CITY, "event_timestamp": weather["event_timestamp"]})
    out["weathersit"] = weather["weathersit"].astype(str).where(weather["weathersit"].notna(), None)
    for c in WEATHER_NUMERIC:
        out[c] = pd.to_numeric(weather[c], errors="coerce").astype("float64")
    out = out.drop_duplicates(["city", "event_timestamp"], keep="last")
    return out.sort_values(["event_timestamp"], kind="stable").reset_index(drop=True)


def rides_long(rides: pd.DataFrame) -> pd.DataFrame:
    """One row per (segment, hour): ``event_timestamp``, ``segment``, ``riders`` (float64)."""
    frames = [
        pd.DataFrame({"event_timestamp": rides["event_timestamp"], "segment": seg,
                      LABEL: pd.to_numeric(rides[seg], errors="coerce").astype("float64")})
        for seg in SEGMENTS
    ]
    out = pd.concat(frames, ignore_index=True).dropna(subset=[LABEL])
    out = out.drop_duplicates(["segment", "event_timestamp"], keep="last")
    return out.sort_values(["event_timestamp", "segment"], kind="stable").reset_index(drop=True)


def demand_history(history: pd.DataFrame, stamps: pd.Series | pd.DatetimeIndex) -> pd.DataFrame:
    """``segment_demand_history`` rows for every segment at every UTC hour in ``stamps``.

    ``history`` is :func:`rides_long` output (any span, e.g. the previous and the current month). The row
    (segment, t) uses only the counts of hours starting at or before ``t - 1h`` (ended by ``t``): no label
    of the hour starting at ``t`` leaks into its features. Hours absent from the source are unknown.
    """
    cols = ["segment", "event_timestamp", *HISTORY_FEATURES]
    when = pd.DatetimeIndex(pd.to_datetime(pd.Series(stamps), utc=True)).unique().sort_values()
    if len(when) == 0:
        empty = pd.DataFrame({c: pd.Series(dtype="float64") for c in cols})
        return empty.astype({"segment": "object", "event_timestamp": "datetime64[ns, UTC]"})
    start = min(when.min(), history["event_timestamp"].min() if len(history) else when.min())
    grid = pd.date_range(start - pd.Timedelta(hours=HISTORY_HOURS), when.max(), freq="h", tz="UTC")
    frames = []
    for seg in SEGMENTS:
        part = history[history["segment"] == seg]
        counts = part.set_index("event_timestamp")[LABEL].reindex(grid)  # unknown hours: NaN
        known = counts.shift(1)  # at t: hours starting <= t - 1h
        feats = pd.DataFrame(
            {
                "riders_lag_24h": counts.shift(24),
                "riders_lag_168h": counts.shift(HISTORY_HOURS),
                "riders_mean_24h": known.rolling(24, min_periods=1).mean(),
                "riders_mean_7d": known.rolling(HISTORY_HOURS, min_periods=1).mean(),
            },
            index=grid,
        ).reindex(when)
        feats.insert(0, "segment", seg)
        frames.append(feats.rename_axis("event_timestamp").reset_index())
    out = pd.concat(frames, ignore_index=True)
    out["event_timestamp"] = pd.to_datetime(out["event_timestamp"], utc=True).astype("datetime64[ns, UTC]")
    out[HISTORY_FEATURES] = out[HISTORY_FEATURES].astype("float64")
    return out[cols].sort_values(["event_timestamp", "segment"], kind="stable").reset_index(drop=True)


def labels_frame(rides: pd.DataFrame) -> pd.DataFrame:
    """The entity frame: event_timestamp, entity keys (segment, city), request fields, the label ``riders``."""
    calendar = pd.DataFrame({"event_timestamp": rides["event_timestamp"]})
    for c in REQUEST_FIELDS:
        calendar[c] = pd.to_numeric(rides[c], errors="coerce").astype("int64")
    frames = []
    for seg in SEGMENTS:
        part = calendar.copy()
        part.insert(1, "segment", seg)
        part.insert(2, "city", CITY)
        part[LABEL] = pd.to_numeric(rides[seg], errors="coerce").astype("float64")
        frames.append(part)
    out = pd.concat(frames, ignore_index=True).dropna(subset=[LABEL])
    out = out.drop_duplicates(["event_timestamp", "segment"], keep="last")
    return out.sort_values(["event_timestamp", "segment"], kind="stable").reset_index(drop=True)


# ----------------------------------------------------------------------------------------------------
# the pipeline entry point
# ----------------------------------------------------------------------------------------------------


def build_partitions(landed_files: list[str], lake_dir: str) -> dict[str, Any]:
    """Turn landed raw files into raw, offline (Feast) and label partitions under ``lake_dir``.

    Returns ``{"window_start": iso, "window_end": iso, "months": [...], "rows": {name: n}}``; the window
    spans every event timestamp written (``window_end`` exclusive): the range to materialize.
    """
    if isinstance(landed_files, str):
        landed_files = [landed_files]
    lake = Path(lake_dir)
    months = _classify(list(landed_files))
    # read (and check) every landed file before writing anything: a bad file leaves the lake untouched
    loaded = {path: _read(path, table) for files in months.values() for table, path in sorted(files.items())}
    rows: dict[str, int] = {}
    stamps: list[pd.Series] = []

    def count(name: str, n: int) -> None:
        rows[name] = rows.get(name, 0) + int(n)

    for month in sorted(months):
        files = months[month]
        part = f"month={month}.parquet"
        if "weather" in files:
            weather = loaded.pop(files["weather"]).sort_values("event_timestamp", kind="stable")
            _write(weather.drop(columns=["event_timestamp"]), lake / "raw" / "weather" / part)
            wh = weather_hourly(weather)
            _write(wh, lake / "offline" / "city_weather_hourly" / part)
            count("raw/weather", len(weather))
            count("city_weather_hourly", len(wh))
            stamps.append(wh["event_timestamp"])
        if "rides" in files:
            rides = loaded.pop(files["rides"]).sort_values("event_timestamp", kind="stable")
            _write(rides.drop(columns=["event_timestamp"]), lake / "raw" / "rides" / part)
            count("raw/rides", len(rides))

            prev = lake / "raw" / "rides" / f"month={_prev_month(month)}.parquet"
            history_frames = [rides_long(rides)]
            if prev.is_file():
                before = pd.read_parquet(prev)
                before["event_timestamp"] = to_utc(before["time_local"])
                history_frames.insert(0, rides_long(before))
            hist = demand_history(pd.concat(history_frames, ignore_index=True), rides["event_timestamp"])
            _write(hist, lake / "offline" / "segment_demand_history" / part)
            count("segment_demand_history", len(hist))
            stamps.append(hist["event_timestamp"])

            labels = labels_frame(rides)
            _write(labels, lake / "labels" / part)
            count("labels", len(labels))
            stamps.append(labels["event_timestamp"])

    result = transform_result(stamps, months, rows)
    log.info("built partitions under %s: %s", lake, result)
    return result


__all__ = ["CITY", "LABEL", "LANDED_TZ", "SEGMENTS", "build_partitions", "demand_history", "labels_frame",
           "rides_long", "to_utc", "weather_hourly"]
