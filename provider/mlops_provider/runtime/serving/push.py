"""Keep fast-moving features fresh between batch windows: push rows to the online store as data lands.

Materialization runs per feature-DAG window; a feature that changes faster than that (hourly weather,
minute-level counters) would be served stale (and, with TTL enforcement, imputed) in between. A feature
view whose source is a Feast ``PushSource`` (``PushSource(name=..., batch_source=<the offline source>)``)
accepts rows directly: :func:`push_features` writes them with ``store.push(name, frame, to=PushMode.ONLINE)``
so the serving endpoint sees them at once.

The entry point is this runtime function, called by whatever receives the data (the features DAG's
transform as a partition lands, a consumer of a message queue), with the Feast store settings the task
resolved: no HTTP endpoint, no token, nothing more to secure than the online store itself.

Only the latest row per entity is written, and (``monotonic``, the default) only when it is newer than
the value online: Feast's SQLite store overwrites unconditionally, so a late, older row must not replace a
fresher one. The pushed values then equal what the point-in-time join gives at their timestamps, the
contract ``tests/integration/test_serving_push.py`` checks.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from mlops_provider.exceptions import ConfigError, DataValidationError

log = logging.getLogger(__name__)

MODES = ("online", "offline", "online_and_offline")


def push_views(store: Any, push_source: str) -> list[Any]:
    """The feature views fed by ``push_source`` (ConfigError when none)."""
    views = [fv for fv in store.list_feature_views()
             if getattr(getattr(fv, "stream_source", None), "name", None) == push_source]
    if not views:
        names = sorted({fv.stream_source.name for fv in store.list_feature_views()
                        if getattr(fv, "stream_source", None) is not None})
        raise ConfigError(
            f"No feature view reads push source {push_source!r} in {getattr(store, 'repo_path', '?')}; push "
            f"sources in the registry: {names or 'none'}. Declare PushSource(name={push_source!r}, batch_source=...) "
            "as the view's source and run feast apply."
        )
    return views


def push_features(
    store: Any,
    push_source: str,
    frame: Any,
    *,
    to: str = "online",
    monotonic: bool = True,
) -> dict[str, Any]:
    """Push ``frame`` (join keys, the source's timestamp field, feature columns) through ``push_source``.

    ``store``: a ``feast.FeatureStore`` or a repo path. ``to``: ``online`` | ``offline`` |
    ``online_and_offline``. Returns ``{"push_source", "views", "rows_in", "rows_pushed", "to",
    "max_event_timestamp"}``.
    """
    import pandas as pd
    from feast import FeatureStore
    from feast.data_source import PushMode

    if to not in MODES:
        raise ConfigError(f"push to {to!r}: use one of {list(MODES)}")
    if not isinstance(store, FeatureStore):
        store = FeatureStore(repo_path=str(store))
    views = push_views(store, push_source)
    ts_field = views[0].stream_source.batch_source.timestamp_field
    keys = sorted({c.name for fv in views for c in fv.entity_columns})
    feats = sorted({f.name for fv in views for f in fv.features})
    df = pd.DataFrame(frame).copy()
    missing = [c for c in [*keys, ts_field, *feats] if c not in df.columns]
    if missing:
        raise DataValidationError(
            f"push to {push_source!r}: the frame lacks column(s) {missing} (needs join keys {keys}, "
            f"timestamp {ts_field!r} and features {feats})"
        )
    rows_in = len(df)
    df[ts_field] = pd.to_datetime(df[ts_field], utc=True)
    df = df.sort_values(ts_field, kind="stable").drop_duplicates(keys, keep="last")
    if monotonic and to != "offline" and len(df):
        df = _newer_than_online(store, views, df, keys, ts_field)
    if len(df):
        mode = {"online": PushMode.ONLINE, "offline": PushMode.OFFLINE,
                "online_and_offline": PushMode.ONLINE_AND_OFFLINE}[to]
        store.push(push_source, df.reset_index(drop=True), to=mode)
    out = {
        "push_source": push_source,
        "views": [fv.name for fv in views],
        "rows_in": rows_in,
        "rows_pushed": len(df),
        "to": to,
        "max_event_timestamp": df[ts_field].max().isoformat() if len(df) else None,
    }
    log.info("Pushed %d of %d row(s) through %s to %s (%s)", len(df), rows_in, push_source, to, out["views"])
    return out


def _newer_than_online(store: Any, views: list[Any], df: Any, keys: list[str], ts_field: str) -> Any:
    """Rows of ``df`` newer than the value online for their entity (all views of the push source)."""
    import pandas as pd

    fv = views[0]
    feature = fv.features[0].name
    entity_rows = df[keys].to_dict(orient="records")
    online: Mapping[str, list[Any]] = store.get_online_features(
        features=[f"{fv.name}:{feature}"], entity_rows=entity_rows, full_feature_names=False
    ).to_dict(include_event_timestamps=True)
    current = pd.to_datetime(pd.Series(online.get(f"{feature}__ts") or [0] * len(df)), unit="s", utc=True)
    keep = (df[ts_field].reset_index(drop=True) > current.reset_index(drop=True)).to_numpy()
    dropped = int((~keep).sum())
    if dropped:
        log.info("Not pushing %d row(s) no newer than the online value of their entity", dropped)
    return df[keep]
