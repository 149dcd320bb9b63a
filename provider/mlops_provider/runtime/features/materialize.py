"""Chunked materialization of Feast feature views into the online store (runtime module).

:func:`materialize` reads each view one ``chunk`` of event time at a time (parquet sources directly with
``pyarrow.dataset``, other sources through Feast's own engine) and upserts the latest value per entity,
so peak memory follows the chunk, not the window. Also the time helpers the features tasks share:
:func:`parse_utc`, :func:`parse_duration`, :func:`time_chunks`.
"""

from __future__ import annotations

import contextlib
import logging
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from mlops_provider.exceptions import FeatureStoreError

log = logging.getLogger(__name__)


def parse_utc(value: str | datetime, what: str) -> datetime:
    """ISO string / datetime -> tz-aware UTC datetime (naive values are taken as UTC)."""
    if isinstance(value, datetime):
        ts = value
    else:
        try:
            ts = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError as e:
            raise FeatureStoreError(f"{what}={value!r} is not an ISO-8601 timestamp") from e
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


_ISO_DURATION = re.compile(
    r"^P(?:(?P<weeks>\d+(?:\.\d+)?)W)?(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?$"
)


def parse_duration(value: Any, what: str) -> timedelta:
    """``timedelta`` / seconds (number or numeric string) / ISO-8601 duration (``PT2H``, ``P1DT6H``) -> timedelta.

    ``None`` and ``""`` mean zero. Negative durations raise :class:`FeatureStoreError`.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return timedelta(0)
    if isinstance(value, timedelta):
        out = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out = timedelta(seconds=float(value))
    else:
        text = str(value).strip().upper()
        try:
            out = timedelta(seconds=float(text))
        except ValueError:
            m = _ISO_DURATION.match(text)
            if not m or text in ("P", "PT") or text.endswith("T"):
                raise FeatureStoreError(
                    f"{what}={value!r} is not a duration: give seconds (e.g. 7200) or an ISO-8601 duration "
                    "(e.g. PT2H, P1DT6H)"
                ) from None
            parts = {k: float(v) for k, v in m.groupdict().items() if v}
            out = timedelta(**parts)
    if out < timedelta(0):
        raise FeatureStoreError(f"{what}={value!r} must not be negative")
    return out


def time_chunks(start: datetime, end: datetime, chunk: timedelta | None) -> list[tuple[datetime, datetime]]:
    """``[start, end]`` cut into consecutive ``chunk``-long pieces ``[lo, hi)`` (the last one ends at ``end``).

    ``chunk`` ``None`` or zero: one piece. Pieces are aligned on ``start``.
    """
    if not chunk or chunk <= timedelta(0) or end - start <= chunk:
        return [(start, end)]
    out: list[tuple[datetime, datetime]] = []
    lo = start
    while lo < end:
        hi = min(lo + chunk, end)
        out.append((lo, hi))
        lo = hi
    return out


class _ArrowSource:
    """A feature view whose batch source is parquet read directly with ``pyarrow.dataset``.

    Only what the materialization needs is read: the view's columns, and only the row groups whose
    statistics overlap the chunk (predicate pushdown on the timestamp field).
    """

    def __init__(self, store: Any, fv: Any) -> None:
        import pyarrow.dataset as pads
        from feast import FileSource
        from feast.utils import _get_column_names

        src = fv.batch_source
        entities = [store.registry.get_entity(name, store.project) for name in fv.entities]
        keys, feats, ts, created = _get_column_names(fv, entities)
        self.keys, self.features, self.ts, self.created = list(keys), list(feats), ts, created
        self.field_mapping = dict(src.field_mapping or {})
        self.join_key_types = {e.name: e.dtype.to_value_type() for e in fv.entity_columns}
        path = FileSource.get_uri_for_file_path(repo_path=store.repo_path, uri=src.file_options.uri)
        filesystem, path = FileSource.create_filesystem_and_path(
            str(path), src.file_options.s3_endpoint_override, src.resolve_credentials()
        )
        if filesystem is None and not Path(path).exists():
            raise FeatureStoreError(
                f"offline source {path} of feature view {fv.name!r} does not exist. Run the offline partition "
                "task (feature pipeline) before materializing."
            )
        if filesystem is None and Path(path).is_dir():
            files = sorted(
                str(p) for p in Path(path).rglob("*") if p.is_file() and not p.name.startswith((".", "_"))
            )
            self.dataset = pads.dataset(files, format="parquet")
        else:
            self.dataset = pads.dataset(path, format="parquet", filesystem=filesystem)
        self.path = str(path)
        self.columns = list(dict.fromkeys([*self.keys, *self.features, ts, *([created] if created else [])]))
        missing = [c for c in self.columns if c not in self.dataset.schema.names]
        if missing:
            raise FeatureStoreError(
                f"offline source {self.path} of feature view {fv.name!r} lacks column(s) {missing}; "
                f"it has {self.dataset.schema.names}"
            )
        self.ts_type = self.dataset.schema.field(ts).type

    @staticmethod
    def supports(store: Any, fv: Any) -> bool:
        from feast import FileSource
        from feast.data_format import ParquetFormat

        src = fv.batch_source
        fmt = getattr(src, "file_format", None)
        return (
            type(fv).__name__ == "FeatureView"
            and isinstance(src, FileSource)
            and (fmt is None or isinstance(fmt, ParquetFormat))
            and bool(fv.entity_columns)
            and not getattr(fv, "aggregations", None)
        )

    def _scalar(self, t: datetime) -> Any:
        import pyarrow as pa

        tz = getattr(self.ts_type, "tz", None)
        return pa.scalar(t if tz else t.replace(tzinfo=None), type=self.ts_type)

    def _expr(self, lo: datetime, hi: datetime, closed: bool) -> Any:
        import pyarrow.dataset as pads

        f = pads.field(self.ts)
        return (f >= self._scalar(lo)) & ((f <= self._scalar(hi)) if closed else (f < self._scalar(hi)))

    def plan(self, lo: datetime, hi: datetime) -> None:
        """Index the row groups that may hold rows of the window ``[lo, hi]`` by their timestamp statistics.

        With the index, each row group is decoded once (filtered to the window) and kept only while a
        later chunk still needs it, instead of once per chunk it overlaps. Without statistics (or on any
        surprise) reads fall back to one filtered dataset scan per chunk.
        """
        self._groups: list[tuple[datetime, datetime, int, Any]] | None = None
        self._cache: dict[int, Any] = {}
        self._window = self._expr(lo, hi, closed=True)
        groups: list[tuple[datetime, datetime, int, Any]] = []
        try:
            for frag in self.dataset.get_fragments():
                for rg in frag.split_by_row_group(filter=self._window):  # drops row groups outside the window
                    stats = rg.row_groups[0].statistics or {}
                    st = stats.get(self.ts) or {}
                    if st.get("min") is None or st.get("max") is None:
                        return
                    gmin, gmax = (parse_utc(st[k], self.ts) for k in ("min", "max"))
                    groups.append((gmin, gmax, len(groups), rg))
        except Exception as e:  # statistics not available through this filesystem/format: scan per chunk
            log.info("row-group index of %s unavailable (%s); scanning per chunk", self.path, e)
            return
        self._groups = sorted(groups, key=lambda g: (g[0], g[2]))

    def read(self, lo: datetime, hi: datetime, closed: bool) -> Any:
        """Rows with ``lo <= ts < hi`` (``<= hi`` when ``closed``) as a ``pyarrow.Table``."""
        import pyarrow as pa

        expr = self._expr(lo, hi, closed)
        groups = getattr(self, "_groups", None)
        if groups is None:
            # one fragment at a time: memory is one decoded row group + the chunk's rows, whatever the window
            table = self.dataset.to_table(columns=self.columns, filter=expr, fragment_readahead=1, batch_readahead=1)
        else:
            parts = []
            for gmin, gmax, key, rg in groups:
                if gmin > hi or gmax < lo:
                    continue
                decoded = self._cache.get(key)
                if decoded is None:
                    decoded = rg.to_table(columns=self.columns, filter=self._window)
                parts.append(decoded.filter(expr))
                if gmax >= hi and not closed:  # a later chunk needs it too
                    self._cache[key] = decoded
                else:
                    self._cache.pop(key, None)
            schema = self.dataset.schema
            table = (
                pa.concat_tables(parts)
                if parts
                else pa.table({c: pa.array([], type=schema.field(c).type) for c in self.columns})
            )
        if self.field_mapping:
            skip = {self.ts, self.created}
            table = table.rename_columns(
                [c if c in skip else self.field_mapping.get(c, c) for c in table.column_names]
            )
        return table

    def latest_per_entity(self, table: Any) -> Any:
        """The latest row (by event, then created timestamp, then file order) of each entity."""
        import pyarrow as pa

        if table.num_rows == 0:
            return table
        keys = [self.field_mapping.get(k, k) for k in self.keys]
        idx = "__mlops_row"
        t = table.append_column(idx, pa.array(range(table.num_rows), type=pa.int64()))
        order = [(self.ts, "ascending"), *([(self.created, "ascending")] if self.created else []), (idx, "ascending")]
        t = t.sort_by(order)  # stable
        last = t.group_by(keys, use_threads=False).aggregate([(idx, "last")])[f"{idx}_last"]
        import pyarrow.compute as pc

        return table.take(pc.take(last, pc.sort_indices(last)))  # entities in first-seen row order


def _entity_hashes(table: Any, keys: list[str]) -> Any:
    import numpy as np

    if table.num_rows == 0:
        return np.empty(0, dtype="uint64")
    return pd.util.hash_pandas_object(table.select(keys).to_pandas(), index=False).to_numpy()


def _write_online(store: Any, provider: Any, fv: Any, table: Any, join_key_types: dict[str, Any], batch: int) -> int:
    from feast.utils import _convert_arrow_to_proto

    written = 0
    for rb in table.combine_chunks().to_batches(max_chunksize=max(1, batch)):
        if rb.num_rows == 0:
            continue
        rows = _convert_arrow_to_proto(rb, fv, join_key_types)
        provider.online_write_batch(store.config, fv, rows, progress=None)
        written += rb.num_rows
    return written


def _materialize_view_arrow(
    store: Any,
    provider: Any,
    fv: Any,
    chunks: list[tuple[datetime, datetime]],
    write_batch_size: int,
    max_pending_rows: int = 100_000,
) -> dict[str, Any]:
    """Chunk by chunk (oldest first): read, keep the latest row per entity, write.

    The latest rows of consecutive chunks are merged in a pending table (one row per entity, newest
    wins) that is written when it exceeds ``max_pending_rows`` and at the end, so an entity updated in
    every chunk is written once per flush, not once per chunk. Memory: one chunk + the pending table.
    Flushes happen in time order, so the newest value of an entity is always the one left online.
    """
    import numpy as np
    import pyarrow as pa

    src = _ArrowSource(store, fv)
    src.plan(chunks[0][0], chunks[-1][1])
    keys = [src.field_mapping.get(k, k) for k in src.keys]
    seen = np.empty(0, dtype="uint64")
    read = written = flushes = 0
    pending: Any = None

    def flush() -> None:
        nonlocal pending, written, seen, flushes
        if pending is not None and pending.num_rows:
            written += _write_online(store, provider, fv, pending, src.join_key_types, write_batch_size)
            seen = np.union1d(seen, _entity_hashes(pending, keys))
            flushes += 1
        pending = None

    for i, (lo, hi) in enumerate(chunks):
        table = src.read(lo, hi, closed=i == len(chunks) - 1)
        read += table.num_rows
        latest = src.latest_per_entity(table)
        del table
        if latest.num_rows:
            pending = latest if pending is None else src.latest_per_entity(pa.concat_tables([pending, latest]))
        del latest
        log.debug("%s chunk %d/%d [%s, %s): %d rows pending", fv.name, i + 1, len(chunks), lo, hi,
                  0 if pending is None else pending.num_rows)
        if pending is not None and pending.num_rows >= max_pending_rows:
            flush()
        pa.default_memory_pool().release_unused()  # hand freed chunk buffers back to the OS
    flush()
    return {"engine": "arrow", "rows_read": read, "rows_written": written, "entities": int(len(seen)),
            "flushes": flushes}


def _materialize_view_feast(
    store: Any, provider: Any, fv: Any, chunks: list[tuple[datetime, datetime]]
) -> dict[str, Any]:
    """Fallback for sources the arrow reader does not handle: Feast's own engine, one call per chunk."""
    from tqdm import tqdm

    for lo, hi in chunks:
        provider.materialize_single_feature_view(
            config=store.config,
            feature_view=fv,
            start_date=lo,
            end_date=hi,
            registry=store.registry,
            project=store.project,
            tqdm_builder=lambda n: tqdm(total=n, disable=True),
        )
    return {"engine": "feast", "rows_read": None, "rows_written": None, "entities": None}


