"""The inference log window, read column by column (runtime module).

The monitor never loads a window as one frame: :class:`ParquetWindow` indexes the row groups of the
window's parquet files by their timestamps and streams one column at a time (see
:mod:`mlops_provider.runtime.monitoring.statistics` for what is computed from the stream).

Files come through an :class:`~mlops_provider.runtime.io.objstore.ObjectStore`, so the log may live in a
local directory or under an ``s3://`` prefix alike. Only the ``date=YYYY-MM-DD/`` partitions of the
window's days are listed (not the whole log): :func:`log_files`. Parquet parts are read in place
(pyarrow file systems: footer and the needed row groups only); JSONL files (the service's write-ahead
logs) are spilled once, in bounded chunks, to a temporary parquet file (:func:`spill_jsonl`).
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mlops_provider.exceptions import DriftError
from mlops_provider.runtime.io import objstore
from mlops_provider.runtime.io.objstore import ObjectStore

log = logging.getLogger(__name__)

TIMESTAMP = "timestamp"

# ---- traffic hygiene: only live traffic enters a monitoring window ------------------------------------
#: Inference-log column naming the kind of request; the service sets it from the request header
#: :data:`TRAFFIC_HEADER` (absent header: ``live``).
TRAFFIC_COLUMN = "traffic"
TRAFFIC_HEADER = "X-Mlops-Traffic"
LIVE = "live"
TRAFFIC_KINDS = (LIVE, "smoke", "infra_validation", "warmup", "shadow")
REQUEST_ID = "request_id"
#: Older logs (no traffic column) mark smoke-test requests by this request_id prefix
#: (``mlops_provider.runtime.serving.checks.SMOKE_ID_PREFIX``).
LEGACY_SMOKE_PREFIX = "smoke-"
#: Rows per spilled chunk / row group when converting JSONL (bounds the reader's memory).
SPILL_CHUNK_ROWS = 100_000
#: A bounded window spanning more days than this is listed by prefix, not day by day.
MAX_LISTED_DAYS = 400


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



def open_parquet(path: str, store: ObjectStore | None) -> pq.ParquetFile:
    """A local file or an ``s3://`` object as a ``ParquetFile`` (S3: footer + requested ranges only)."""
    if objstore.is_s3(path):
        fs, key = (store or objstore.DEFAULT_STORE).arrow_fs(path)
        return pq.ParquetFile(fs.open_input_file(key))
    return pq.ParquetFile(path)


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
    #: reads the ``s3://`` files (None: local files only, or the process default store)
    store: ObjectStore | None = None
    #: rows of [start, end) left out because they are not live traffic, by kind
    excluded: dict[str, int] = field(default_factory=dict)

    @classmethod
    def open(
        cls,
        files: Sequence[str | os.PathLike[str]],
        start: Any = None,
        end: Any = None,
        *,
        store: ObjectStore | None = None,
        live_only: bool = False,
    ) -> ParquetWindow:
        """Index the row groups of ``files`` inside ``[start, end)``; ``live_only`` also leaves out every row
        that is not live traffic (:func:`live_mask`), counted in :attr:`excluded`."""
        win = cls([str(f) for f in files], _utc(start), _utc(end), store=store)
        lo = win.start.value if win.start is not None else None
        hi = win.end.value if win.end is not None else None
        schemas: list[set[str]] = []
        for path in win.files:
            pf = open_parquet(path, store)
            names = set(pf.schema_arrow.names)
            schemas.append(names)
            if TIMESTAMP not in names:
                raise DriftError(
                    f"inference log file {path} has no {TIMESTAMP!r} column; it is not a log partition."
                )
            tagged = [c for c in (TRAFFIC_COLUMN, REQUEST_ID) if c in names] if live_only else []
            for i in range(pf.num_row_groups):
                group = pf.read_row_group(i, columns=[TIMESTAMP, *tagged])
                ts = _ts_ns(group.column(0))
                mask = np.ones(len(ts), dtype=bool)
                if lo is not None:
                    mask &= ts >= lo
                if hi is not None:
                    mask &= ts < hi
                if live_only:
                    kinds = traffic_kinds(
                        group.column(TRAFFIC_COLUMN) if TRAFFIC_COLUMN in tagged else None,
                        group.column(REQUEST_ID) if REQUEST_ID in tagged else None,
                        len(ts),
                    )
                    for kind, count in pd.Series(kinds[mask & (kinds != LIVE)]).value_counts().items():
                        win.excluded[str(kind)] = win.excluded.get(str(kind), 0) + int(count)
                    mask &= kinds == LIVE
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
            pf = files.get(g.path)
            if pf is None:
                pf = files[g.path] = open_parquet(g.path, self.store)
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


def traffic_kinds(traffic: Any, request_id: Any, n: int) -> np.ndarray:
    """The traffic kind of every row: the ``traffic`` value when set (lower-cased), else ``smoke`` for a
    ``request_id`` starting with :data:`LEGACY_SMOKE_PREFIX` (older logs), else ``live``."""
    kinds = np.full(n, LIVE, dtype=object)
    if request_id is not None:
        rid = pa.chunked_array([request_id]) if isinstance(request_id, pa.Array) else request_id
        rid = rid.cast(pa.string()) if not pa.types.is_string(rid.type) else rid
        smoke = pc.fill_null(pc.starts_with(rid, LEGACY_SMOKE_PREFIX), False)
        kinds[np.asarray(smoke.to_numpy(zero_copy_only=False), dtype=bool)] = "smoke"
    if traffic is not None:
        values = np.asarray(traffic.cast(pa.string()).to_pylist(), dtype=object)
        tagged = np.array([v is not None and str(v).strip() != "" for v in values], dtype=bool)
        kinds[tagged] = np.array([str(v).strip().lower() for v in values[tagged]], dtype=object)
    return kinds


