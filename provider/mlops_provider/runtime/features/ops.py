"""Feast work done inside tasks: open a store, apply a repo, materialize, build a training snapshot.

Runtime module (heavy imports allowed). The operators in ``mlops_provider.operators.feast`` are thin
wrappers around the functions here.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib
import importlib.util
import io
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from mlops_provider.exceptions import DataValidationError, FeatureStoreError
from mlops_provider.paths import mlops_home
from mlops_provider.runtime.features.snapshot import write_snapshot

log = logging.getLogger(__name__)

DEFAULT_FS_YAML = "feature_store.yaml"


# ----------------------------------------------------------------------------------------------------
# configuration and store
# ----------------------------------------------------------------------------------------------------


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def ensure_mlops_home_env() -> str:
    """Export ``MLOPS_HOME`` (default ``./.mlops``, absolute) so ``${MLOPS_HOME}`` in Feast YAML resolves."""
    home = os.environ.get("MLOPS_HOME")
    if not home:
        home = str(mlops_home())
        os.environ["MLOPS_HOME"] = home
    return home


def load_repo_config(
    repo_path: str | os.PathLike[str],
    *,
    fs_yaml_file: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> Any:
    """``feast.RepoConfig`` from ``<repo>/<fs_yaml_file>`` with ``${ENV}`` substitution and ``overrides`` merged.

    Raises :class:`FeatureStoreError` when the repo or the YAML is missing or invalid.
    """
    from feast.repo_config import RepoConfig

    repo = Path(repo_path).expanduser().resolve()
    if not repo.is_dir():
        raise FeatureStoreError(
            f"Feast repo {repo} does not exist. Set repo_path (or the feast connection extra 'repo_path') to "
            "the directory holding feature_store.yaml and the definitions."
        )
    yaml_path = Path(fs_yaml_file) if fs_yaml_file else Path(DEFAULT_FS_YAML)
    if not yaml_path.is_absolute():
        yaml_path = repo / yaml_path
    if not yaml_path.is_file():
        raise FeatureStoreError(
            f"Feast config {yaml_path} does not exist. Create it or point the feast connection extra "
            "'fs_yaml_file' at an existing file."
        )
    ensure_mlops_home_env()
    try:
        raw = yaml.safe_load(os.path.expandvars(yaml_path.read_text()))
    except yaml.YAMLError as e:
        raise FeatureStoreError(f"Feast config {yaml_path} is not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise FeatureStoreError(f"Feast config {yaml_path} must be a mapping, got {type(raw).__name__}")
    if overrides:
        raw = _deep_merge(raw, overrides)
    unresolved = [k for k, v in _flatten(raw) if isinstance(v, str) and "${" in v]
    if unresolved:
        raise FeatureStoreError(
            f"Feast config {yaml_path}: environment variable(s) not set for {unresolved}. Export them in the "
            "worker environment."
        )
    try:
        config = RepoConfig(**raw)
    except Exception as e:  # pydantic ValidationError, FeastConfigError, registry errors
        raise FeatureStoreError(f"Feast config {yaml_path} is invalid: {e}") from e
    config.repo_path = repo
    return config


def _flatten(d: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _flatten(v, f"{prefix}{k}.")
    else:
        yield prefix.rstrip("."), d


def open_store(
    repo_path: str | os.PathLike[str],
    *,
    fs_yaml_file: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> Any:
    """A ``feast.FeatureStore`` for the repo (see :func:`load_repo_config`)."""
    from feast import FeatureStore

    config = load_repo_config(repo_path, fs_yaml_file=fs_yaml_file, overrides=overrides)
    Path(mlops_home()).mkdir(parents=True, exist_ok=True)
    for key in ("path",):  # create the parent dirs of file-based registry / sqlite online store
        for section in (config.registry_config, config.online_config):
            if isinstance(section, dict) and isinstance(section.get(key), str) and "://" not in section[key]:
                Path(section[key]).expanduser().parent.mkdir(parents=True, exist_ok=True)
    if isinstance(config.registry_config, str) and "://" not in config.registry_config:
        Path(config.registry_config).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return FeatureStore(repo_path=str(config.repo_path), config=config)


# ----------------------------------------------------------------------------------------------------
# apply
# ----------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _in_repo(repo: Path) -> Iterator[None]:
    """cwd + sys.path set to the repo (Feast imports definitions relative to cwd); fresh module import."""
    old_cwd = os.getcwd()
    # re-import repo modules: paths depend on $MLOPS_HOME, and another repo's same-named module
    # (e.g. ``definitions``) may be cached from an earlier apply in this process
    local = {p.stem for p in repo.glob("*.py")} | {p.name for p in repo.iterdir() if (p / "__init__.py").is_file()}
    for name, mod in list(sys.modules.items()):
        f = getattr(mod, "__file__", None)
        if name.split(".")[0] in local or (f and Path(f).resolve().is_relative_to(repo)):
            del sys.modules[name]
    sys.path.insert(0, str(repo))
    os.chdir(repo)
    try:
        yield
    finally:
        os.chdir(old_cwd)
        with contextlib.suppress(ValueError):
            sys.path.remove(str(repo))


def _parse(store: Any, repo: Path) -> Any:
    from feast import Project
    from feast.repo_operations import parse_repo

    try:
        contents = parse_repo(repo)
    except Exception as e:
        raise FeatureStoreError(
            f"Feast repo {repo}: importing the definitions failed ({type(e).__name__}: {e}). Fix the Python "
            "files of the repo (or list non-definition files in .feastignore)."
        ) from e
    project = store.config.project
    names = {p.name for p in contents.projects}
    if not names:
        contents.projects.append(Project(name=project, description=""))
    elif names != {project}:
        raise FeatureStoreError(
            f"Feast repo {repo} defines project(s) {sorted(names)} but feature_store.yaml says {project!r}; "
            "make them equal."
        )
    return contents


def apply_repo(store: Any) -> dict[str, Any]:
    """``feast apply`` the store's repo if (and only if) the plan shows a change.

    Returns ``{"changed": bool, "diff": str}``. Unchanged objects are not rewritten, so materialization
    history (kept on the feature views in the registry) survives a no-op apply.
    """
    from feast.diff.property_diff import TransitionType
    from feast.feature_view import DUMMY_ENTITY_NAME
    from feast.repo_operations import apply_total_with_repo_instance

    repo = Path(store.repo_path).resolve()
    with _in_repo(repo):
        contents = _parse(store, repo)
        try:
            registry_diff, infra_diff, _ = store.plan(contents)
        except Exception as e:
            raise FeatureStoreError(f"Feast repo {repo}: planning the apply failed: {e}") from e
        changes = [
            d
            for d in registry_diff.feast_object_diffs
            if d.transition_type != TransitionType.UNCHANGED
            and d.name != DUMMY_ENTITY_NAME
            and not (d.transition_type == TransitionType.UPDATE and _only_meta_changed(d))
        ]
        infra_changes = [d for d in infra_diff.infra_object_diffs if d.transition_type != TransitionType.UNCHANGED]
        diff = _strip_ansi(registry_diff.to_string() + infra_diff.to_string()).strip()
        if not changes and not infra_changes:
            log.info("Feast repo %s: registry is up to date, nothing to apply", repo)
            return {"changed": False, "diff": ""}
        log.info("Feast repo %s: applying\n%s", repo, diff)
        buf = io.StringIO()
        try:
            with contextlib.redirect_stdout(buf):
                apply_total_with_repo_instance(
                    store, store.config.project, store.registry, contents, skip_source_validation=False
                )
        except SystemExit as e:  # feast's helpers sys.exit() on some user errors
            raise FeatureStoreError(f"Feast apply of {repo} failed: {buf.getvalue().strip()}") from e
        except Exception as e:
            raise FeatureStoreError(f"Feast apply of {repo} failed: {type(e).__name__}: {e}") from e
        store.refresh_registry()
    return {"changed": True, "diff": diff or _strip_ansi(buf.getvalue()).strip()}


def _only_meta_changed(diff: Any) -> bool:
    """True when every property change of an UPDATE is in the ``meta`` timestamps of a nested proto.

    Feast 0.67 stores a feature view's batch source with fresh ``meta`` timestamps when it records a
    materialization, so the next plan reports "Updated feature view ... batch_source" although the
    definitions did not change. Such diffs are not changes.
    """
    props = list(diff.feast_object_property_diffs or [])
    if not props:
        return False
    for prop in props:
        old, new = prop.val_existing, prop.val_declared
        if not (hasattr(old, "ClearField") and hasattr(new, "ClearField")):
            return False
        old, new = type(old).FromString(old.SerializeToString()), type(new).FromString(new.SerializeToString())
        for msg in (old, new):
            if "meta" in msg.DESCRIPTOR.fields_by_name:
                msg.ClearField("meta")
        if old.SerializeToString(deterministic=True) != new.SerializeToString(deterministic=True):
            return False
    return True


def _strip_ansi(s: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", s)


# ----------------------------------------------------------------------------------------------------
# materialize
# ----------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------
# freshness
# ----------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------
# training dataset
# ----------------------------------------------------------------------------------------------------


def _read_labels(labels_dir: str | os.PathLike[str]) -> pd.DataFrame:
    d = Path(labels_dir)
    files = sorted(d.glob("*.parquet")) if d.is_dir() else ([d] if d.is_file() else [])
    if not files:
        raise DataValidationError(
            f"no label partitions (*.parquet) under {d}. Run the feature pipeline (offline partition task) first."
        )
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def deterministic_sample(df: pd.DataFrame, n: int, key_cols: list[str]) -> pd.DataFrame:
    """The ``n`` rows with the smallest content hash of ``key_cols`` (same input -> same sample)."""
    if n >= len(df):
        return df
    h = pd.util.hash_pandas_object(df[key_cols], index=False).to_numpy()
    keep = sorted(pd.Series(h).nsmallest(n).index)  # nsmallest is stable on ties (keeps first)
    return df.iloc[keep]


def build_training_dataset(
    store: Any,
    *,
    feature_service: str,
    labels_dir: str,
    label: str,
    snapshot_root: str,
    validation_days: int = 21,
    end: str | None = None,
    max_rows: int | None = None,
) -> dict[str, Any]:
    """Point-in-time join of the label frame with ``feature_service``; write an immutable snapshot.

    Returns ``{"path", "hash", "rows": {"train", "validation"}, "split": {...}, "window": {...},
    "feature_service", "label"}``.
    """
    if validation_days < 1:
        raise DataValidationError(f"validation_days must be >= 1, got {validation_days}")
    labels = _read_labels(labels_dir)
    required = ["event_timestamp", label]
    missing = [c for c in required if c not in labels.columns]
    if missing:
        raise DataValidationError(f"label partitions under {labels_dir} lack column(s) {missing}")
    labels["event_timestamp"] = pd.to_datetime(labels["event_timestamp"], utc=True).astype("datetime64[ns, UTC]")
    if end:
        labels = labels[labels["event_timestamp"] < pd.Timestamp(parse_utc(end, "end"))]
    entity_cols = [c for c in labels.columns if c not in (label,)]
    labels = labels.sort_values(entity_cols, kind="stable").reset_index(drop=True)
    if max_rows:
        labels = deterministic_sample(labels, int(max_rows), entity_cols).reset_index(drop=True)
    if labels.empty:
        raise DataValidationError(f"no labelled rows under {labels_dir} before end={end!r}; nothing to train on")
    bad = set(pd.unique(labels[label].dropna())) - {0, 1}
    if bad or labels[label].isna().any():
        raise DataValidationError(f"label {label!r} must be 0/1 without nulls; found values {sorted(bad)[:5]}")

    try:
        fs = store.get_feature_service(feature_service)
    except Exception as e:
        raise FeatureStoreError(
            f"feature service {feature_service!r} is not in the Feast registry of {store.repo_path} ({e}). "
            "Run the feast apply task, or fix the feature service name in the model YAML."
        ) from e
    try:
        joined = store.get_historical_features(entity_df=labels, features=fs).to_df()
    except Exception as e:
        raise FeatureStoreError(f"point-in-time join for {feature_service!r} failed: {type(e).__name__}: {e}") from e
    # request-time features come back twice (entity frame input + on-demand output): keep the output
    joined = joined.loc[:, ~joined.columns.duplicated(keep="last")]
    feature_names = [f.name for proj in fs.feature_view_projections for f in proj.features]
    key_cols = [c for c in ("event_timestamp", "origin", "carrier", "tailnum") if c in joined.columns]
    key_cols += [c for c in labels.columns if c not in key_cols and c not in feature_names and c != label]
    cols = list(dict.fromkeys([*key_cols, *feature_names, label]))
    df = joined[cols].sort_values(cols, kind="stable", na_position="last").reset_index(drop=True)
    if len(df) != len(labels):
        raise FeatureStoreError(f"point-in-time join returned {len(df)} rows for {len(labels)} label rows")

    ts = df["event_timestamp"]
    first, last = ts.min(), ts.max()
    validation_start = (last.floor("D") + pd.Timedelta(days=1)) - pd.Timedelta(days=validation_days)
    df["split"] = (ts >= validation_start).map({True: "validation", False: "train"})
    rows = {"train": int((df["split"] == "train").sum()), "validation": int((df["split"] == "validation").sum())}
    if rows["train"] == 0 or rows["validation"] == 0:
        raise DataValidationError(
            f"time split leaves an empty side {rows}: the data spans {first} .. {last} and validation_days="
            f"{validation_days}. Land more data or lower validation_days."
        )
    split = {
        "method": "time",
        "train_end": validation_start.isoformat(),
        "validation_start": validation_start.isoformat(),
        "validation_end": last.isoformat(),
        "validation_days": int(validation_days),
    }
    window = {"start": first.isoformat(), "end": last.isoformat()}
    path, manifest = write_snapshot(
        df,
        {
            "feature_service": feature_service,
            "label": label,
            "rows": rows,
            "split": split,
            "window": window,
            "features": feature_names,
            "sample": {"max_rows": max_rows} if max_rows else None,
        },
        snapshot_root,
    )
    return {
        "path": path,
        "hash": manifest["hash"],
        "rows": manifest["rows"],
        "split": manifest["split"],
        "window": manifest["window"],
        "feature_service": feature_service,
        "label": label,
    }


# ----------------------------------------------------------------------------------------------------
# user transforms
# ----------------------------------------------------------------------------------------------------


def load_callable(spec: str) -> Callable[..., Any]:
    """``"path/to/file.py:function"`` or ``"package.module:function"`` -> the function."""
    target, sep, func = spec.rpartition(":")
    if not sep or not target or not func:
        raise FeatureStoreError(
            f"transform {spec!r} must look like 'path/to/file.py:function' or 'package.module:function'"
        )
    if target.endswith(".py"):
        path = Path(target).expanduser()
        if not path.is_absolute():
            path = Path.cwd() / path
        if not path.is_file():
            raise FeatureStoreError(f"transform file {path} does not exist (from {spec!r})")
        name = "mlops_transform_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
        mod_spec = importlib.util.spec_from_file_location(name, path)
        if mod_spec is None or mod_spec.loader is None:
            raise FeatureStoreError(f"cannot import transform file {path}")
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[name] = module
        try:
            mod_spec.loader.exec_module(module)
        except Exception as e:
            del sys.modules[name]
            raise FeatureStoreError(f"importing transform file {path} failed: {type(e).__name__}: {e}") from e
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise FeatureStoreError(f"cannot import transform module {target!r}: {e}") from e
    fn = getattr(module, func, None)
    if not callable(fn):
        raise FeatureStoreError(f"transform {spec!r}: {func!r} is not a function of {target}")
    return fn


__all__ = [
    "apply_repo",
    "describe_staleness",
    "feature_freshness",
    "parse_duration",
    "time_chunks",
    "build_training_dataset",
    "deterministic_sample",
    "ensure_mlops_home_env",
    "load_callable",
    "load_repo_config",
    "materialize",
    "open_store",
    "parse_utc",
]
