"""Scalable building blocks of drift monitoring: window sources, stratified sampling, streamed
per-column statistics and the per-model-version reference cache (runtime module).

Why: plain Evidently materialises both frames and runs every metric on every row; on a 1 M-row
window that is minutes and gigabytes (evidently#1526, #763). Here the window is never loaded as one
frame:

1. **Pass 1** reads only the timestamp (and the ``stratify_by`` columns) of the window and picks a
   seeded, stratified sample of row positions (strata = UTC day x ``stratify_by`` values,
   proportional allocation, capped at ``sample_rows``). The same rows are used for every column.
2. **Pass 2** streams one column at a time, row group by row group (parquet column projection):
   exact statistics over the *whole* window (count, nulls, mean, histogram on the reference's
   quantile bins -> PSI; category counts -> Jensen-Shannon distance and unseen-category share)
   and the values at the sampled positions. Peak memory is one column chunk plus the sample.
3. Evidently then runs on the (reference sample, window sample) pair; its verdict is the
   *sampled verdict*, whose agreement with the full-data verdict is measured in
   ``benchmarks/drift_agreement.py``.

The inference log is read from parquet files (``date=YYYY-MM-DD/*.parquet``) directly, and from
JSONL files (the service's default log format) by spilling them once, in bounded chunks, to a
temporary parquet file (:func:`spill_jsonl`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mlops_provider.exceptions import DriftError, MonitoredFeatureMissingError

log = logging.getLogger(__name__)

TIMESTAMP = "timestamp"
#: Rows per spilled chunk / row group when converting JSONL (bounds the reader's memory).
SPILL_CHUNK_ROWS = 100_000
NULL_TOKEN = "__null__"


# ------------------------------------------------------------------------------------ utilities
def _utc(ts: datetime | str | None) -> pd.Timestamp | None:
    if ts is None or (isinstance(ts, str) and not ts.strip()):
        return None
    t = pd.Timestamp(ts)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def _ts_ns(values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """int64 UTC nanoseconds of a timestamp column (timestamp type or ISO strings)."""
    if pa.types.is_timestamp(values.type):
        arr = (
            pc.cast(values, pa.timestamp("ns", tz="UTC"))
            if values.type.tz
            else pc.cast(values, pa.timestamp("ns"))
        )
        return np.asarray(arr.to_numpy(zero_copy_only=False)).astype("datetime64[ns]").astype("int64")
    series = pd.to_datetime(pd.Series(values.to_pylist()), utc=True, format="ISO8601", errors="coerce")
    return series.astype("int64").to_numpy()


def _seed_for(seed: int, key: str) -> int:
    return (int(seed) * 1_000_003 + zlib.crc32(key.encode())) % (2**32)


# ------------------------------------------------------------------------------------ the window
@dataclass
class _Group:
    path: str
    index: int  # row group index in the file
    mask: np.ndarray | None  # rows of this group inside the window (None = all)
    n: int  # rows inside the window
    offset: int  # window position of the group's first in-window row


@dataclass
class ParquetWindow:
    """Rows with ``start <= timestamp < end`` of a set of parquet files, read column by column."""

    files: list[str]
    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None
    groups: list[_Group] = field(default_factory=list)
    columns: set[str] = field(default_factory=set)
    n_rows: int = 0
    #: columns that exist in some files only (null in the others)
    partial_columns: set[str] = field(default_factory=set)

    @classmethod
    def open(
        cls, files: Sequence[str | os.PathLike[str]], start: Any = None, end: Any = None
    ) -> ParquetWindow:
        win = cls([str(f) for f in files], _utc(start), _utc(end))
        lo = win.start.value if win.start is not None else None
        hi = win.end.value if win.end is not None else None
        schemas: list[set[str]] = []
        for path in win.files:
            pf = pq.ParquetFile(path)
            names = set(pf.schema_arrow.names)
            schemas.append(names)
            if TIMESTAMP not in names:
                raise DriftError(
                    f"inference log file {path} has no {TIMESTAMP!r} column; it is not a log partition."
                )
            for i in range(pf.num_row_groups):
                ts = _ts_ns(pf.read_row_group(i, columns=[TIMESTAMP]).column(0))
                mask = np.ones(len(ts), dtype=bool)
                if lo is not None:
                    mask &= ts >= lo
                if hi is not None:
                    mask &= ts < hi
                n = int(mask.sum())
                if n:
                    win.groups.append(_Group(path, i, None if n == len(ts) else mask, n, win.n_rows))
                    win.n_rows += n
        if schemas:
            common = set(schemas[0]).intersection(*schemas[1:])
            win.columns = set(schemas[0]).union(*schemas[1:])
            win.partial_columns = win.columns - common
        return win

    def column_chunks(self, column: str) -> Iterator[tuple[int, pa.Array]]:
        """``(window offset, in-window values)`` per row group; all-null chunks where a file lacks it."""
        files: dict[str, pq.ParquetFile] = {}
        for g in self.groups:
            pf = files.setdefault(g.path, pq.ParquetFile(g.path))
            if column not in pf.schema_arrow.names:
                yield g.offset, pa.nulls(g.n)
                continue
            values = pf.read_row_group(g.index, columns=[column]).column(0).combine_chunks()
            if g.mask is not None:
                values = values.filter(pa.array(g.mask))
            yield g.offset, values

    def timestamps_ns(self) -> np.ndarray:
        out = np.empty(self.n_rows, dtype="int64")
        for off, values in self.column_chunks(TIMESTAMP):
            out[off : off + len(values)] = _ts_ns(values)
        return out

    def take(self, column: str, positions: np.ndarray) -> pa.Array:
        """Values of ``column`` at sorted window ``positions`` (one streamed pass)."""
        parts: list[pa.Array] = []
        for off, values in self.column_chunks(column):
            lo, hi = np.searchsorted(positions, [off, off + len(values)])
            if hi > lo:
                parts.append(values.take(pa.array(positions[lo:hi] - off)))
        return (
            pa.concat_arrays([p.cast(parts[0].type) if p.type != parts[0].type else p for p in parts])
            if parts
            else pa.array([])
        )


def frame_window(frame: pd.DataFrame, tmp_dir: str | os.PathLike[str]) -> ParquetWindow:
    """An in-memory frame as a one-file window (tests and :func:`~mlops_provider.runtime.monitoring.drift.drift_report`)."""
    df = frame.copy()
    if TIMESTAMP not in df.columns:
        df[TIMESTAMP] = pd.Timestamp("1970-01-01", tz="UTC")
    path = Path(tmp_dir) / "window.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_parquet(df, path)
    return ParquetWindow.open([path])


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object:
            out[col] = out[col].map(lambda v: v if v is None or isinstance(v, str) or pd.isna(v) else str(v))
            out[col] = out[col].where(out[col].notna(), None)
    out.to_parquet(path, index=False, row_group_size=SPILL_CHUNK_ROWS)


# ---------------------------------------------------------------------------- inference log files
def _day(dirname: str) -> date | None:
    if not dirname.startswith("date="):
        return None
    try:
        return date.fromisoformat(dirname[5:])
    except ValueError:
        return None


def log_files(directory: str | os.PathLike[str], start: Any = None, end: Any = None) -> dict[str, list[str]]:
    """``{"parquet": [...], "jsonl": [...]}`` under ``<dir>/date=YYYY-MM-DD/`` overlapping [start, end)."""
    root = Path(directory)
    lo, hi = _utc(start), _utc(end)
    out: dict[str, list[str]] = {"parquet": [], "jsonl": []}
    if not root.is_dir():
        return out
    for day_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        d = _day(day_dir.name)
        if d is None or (lo is not None and d < lo.date()) or (hi is not None and d > hi.date()):
            continue
        out["parquet"] += [str(p) for p in sorted(day_dir.glob("*.parquet"))]
        out["jsonl"] += [str(p) for p in sorted(day_dir.glob("*.jsonl"))]
    return out


def spill_jsonl(
    files: Sequence[str],
    columns: Mapping[str, str],
    dest: str | os.PathLike[str],
    start: Any = None,
    end: Any = None,
) -> tuple[Path | None, set[str], int]:
    """Stream JSONL log records of [start, end) into one parquet file (timestamp + ``columns``).

    ``columns`` maps a column to ``"float"`` or ``"string"`` (the parquet type). Reads line by line
    and writes a row group every :data:`SPILL_CHUNK_ROWS` rows, so memory stays bounded whatever the
    window size. Returns ``(path or None when no row, columns seen in some record, skipped lines)``.
    """
    lo, hi = _utc(start), _utc(end)
    names = [c for c in columns if c != TIMESTAMP]
    fields = [pa.field(TIMESTAMP, pa.timestamp("ns", tz="UTC"))]
    fields += [pa.field(c, pa.float64() if columns[c] == "float" else pa.string()) for c in names]
    schema = pa.schema(fields)
    seen: set[str] = set()
    skipped = 0
    buf: dict[str, list[Any]] = {c: [] for c in [TIMESTAMP, *names]}
    writer: pq.ParquetWriter | None = None
    path = Path(dest)
    path.parent.mkdir(parents=True, exist_ok=True)

    def flush() -> None:
        nonlocal writer
        if not buf[TIMESTAMP]:
            return
        arrays = [pa.array(buf[TIMESTAMP], pa.int64()).cast(pa.timestamp("ns", tz="UTC"))]
        for c in names:
            if columns[c] == "float":
                arrays.append(
                    pa.array(
                        pd.to_numeric(pd.Series(buf[c], dtype=object), errors="coerce").to_numpy("float64"),
                        pa.float64(),
                        from_pandas=True,
                    )
                )
            else:
                arrays.append(pa.array([None if v is None else str(v) for v in buf[c]], pa.string()))
        if writer is None:
            writer = pq.ParquetWriter(path, schema)
        writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
        for v in buf.values():
            v.clear()

    for file in files:
        with open(file, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                    ts = _utc(rec[TIMESTAMP])
                except (ValueError, KeyError, TypeError, AttributeError):
                    skipped += 1
                    continue
                if ts is None or (lo is not None and ts < lo) or (hi is not None and ts >= hi):
                    continue
                seen.update(k for k in rec if k in columns)
                buf[TIMESTAMP].append(ts.value)
                for c in names:
                    buf[c].append(rec.get(c))
                if len(buf[TIMESTAMP]) >= SPILL_CHUNK_ROWS:
                    flush()
    flush()
    if writer is not None:
        writer.close()
    if skipped:
        log.warning("Skipped %d corrupt line(s) in the inference log", skipped)
    return (path if writer is not None else None), seen, skipped


def open_log_window(
    directory: str | os.PathLike[str],
    columns: Mapping[str, str],
    start: Any,
    end: Any,
    tmp_dir: str | os.PathLike[str],
) -> ParquetWindow:
    """The inference log window as a :class:`ParquetWindow` (parquet partitions + spilled JSONL)."""
    files = log_files(directory, start, end)
    parquet = list(files["parquet"])
    seen: set[str] = set()
    if files["jsonl"]:
        spilled, seen, _ = spill_jsonl(
            files["jsonl"], columns, Path(tmp_dir) / "jsonl_window.parquet", start, end
        )
        if spilled is not None:
            parquet.append(str(spilled))
    win = ParquetWindow.open(parquet, start, end)
    if files["jsonl"]:
        # spilled columns exist in the schema even when no record had them: keep only those seen
        parquet_cols: set[str] = set()
        for path in files["parquet"]:
            parquet_cols |= set(pq.ParquetFile(path).schema_arrow.names)
        win.columns = parquet_cols | seen | {TIMESTAMP}
    log.info(
        "Inference log window [%s, %s): %d row(s) in %d parquet + %d jsonl file(s)",
        start,
        end,
        win.n_rows,
        len(files["parquet"]),
        len(files["jsonl"]),
    )
    return win


def window_frame(win: ParquetWindow, columns: Sequence[str]) -> pd.DataFrame:
    """Only ``columns`` of the window as a frame (absent ones are left out); for narrow reads."""
    data: dict[str, Any] = {}
    for col in dict.fromkeys([TIMESTAMP, *columns]):
        if col not in win.columns:
            continue
        parts = [values for _, values in win.column_chunks(col)]
        if not parts:
            data[col] = []
            continue
        types = {p.type for p in parts if not pa.types.is_null(p.type)}
        target = types.pop() if len(types) == 1 else (pa.string() if types else pa.null())
        arr = pa.chunked_array([p if p.type == target else p.cast(target) for p in parts], type=target)
        data[col] = arr.to_pandas()
    frame = pd.DataFrame(data)
    if TIMESTAMP in frame.columns:
        frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)
    return frame


# ---------------------------------------------------------------------------------- sampling
def stratified_positions(strata: np.ndarray, cap: int, seed: int = 0) -> np.ndarray:
    """Sorted row positions of a seeded stratified sample of at most ~``cap`` rows.

    ``strata`` holds one (hashable, sortable) stratum key per row. Allocation is proportional to
    stratum size with at least one row per non-empty stratum; within a stratum rows are drawn
    without replacement by a generator seeded from (seed, stratum), so the draw of one stratum does
    not depend on the others. ``cap >= len(strata)`` keeps every row.
    """
    n = len(strata)
    if cap <= 0 or n <= cap:
        return np.arange(n, dtype="int64")
    keys, inverse, counts = np.unique(strata, return_inverse=True, return_counts=True)
    alloc = np.maximum(1, np.floor(counts * (cap / n)).astype("int64"))
    order = np.argsort(inverse, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(counts)])
    picks: list[np.ndarray] = []
    for k in range(len(keys)):
        members = order[bounds[k] : bounds[k + 1]]
        take = int(min(alloc[k], len(members)))
        rng = np.random.default_rng(_seed_for(seed, str(keys[k])))
        picks.append(rng.choice(members, size=take, replace=False))
    return np.sort(np.concatenate(picks)).astype("int64")


def window_strata(win: ParquetWindow, stratify_by: Sequence[str]) -> np.ndarray:
    """Stratum key per window row: the UTC day, crossed with the ``stratify_by`` values."""
    day = (win.timestamps_ns() // 86_400_000_000_000).astype("int64")
    keys = day.astype(str).astype(object)
    for col in stratify_by:
        if col not in win.columns:
            continue
        vals = np.empty(win.n_rows, dtype=object)
        for off, values in win.column_chunks(col):
            vals[off : off + len(values)] = np.asarray(values.to_pylist(), dtype=object)
        keys = keys + "|" + pd.Series(vals).astype(str).to_numpy(dtype=object)
    return keys.astype(str)


# ----------------------------------------------------------------------------- column statistics
def _numeric(values: pa.Array) -> np.ndarray:
    if pa.types.is_null(values.type):
        return np.full(len(values), np.nan)
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        return pd.to_numeric(pd.Series(values.to_pylist(), dtype=object), errors="coerce").to_numpy("float64")
    return np.asarray(
        pc.cast(values, pa.float64(), safe=False).to_numpy(zero_copy_only=False), dtype="float64"
    )


def _categorical(values: pa.Array) -> pa.Array:
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    if pa.types.is_string(values.type) or pa.types.is_null(values.type):
        return values.cast(pa.string())
    if pa.types.is_floating(values.type):  # 1.0 -> "1" like the training data's integer codes
        arr = values.to_numpy(zero_copy_only=False)
        return pa.array(
            [None if np.isnan(v) else (str(int(v)) if float(v).is_integer() else str(v)) for v in arr],
            pa.string(),
        )
    return pc.cast(values, pa.string())


def quantile_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """Inner bin edges from the reference's quantiles (deduplicated; empty for a constant column)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.array([], dtype="float64")
    qs = np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1])
    return np.unique(qs)


def histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    finite = values[np.isfinite(values)]
    idx = np.searchsorted(edges, finite, side="right")
    return np.bincount(idx, minlength=len(edges) + 1).astype("int64")


def psi(
    ref_counts: Sequence[float] | np.ndarray, cur_counts: Sequence[float] | np.ndarray, eps: float = 1e-4
) -> float | None:
    r, c = np.asarray(ref_counts, dtype="float64"), np.asarray(cur_counts, dtype="float64")
    if r.sum() == 0 or c.sum() == 0:
        return None
    p, q = np.clip(r / r.sum(), eps, None), np.clip(c / c.sum(), eps, None)
    return float(np.sum((q - p) * np.log(q / p)))


def js_distance(ref_counts: dict[str, int], cur_counts: dict[str, int]) -> float | None:
    keys = sorted(set(ref_counts) | set(cur_counts))
    r = np.array([ref_counts.get(k, 0) for k in keys], dtype="float64")
    c = np.array([cur_counts.get(k, 0) for k in keys], dtype="float64")
    if r.sum() == 0 or c.sum() == 0:
        return None
    p, q = r / r.sum(), c / c.sum()
    m = (p + q) / 2

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / b[nz])))

    return float(np.sqrt(max(0.0, (kl(p, m) + kl(q, m)) / 2)))


