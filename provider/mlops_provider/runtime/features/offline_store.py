"""A parquet ("file") Feast offline store with an exact, row-preserving point-in-time join.

Feast 0.67's built-in ``file``/``dask`` offline store joins an entity frame to a feature view by
merging every entity row with *every* source row of its entity, then filtering and de-duplicating
on ``(join keys of the views seen so far, event timestamp)``. For a training frame of events that
(1) silently drops every event sharing an entity key and a timestamp with another event but
one, (2) drops entity rows whose entity has source rows but none inside the TTL, and (3) needs
memory proportional to ``entity rows x source rows per entity`` (tens of millions of rows for one
month of hourly weather). This store keeps everything of the dask store (reading sources,
materialization, ``pull_latest``/``pull_all``, S3 paths) and replaces only
``get_historical_features`` with a ``pandas.merge_asof`` per feature view:

* for each entity row, the latest source row with the same join keys and
  ``entity_ts - ttl <= source_ts <= entity_ts`` (ties broken by ``created_timestamp_column``);
* no match -> nulls (the entity row is kept); entity rows are returned in their input order.

Select it in ``feature_store.yaml``::

    offline_store:
        type: mlops_provider.runtime.features.offline_store.PointInTimeFileOfflineStore
"""

from __future__ import annotations

import logging
from typing import Any

import dask.dataframe as dd
import pandas as pd
from feast.infra.offline_stores.dask import (
    DaskOfflineStore,
    DaskOfflineStoreConfig,
    DaskRetrievalJob,
    _read_datasource,
)
from feast.infra.offline_stores.offline_store import RetrievalJob, RetrievalMetadata
from feast.infra.offline_stores.offline_utils import DEFAULT_ENTITY_DF_EVENT_TIMESTAMP_COL
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.utils import _get_requested_feature_views_to_features_dict, _get_requested_on_demand_feature_views

log = logging.getLogger(__name__)

_ROW = "__mlops_row"
_FV_TS = "__mlops_fv_ts"


class PointInTimeFileOfflineStoreConfig(DaskOfflineStoreConfig):
    """Config of :class:`PointInTimeFileOfflineStore` (no options beyond the type)."""

    type: str = "mlops_provider.runtime.features.offline_store.PointInTimeFileOfflineStore"  # type: ignore[assignment]


def _utc_ns(s: pd.Series) -> pd.Series:
    return pd.to_datetime(s, utc=True).astype("datetime64[ns, UTC]")


def point_in_time_join(
    entity_df: pd.DataFrame,
    ts_col: str,
    source: pd.DataFrame,
    *,
    join_keys: list[str],
    timestamp_field: str,
    created_timestamp_column: str | None,
    features: dict[str, str],
    ttl: pd.Timedelta | None,
) -> pd.DataFrame:
    """Add ``features`` (source column -> output column) to ``entity_df`` as of each row's ``ts_col``."""
    cols = [*join_keys, timestamp_field, *([created_timestamp_column] if created_timestamp_column else [])]
    right = source[[*dict.fromkeys(cols), *features]].copy()
    right[timestamp_field] = _utc_ns(right[timestamp_field])
    sort_cols = [timestamp_field, *([created_timestamp_column] if created_timestamp_column else [])]
    right = right.sort_values(sort_cols, kind="stable").drop_duplicates([*join_keys, timestamp_field], keep="last")
    right = right.rename(columns={timestamp_field: _FV_TS, **features})
    right = right[[*join_keys, _FV_TS, *features.values()]]
    right = right.dropna(subset=[_FV_TS]).sort_values(_FV_TS, kind="stable")

    left = entity_df.sort_values(ts_col, kind="stable")
    for k in join_keys:  # merge_asof needs identical key dtypes on both sides
        if left[k].dtype != right[k].dtype:
            right[k] = right[k].astype(left[k].dtype)
    merged = pd.merge_asof(
        left,
        right,
        left_on=ts_col,
        right_on=_FV_TS,
        by=join_keys or None,
        direction="backward",
        allow_exact_matches=True,
        tolerance=ttl,
    )
    return merged.drop(columns=[_FV_TS])


class PointInTimeFileOfflineStore(DaskOfflineStore):
    """Dask/file offline store whose historical retrieval is an exact as-of join (see module doc)."""

    @staticmethod
    def get_historical_features(  # type: ignore[override]
        config: Any,
        feature_views: list[Any],
        feature_refs: list[str],
        entity_df: Any,
        registry: Any,
        project: str,
        full_feature_names: bool = False,
        filter_by_created_timestamp: bool = False,
        **kwargs: Any,
    ) -> RetrievalJob:
        if not isinstance(entity_df, pd.DataFrame):  # non-entity mode, dask frames, SQL: the stock store
            return DaskOfflineStore.get_historical_features(
                config, feature_views, feature_refs, entity_df, registry, project,
                full_feature_names, filter_by_created_timestamp, **kwargs,
            )
        ts_col = DEFAULT_ENTITY_DF_EVENT_TIMESTAMP_COL
        if ts_col not in entity_df.columns:
            dt_cols = entity_df.select_dtypes(include=["datetime", "datetimetz"]).columns
            if len(dt_cols) != 1:
                raise ValueError(
                    f"entity_df needs a column named {ts_col!r} holding each row's event time "
                    f"(found datetime columns {list(dt_cols)})"
                )
            ts_col = dt_cols[0]
        odfvs = _get_requested_on_demand_feature_views(feature_refs, config.project, registry)
        fv_to_features, _ = _get_requested_feature_views_to_features_dict(feature_refs, feature_views, odfvs)
        repo_path = config.repo_path

        def evaluate() -> dd.DataFrame:
            out = entity_df.copy()
            out[ts_col] = _utc_ns(out[ts_col])
            out[_ROW] = range(len(out))
            for fv, features in fv_to_features.items():
                source = fv.batch_source
                if source is None:
                    raise ValueError(f"feature view {fv.name} has no batch source to join from")
                src = _read_datasource(source, repo_path).compute()
                mapping = dict(source.field_mapping or {})
                mapping.update(fv.projection.join_key_map or {})
                if mapping:
                    src = src.rename(columns=mapping)
                join_keys = [fv.projection.join_key_map.get(c.name, c.name) for c in fv.entity_columns]
                prefix = fv.projection.name_to_use()
                names = {f: (f"{prefix}__{f}" if full_feature_names else f) for f in features}
                ttl = pd.Timedelta(fv.ttl) if fv.ttl and fv.ttl.total_seconds() > 0 else None
                out = point_in_time_join(
                    out,
                    ts_col,
                    src,
                    join_keys=join_keys,
                    timestamp_field=source.timestamp_field,
                    created_timestamp_column=source.created_timestamp_column or None,
                    features=names,
                    ttl=ttl,
                )
            out = out.sort_values(_ROW, kind="stable").drop(columns=[_ROW]).reset_index(drop=True)
            return dd.from_pandas(out, npartitions=1, sort=False)

        ts = pd.to_datetime(entity_df[ts_col], utc=True)
        return DaskRetrievalJob(
            evaluation_function=evaluate,
            full_feature_names=full_feature_names,
            on_demand_feature_views=OnDemandFeatureView.get_requested_odfvs(feature_refs, project, registry),
            metadata=RetrievalMetadata(
                features=feature_refs,
                keys=list(set(entity_df.columns) - {ts_col}),
                min_event_timestamp=ts.min().to_pydatetime() if len(ts) else None,
                max_event_timestamp=ts.max().to_pydatetime() if len(ts) else None,
            ),
            repo_path=str(repo_path),
        )