def frame_traffic_kinds(frame: pd.DataFrame) -> np.ndarray:
    """:func:`traffic_kinds` of every row of an in-memory log frame (its ``traffic`` / ``request_id`` columns)."""

    def text(col: str) -> pa.Array | None:
        if col not in frame.columns:
            return None
        return pa.array([None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)
                         for v in frame[col].to_numpy(dtype=object)], pa.string())

    return traffic_kinds(text(TRAFFIC_COLUMN), text(REQUEST_ID), len(frame))


def frame_window(frame: pd.DataFrame, tmp_dir: str | os.PathLike[str]) -> ParquetWindow:
    """An in-memory frame as a one-file window (tests and :func:`~mlops_provider.runtime.monitoring.drift.drift_report`)."""
    df = frame.copy()
    if TIMESTAMP not in df.columns:
        df[TIMESTAMP] = pd.Timestamp("1970-01-01", tz="UTC")
    path = Path(tmp_dir) / "window.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_parquet(df, path)
    return ParquetWindow.open([path])


def write_parquet(df: pd.DataFrame, path: Path) -> None:
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


def _partitions(
    directory: str, lo: pd.Timestamp | None, hi: pd.Timestamp | None, store: ObjectStore
) -> list[str]:
    """The ``date=YYYY-MM-DD`` partition names of the window's days, in order.

    A bounded window names its days directly (nothing else under the log is listed); an open-ended
    one (or one longer than :data:`MAX_LISTED_DAYS`) lists the partitions once and keeps those in range.
    """
    if lo is not None and hi is not None and (hi.date() - lo.date()).days <= MAX_LISTED_DAYS:
        n_days = max(-1, (hi.date() - lo.date()).days)
        return [f"date={(lo.date() + timedelta(days=i)).isoformat()}" for i in range(n_days + 1)]
    out = []
    names: Sequence[str] = store.list_dirs(directory)  # (ObjectStore's method `list` confuses mypy's `list`)
    for name in names:
        d = _day(name)
        if d is None or (lo is not None and d < lo.date()) or (hi is not None and d > hi.date()):
            continue
        out.append(name)
    return out


def log_files(
    directory: str | os.PathLike[str],
    start: Any = None,
    end: Any = None,
    *,
    store: ObjectStore | None = None,
) -> dict[str, list[str]]:
    """``{"parquet": [...], "jsonl": [...]}`` under ``<dir>/date=YYYY-MM-DD/`` overlapping [start, end).

    ``directory`` is a local path or an ``s3://`` prefix (read through ``store``); paths / URLs are
    returned sorted per day. A missing log (or day) has no files.
    """
    store = store or objstore.DEFAULT_STORE
    lo, hi = _utc(start), _utc(end)
    out: dict[str, list[str]] = {"parquet": [], "jsonl": []}
    for name in _partitions(str(directory), lo, hi, store):
        files = list(store.list(objstore.join(directory, name)))
        out["parquet"] += [f for f in files if f.endswith(".parquet")]
        out["jsonl"] += [f for f in files if f.endswith(".jsonl")]
    return out


def _open_text(file: str, store: ObjectStore | None) -> IO[str]:
    if objstore.is_s3(file):
        fs, key = (store or objstore.DEFAULT_STORE).arrow_fs(file)
        return io.TextIOWrapper(fs.open_input_stream(key), encoding="utf-8", errors="replace")
    return open(file, encoding="utf-8", errors="replace")


def spill_jsonl(
    files: Sequence[str],
    columns: Mapping[str, str],
    dest: str | os.PathLike[str],
    start: Any = None,
    end: Any = None,
    *,
    store: ObjectStore | None = None,
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
        with _open_text(file, store) as fh:
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
    *,
    store: ObjectStore | None = None,
    live_only: bool = False,
) -> ParquetWindow:
    """The inference log window as a :class:`ParquetWindow` (parquet partitions + spilled JSONL).

    ``directory``: a local directory or an ``s3://`` prefix, read through ``store``. ``live_only``: only
    live traffic (no smoke test, infra validation, warm-up or shadow request); what was left out is in
    ``window.excluded``.
    """
    files = log_files(directory, start, end, store=store)
    if live_only:
        columns = {**columns, TRAFFIC_COLUMN: "string", REQUEST_ID: "string"}
    parquet = list(files["parquet"])
    seen: set[str] = set()
    if files["jsonl"]:
        spilled, seen, _ = spill_jsonl(
            files["jsonl"], columns, Path(tmp_dir) / "jsonl_window.parquet", start, end, store=store
        )
        if spilled is not None:
            parquet.append(str(spilled))
    win = ParquetWindow.open(parquet, start, end, store=store, live_only=live_only)
    if files["jsonl"]:
        # spilled columns exist in the schema even when no record had them: keep only those seen
        parquet_cols: set[str] = set()
        for path in files["parquet"]:
            parquet_cols |= set(open_parquet(path, store).schema_arrow.names)
        win.columns = parquet_cols | seen | {TIMESTAMP}
    log.info(
        "Inference log window [%s, %s): %d row(s) in %d parquet + %d jsonl file(s)%s",
        start,
        end,
        win.n_rows,
        len(files["parquet"]),
        len(files["jsonl"]),
        f"; left out (not live traffic): {win.excluded}" if win.excluded else "",
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