def _value_counts(values: pa.Array) -> dict[str, int]:
    vc = pc.value_counts(values.drop_null())
    return {
        str(v): int(n)
        for v, n in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True)
    }


# ------------------------------------------------------------------------------ reference stats
@dataclass
class ReferenceStats:
    """Reference sample (cleaned, capped, seeded) + exact per-column summaries of the whole reference."""

    sample: pd.DataFrame
    n_total: int
    numeric: dict[str, dict[str, Any]]  # col -> {edges, counts, nulls, n}
    categorical: dict[str, dict[str, Any]]  # col -> {counts, nulls, n}
    key: str = ""

    def to_dir(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".ref-", dir=directory.parent))
        try:
            _write_parquet(self.sample, tmp / "sample.parquet")
            (tmp / "stats.json").write_text(
                json.dumps(
                    {
                        "n_total": self.n_total,
                        "numeric": self.numeric,
                        "categorical": self.categorical,
                        "key": self.key,
                    },
                    default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v),
                )
            )
            shutil.rmtree(directory, ignore_errors=True)
            os.replace(tmp, directory)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @classmethod
    def from_dir(cls, directory: Path) -> ReferenceStats | None:
        try:
            meta = json.loads((directory / "stats.json").read_text())
            sample = pd.read_parquet(directory / "sample.parquet")
        except (OSError, ValueError):
            return None
        return cls(sample, int(meta["n_total"]), meta["numeric"], meta["categorical"], meta.get("key", ""))


