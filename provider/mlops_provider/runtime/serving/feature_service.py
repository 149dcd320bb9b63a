"""The Feast side of serving: what a FeatureService needs from a request, and time-correct online reads.

- :func:`feature_service_info` introspects a FeatureService in a Feast registry: its entity join keys
  (with value types), the RequestSource fields its on-demand views read (with dtypes), and its feature
  views (features, TTL, push source). It is the input of the pure
  :func:`~mlops_provider.runtime.serving.request_schema.request_schema`.
- :class:`OnlineFeatures` reads online features **as of each request's event time**. Feast does not
  enforce a view's TTL on online reads (feast-dev/feast #6821, #1802, #4133), so the event timestamp of
  every value is read (``to_dict(include_event_timestamps=True)``) and a value is served only when
  ``0 <= request time - value time <= ttl`` -- exactly the condition of training's point-in-time join
  (:func:`mlops_provider.runtime.features.offline_store.point_in_time_join`). A value that is too old
  (stale), newer than the request (a replay must not see the future) or absent (an unknown entity) is
  served as missing, which the model's preprocessor imputes as in training.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mlops_provider.exceptions import ConfigError

#: Suffix of a feature's event timestamp in ``OnlineResponse.to_dict(include_event_timestamps=True)``.
TS_SUFFIX = "__ts"


def _dtype_name(dtype: Any) -> str:
    """``Int64`` / ``ValueType.STRING`` / ``PrimitiveFeastType.FLOAT64`` -> ``INT64`` / ``STRING`` / ``FLOAT64``."""
    name = getattr(dtype, "name", None) or str(dtype)
    return str(name).rsplit(".", 1)[-1].upper()


def feature_service_info(store: Any, name: str, *, model: str | None = None) -> dict[str, Any]:
    """What ``name`` (a FeatureService in ``store``'s registry) needs from a request and serves.

    Returns ``{"name", "model", "entities": [{"name", "join_key", "dtype", "description"}],
    "request_fields": [{"name", "dtype", "source"}], "views": [{"name", "features", "join_keys",
    "ttl_s", "push_source"}], "on_demand": [{"name", "features"}]}``.
    """
    try:
        fs = store.get_feature_service(name)
    except Exception as e:  # noqa: BLE001 - Feast raises its own not-found classes
        raise ConfigError(
            f"Feature service {name!r} is not in the Feast registry of {getattr(store, 'repo_path', '?')} "
            f"({type(e).__name__}: {e}). Run the feature DAG's feast apply, or fix features.feature_service."
        ) from e
    entities: list[dict[str, Any]] = []
    seen_keys: set[str] = set()
    request_fields: list[dict[str, Any]] = []
    seen_req: set[str] = set()
    views: list[dict[str, Any]] = []
    on_demand: list[dict[str, Any]] = []
    for proj in fs.feature_view_projections:
        feats = [f.name for f in proj.features]
        fv = _feature_view(store, proj.name)
        if fv is not None:
            join_map = dict(getattr(proj, "join_key_map", None) or {})
            keys: list[str] = []
            columns = {c.name: c for c in getattr(fv, "entity_columns", []) or []}
            for ent_name in getattr(fv, "entities", []) or []:
                ent = store.get_entity(ent_name)
                key = join_map.get(ent.join_key, ent.join_key)
                keys.append(key)
                if key in seen_keys:
                    continue
                seen_keys.add(key)
                col = columns.get(ent.join_key)
                dtype = _dtype_name(col.dtype) if col is not None else _dtype_name(ent.value_type)
                entities.append({"name": ent.name, "join_key": key, "dtype": dtype,
                                 "description": ent.description or None})
            ttl = getattr(fv, "ttl", None)
            stream = getattr(fv, "stream_source", None)
            views.append({
                "name": proj.name,
                "features": feats,
                "join_keys": keys,
                "ttl_s": ttl.total_seconds() if ttl is not None and ttl.total_seconds() > 0 else None,
                "push_source": stream.name if stream is not None and type(stream).__name__ == "PushSource" else None,
            })
            continue
        odfv = store.get_on_demand_feature_view(proj.name)
        for src_name, src in (getattr(odfv, "source_request_sources", None) or {}).items():
            for f in src.schema:
                if f.name in seen_req:
                    continue
                seen_req.add(f.name)
                request_fields.append({"name": f.name, "dtype": _dtype_name(f.dtype), "source": src_name,
                                       "description": (getattr(f, "description", "") or None)})
        on_demand.append({"name": proj.name, "features": feats})
    return {
        "name": name,
        "model": model or (fs.tags or {}).get("model") or name,
        "entities": entities,
        "request_fields": request_fields,
        "views": views,
        "on_demand": on_demand,
    }


def _feature_view(store: Any, name: str) -> Any | None:
    """The (batch / stream) FeatureView ``name``, or None when it is an on-demand view."""
    try:
        return store.get_feature_view(name)
    except Exception:  # noqa: BLE001 - FeatureViewNotFoundException: an on-demand view
        return None


# ---------------------------------------------------------------------------------------------- online reads
@dataclass
class Lookup:
    """One online read: per-column values plus, for view features, freshness per row."""

    values: dict[str, list[Any]]
    #: feature -> age in seconds per row (None where no value was served)
    ages: dict[str, list[float | None]]
    #: feature -> rows where a value existed but was too old / too new for the request's event time
    stale: dict[str, list[int]] = field(default_factory=dict)
    #: feature -> rows where the store had no value (unknown entity, null value)
    missing: dict[str, list[int]] = field(default_factory=dict)
    #: view -> ages (seconds) of the values served, for the age histogram
    view_ages: dict[str, list[float]] = field(default_factory=dict)

    def stale_by_row(self, n: int) -> list[list[str]]:
        out: list[list[str]] = [[] for _ in range(n)]
        for feat, rows in self.stale.items():
            for i in rows:
                out[i].append(feat)
        return out


def as_utc(ts: datetime) -> datetime:
    """An aware datetime in UTC; out-of-range instants clamp to datetime.min / max (year 1 / 9999)."""
    if ts.tzinfo is None:
        return ts.replace(tzinfo=UTC)
    try:
        return ts.astimezone(UTC)
    except OverflowError:
        return (datetime.min if ts.year < 5000 else datetime.max).replace(tzinfo=UTC)


class OnlineFeatures:
    """Time-correct online reads of one FeatureService (module docstring)."""

    def __init__(self, store: Any, feature_service: Any, info: Mapping[str, Any]) -> None:
        self.store = store
        self.feature_service = feature_service
        self.info = info
        self.ttl: dict[str, float | None] = {}
        self.view_of: dict[str, str] = {}
        for v in info.get("views", []):
            for f in v["features"]:
                self.view_of[f] = v["name"]
                self.ttl[f] = v.get("ttl_s")
        self.entity_keys = [e["join_key"] for e in info.get("entities", [])]
        self.request_fields = [r["name"] for r in info.get("request_fields", [])]

    def read(self, rows: Sequence[Mapping[str, Any]], event_times: Sequence[datetime]) -> Lookup:
        """Online features for ``rows`` (entity keys + request fields) as of ``event_times`` (one per row)."""
        keys = [*self.entity_keys, *self.request_fields]
        entity_rows = [{k: row[k] for k in keys if k in row} for row in rows]
        raw = self.store.get_online_features(
            features=self.feature_service, entity_rows=entity_rows, full_feature_names=False
        ).to_dict(include_event_timestamps=True)
        when = [as_utc(t).timestamp() if t.year > 1 else -math.inf for t in event_times]
        values: dict[str, list[Any]] = {}
        out = Lookup(values=values, ages={})
        for col, vals in raw.items():
            if col.endswith(TS_SUFFIX) or col in self.entity_keys:
                continue
            vals = list(vals)
            if col in self.view_of:
                ts = raw.get(col + TS_SUFFIX) or [0] * len(vals)
                ttl = self.ttl[col]
                ages: list[float | None] = []
                for i, v in enumerate(vals):
                    t = ts[i]
                    if v is None or not t:
                        out.missing.setdefault(col, []).append(i)
                        ages.append(None)
                        vals[i] = None
                        continue
                    age = when[i] - float(t)
                    if age < 0 or (ttl is not None and age > ttl) or not math.isfinite(age):
                        out.stale.setdefault(col, []).append(i)
                        ages.append(None)
                        vals[i] = None
                        continue
                    ages.append(age)
                out.ages[col] = ages
                view = self.view_of[col]
                if view not in out.view_ages:  # one age per row and view (its first feature's)
                    out.view_ages[view] = [a for a in ages if a is not None]
            values[col] = vals
        return out
