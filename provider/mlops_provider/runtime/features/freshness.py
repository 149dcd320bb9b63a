"""How far the materialized feature views of a service are from a target time (runtime module).

Read by :class:`mlops_provider.sensors.feast.FeatureFreshnessSensor` (poke mode) and its trigger.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from mlops_provider.exceptions import FeatureStoreError
from mlops_provider.runtime.features.materialize import parse_utc


def feature_freshness(
    store: Any,
    target: str | datetime,
    *,
    feature_service: str | None = None,
    feature_views: list[str] | None = None,
) -> dict[str, Any]:
    """How far each (materialized) feature view of a service is from ``target``, per the registry.

    A view is fresh when its latest materialization interval ends at or after ``target``
    (``FeatureView.most_recent_end_time``). On-demand views are not materialized and are skipped.

    Returns ``{"target", "fresh": bool, "stale": [names], "views": {name: {"materialized_until": iso|None,
    "behind_seconds": float|None, "fresh": bool}}}`` (``behind_seconds`` None = never materialized).
    """
    t = parse_utc(target, "target_time")
    try:
        store.refresh_registry()
    except Exception as e:
        raise FeatureStoreError(f"cannot read the Feast registry of {store.repo_path}: {e}") from e
    if feature_views:
        names = list(feature_views)
    elif feature_service:
        try:
            fs = store.get_feature_service(feature_service)
        except Exception as e:
            raise FeatureStoreError(
                f"feature service {feature_service!r} is not in the Feast registry of {store.repo_path} ({e}). "
                "Run the feast apply task, or fix the feature service name."
            ) from e
        names = [p.name for p in fs.feature_view_projections]
    else:
        raise FeatureStoreError("give a feature_service or feature_views to check freshness of")
    by_name = {fv.name: fv for fv in store.list_feature_views()}
    odfvs = {v.name for v in store.list_on_demand_feature_views()}
    report: dict[str, dict[str, Any]] = {}
    for name in names:
        if name in odfvs and name not in by_name:
            continue
        fv = by_name.get(name)
        if fv is None:
            raise FeatureStoreError(
                f"feature view {name!r} is not in the Feast registry of {store.repo_path}; run the feast apply task"
            )
        end = fv.most_recent_end_time
        end = end.replace(tzinfo=UTC) if end is not None and end.tzinfo is None else end
        report[name] = {
            "materialized_until": end.isoformat() if end else None,
            "behind_seconds": None if end is None else max(0.0, (t - end).total_seconds()),
            "fresh": end is not None and end >= t,
        }
    stale = sorted(n for n, r in report.items() if not r["fresh"])
    return {"target": t.isoformat(), "fresh": not stale, "stale": stale, "views": report}


def describe_staleness(report: dict[str, Any]) -> str:
    """``"origin_weather_hourly (materialized until 2013-01-31T00:00:00+00:00, 1 day, 0:00:00 behind), ..."``."""
    parts = []
    for name in report.get("stale", []):
        r = report["views"][name]
        if r["materialized_until"] is None:
            parts.append(f"{name} (never materialized)")
        else:
            behind = timedelta(seconds=round(r["behind_seconds"]))
            parts.append(f"{name} (materialized until {r['materialized_until']}, {behind} behind)")
    return ", ".join(parts)


__all__ = ["describe_staleness", "feature_freshness"]