def reference_stats(
    reference: pd.DataFrame,
    numeric: Sequence[str],
    categorical: Sequence[str],
    *,
    max_rows: int = 50_000,
    seed: int = 0,
    bins: int = 20,
) -> ReferenceStats:
    """Exact summaries of every reference row, and a seeded sample of at most ``max_rows`` rows."""
    num: dict[str, dict[str, Any]] = {}
    cat: dict[str, dict[str, Any]] = {}
    for col in numeric:
        vals = pd.to_numeric(reference[col], errors="coerce").to_numpy("float64")
        edges = quantile_edges(vals, bins)
        num[col] = {
            "edges": edges.tolist(),
            "counts": histogram(vals, edges).tolist(),
            "nulls": int((~np.isfinite(vals)).sum()),
            "n": int(len(vals)),
        }
    for col in categorical:
        s = reference[col]
        s = s.where(s.isna(), s.astype(str))
        cat[col] = {
            "counts": {str(k): int(v) for k, v in s.value_counts(dropna=True).items()},
            "nulls": int(s.isna().sum()),
            "n": int(len(s)),
        }
    if 0 < max_rows < len(reference):
        sample = reference.sample(n=max_rows, random_state=seed).sort_index(kind="stable")
    else:
        sample = reference
    return ReferenceStats(sample.reset_index(drop=True), len(reference), num, cat)