def materialize(
    store: Any,
    start: str | datetime,
    end: str | datetime,
    feature_views: list[str] | None = None,
    *,
    overlap: Any = None,
    chunk: Any = timedelta(days=7),
    write_batch_size: int = 10_000,
    engine: str = "auto",
    max_pending_rows: int = 100_000,
) -> dict[str, Any]:
    """Upsert the latest value per entity of ``[start - overlap, end]`` into the online store, in time chunks.

    Same online result as ``FeatureStore.materialize(start - overlap, end)`` (both bounds inclusive, as
    Feast does), but each feature view is read one ``chunk`` of event time at a time (parquet sources:
    ``pyarrow.dataset`` with the time filter pushed down to the row groups; other sources: Feast's engine
    per chunk), so peak memory follows the chunk, not the window. Chunks are written oldest first, so
    the newest value of an entity is the one left online. Re-running a window rewrites the same rows.

    After every chunk of a view succeeded, the window is recorded on the view in the registry (as
    ``FeatureStore.materialize`` does), so ``materialize_incremental`` and freshness checks see it.

    The latest rows of consecutive chunks are merged (newest wins) and written when more than
    ``max_pending_rows`` are pending, so an entity is written once per flush rather than once per chunk.

    Returns ``{"feature_views", "window": {"start", "end", "overlap_seconds", "materialized_start"},
    "rows": {view: entities written}, "rows_read": {view: n}, "rows_written": {view: n},
    "chunks": n, "engine": {view: "arrow"|"feast"}}``.
    """
    t0, t1 = parse_utc(start, "start"), parse_utc(end, "end")
    if t0 >= t1:
        raise FeatureStoreError(f"materialization window is empty or inverted: start={t0} >= end={t1}")
    lap = parse_duration(overlap, "overlap")
    step = parse_duration(chunk, "chunk") if chunk is not None else None
    if engine not in ("auto", "arrow", "feast"):
        raise FeatureStoreError(f"engine={engine!r}: use 'auto', 'arrow' or 'feast'")
    try:
        store.refresh_registry()
        views = {fv.name: fv for fv in store.list_feature_views() if fv.online}
    except Exception as e:
        raise FeatureStoreError(
            f"cannot read the Feast registry of {store.repo_path} ({e}). Run the feast apply task first."
        ) from e
    if not views:
        raise FeatureStoreError(
            f"the Feast registry of {store.repo_path} has no online feature views. Run the feast apply task first."
        )
    names = list(feature_views) if feature_views else sorted(views)
    unknown = sorted(set(names) - set(views))
    if unknown:
        raise FeatureStoreError(f"unknown feature view(s) {unknown}; registered online views: {sorted(views)}")
    lo = t0 - lap
    chunks = time_chunks(lo, t1, step)
    provider = store._get_provider()
    stats: dict[str, dict[str, Any]] = {}
    for name in names:
        fv = views[name]
        use_arrow = engine == "arrow" or (engine == "auto" and _ArrowSource.supports(store, fv))
        log.info("materializing %s over [%s, %s] in %d chunk(s) (%s)", name, lo, t1, len(chunks),
                 "arrow" if use_arrow else "feast")
        try:
            if use_arrow:
                stats[name] = _materialize_view_arrow(store, provider, fv, chunks, write_batch_size, max_pending_rows)
            else:
                stats[name] = _materialize_view_feast(store, provider, fv, chunks)
            store.registry.apply_materialization(fv, store.project, lo, t1, commit=True)
        except FeatureStoreError:
            raise
        except Exception as e:
            raise FeatureStoreError(
                f"materializing {name!r} over [{lo}, {t1}] failed: {type(e).__name__}: {e}. Nothing was "
                "recorded for it in the registry; re-run the task (writes are upserts)."
            ) from e
        log.info("materialized %s: %s", name, stats[name])
    with contextlib.suppress(Exception):  # pre-computed feature-service vectors, as FeatureStore.materialize
        store._precompute_affected_services(names)
    return {
        "feature_views": names,
        "window": {
            "start": t0.isoformat(),
            "end": t1.isoformat(),
            "overlap_seconds": lap.total_seconds(),
            "materialized_start": lo.isoformat(),
        },
        "rows": {n: s["entities"] for n, s in stats.items()},
        "rows_read": {n: s["rows_read"] for n, s in stats.items()},
        "rows_written": {n: s["rows_written"] for n, s in stats.items()},
        "chunks": len(chunks),
        "engine": {n: s["engine"] for n, s in stats.items()},
    }


__all__ = ["materialize", "parse_duration", "parse_utc", "time_chunks"]