def cache_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


# -------------------------------------------------------------------------------- current stats
@dataclass
class CurrentStats:
    sample: pd.DataFrame
    n_total: int
    positions: np.ndarray
    columns: dict[str, dict[str, Any]]


def stream_current(
    win: ParquetWindow,
    ref: ReferenceStats,
    numeric: Sequence[str],
    categorical: Sequence[str],
    *,
    sample_rows: int = 50_000,
    seed: int = 0,
    stratify_by: Sequence[str] = (),
) -> CurrentStats:
    """Pass 1 (strata -> sampled positions) and pass 2 (per-column exact stats + sampled values)."""
    missing = [c for c in (*numeric, *categorical) if c not in win.columns]
    if missing:
        raise MonitoredFeatureMissingError(
            f"The current window (inference log) lacks feature column(s) {missing} (it has "
            f"{sorted(win.columns)}). The monitored features come from the model YAML (training.features); "
            "make sure the service logs every raw feature column, or fix the feature lists."
        )
    positions = (
        stratified_positions(window_strata(win, stratify_by), sample_rows, seed)
        if win.n_rows > sample_rows
        else np.arange(win.n_rows, dtype="int64")
    )
    sample: dict[str, Any] = {}
    stats: dict[str, dict[str, Any]] = {}
    for col in numeric:
        r = ref.numeric[col]
        edges = np.asarray(r["edges"], dtype="float64")
        counts = np.zeros(len(edges) + 1, dtype="int64")
        nulls = total = 0
        s1 = 0.0
        picked: list[np.ndarray] = []
        for off, values in win.column_chunks(col):
            x = _numeric(values)
            fin = np.isfinite(x)
            counts += histogram(x, edges)
            nulls += int((~fin).sum())
            total += len(x)
            s1 += float(x[fin].sum())
            lo, hi = np.searchsorted(positions, [off, off + len(x)])
            picked.append(x[positions[lo:hi] - off])
        sample[col] = np.concatenate(picked) if picked else np.array([], dtype="float64")
        n_valid = total - nulls
        stats[col] = {
            "kind": "numeric",
            "n": total,
            "null_share": (nulls / total) if total else None,
            "mean": (s1 / n_valid) if n_valid else None,
            "psi": psi(r["counts"], counts) if n_valid else None,
        }
    for col in categorical:
        r = ref.categorical[col]
        seen = set(r["counts"])
        cur_counts: dict[str, int] = {}
        nulls = total = 0
        picked_c: list[np.ndarray] = []
        for off, values in win.column_chunks(col):
            v = _categorical(values)
            for k, n in _value_counts(v).items():
                cur_counts[k] = cur_counts.get(k, 0) + n
            nulls += v.null_count
            total += len(v)
            lo, hi = np.searchsorted(positions, [off, off + len(v)])
            picked_c.append(np.asarray(v.take(pa.array(positions[lo:hi] - off)).to_pylist(), dtype=object))
        sample[col] = np.concatenate(picked_c) if picked_c else np.array([], dtype=object)
        unseen = {k: n for k, n in sorted(cur_counts.items(), key=lambda kv: -kv[1]) if k not in seen}
        n_valid = total - nulls
        stats[col] = {
            "kind": "categorical",
            "n": total,
            "null_share": (nulls / total) if total else None,
            "js_distance": js_distance(r["counts"], cur_counts) if n_valid else None,
            "unseen_share": (sum(unseen.values()) / n_valid) if n_valid else 0.0,
            "unseen_values": dict(list(unseen.items())[:20]),
        }
    frame = pd.DataFrame(sample, columns=[*numeric, *categorical]) if sample else pd.DataFrame()
    return CurrentStats(frame, win.n_rows, positions, stats)
