"""Inference log of the bento service: partitioned parquet, local or ``s3://`` (writer + reader).

Layout (see :mod:`mlops_provider.paths`)::

    <root>/date=YYYY-MM-DD/part-<worker-uuid>-<seq>.parquet     compacted parts (what monitoring reads)
    <spool>/date=YYYY-MM-DD/<worker-uuid>.jsonl                   the live write-ahead log of one worker

``<root>`` is a local directory or an ``s3://bucket/prefix``; ``<spool>`` is ``<root>`` itself for a
local root, and a local directory (``$MLOPS_INFERENCE_SPOOL_DIR`` or the system temp dir) for S3.

One row per prediction (TASK-CONTRACT)::

    request_id, timestamp (UTC: the request's event time when it sent ``event_timestamp``, else when it was
    scored), model_version, bento_tag, traffic (live | smoke | infra_validation | warmup | shadow),
    <entity keys>, <request fields>, <every served feature value>, __age_s__<feature> (freshness),
    prediction columns (binary: probability, prediction; multiclass: prediction, probabilities (JSON);
    regression: prediction [, quantile_<q>])
    [, variant, champion_prediction, challenger_prediction, challenger_version]
    [, latency_ms, feature_ms, missing_features, stale_features, unknown_entities]

Only ``traffic == "live"`` rows are real traffic (monitoring windows filter on it).

Write path (:class:`InferenceLogWriter`): every request batch is appended to the worker's JSONL
write-ahead log with one ``write`` and flushed before the response is returned, so a crash loses at
most the batch in progress and the rows are visible to the reader at once. The buffered rows are
compacted into one parquet part when ``flush_rows`` accumulate, when ``flush_interval_s`` passes
(a background thread), at the UTC day boundary and on ``close()``; the WAL is then removed. Parts
are written atomically (local) or put as one object (S3) through an
:class:`~mlops_provider.runtime.io.objstore.ObjectStore`, so a reader never sees a half-written part.
Inside the served bento the store is the default one (boto3's default chain, ``AWS_ENDPOINT_URL``);
a task passes the store its operator resolved from the ``aws`` connection. A WAL left behind by a killed worker is compacted by the next writer that starts
on the same spool (it claims it with an atomic rename, so two writers never both compact it).

Read path (:func:`read_inference_log`) is what drift monitoring uses: a missing or empty root gives
an empty frame; parts and live WALs are read; corrupt WAL lines (the torn last line of a killed
worker) and unreadable parts are skipped and counted (``frame.attrs["skipped_lines"]`` /
``["skipped_files"]``). Whole ``date=`` partitions outside ``[start, end)`` are pruned.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Any

import pandas as pd

from mlops_provider.runtime.io.objstore import DEFAULT_STORE, ObjectStore, is_s3, join
from mlops_provider.runtime.serving.request_schema import DEFAULT_TRAFFIC, TRAFFIC_CLASSES  # noqa: F401 - re-export

log = logging.getLogger(__name__)

#: Columns every record carries besides the features.
META_COLUMNS = ("request_id", "timestamp", "model_version", "bento_tag", "traffic")
PREDICTION_COLUMN = "prediction"
#: Prefix of the freshness columns: ``__age_s__<feature>`` = age (seconds) of the served value.
AGE_PREFIX = "__age_s__"
WAL_SUFFIX = ".jsonl"
PART_SUFFIX = ".parquet"
ENV_SPOOL = "MLOPS_INFERENCE_SPOOL_DIR"


def _json_default(value: Any) -> Any:
    """JSON encoder fallback for numpy scalars, timestamps and other odd values."""
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _clean(value: Any) -> Any:
    """NaN/inf become null so every WAL line is strict JSON and every part column is typed."""
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        try:
            value = value.item()
        except (ValueError, AttributeError):
            pass
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _as_utc(ts: datetime | str | None) -> datetime:
    if ts is None:
        return datetime.now(UTC)
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts)
    if ts.tzinfo is None:
        return ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC)


def default_spool_dir(root: str) -> Path:
    """Local spool of an ``s3://`` root (one per root, so writers of the same root share orphans)."""
    import hashlib

    base = Path(os.environ.get(ENV_SPOOL) or Path(tempfile.gettempdir()) / "mlops-inference-spool")
    return base / hashlib.sha256(root.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------- parquet
def _to_table(rows: list[dict[str, Any]]) -> Any:
    """Rows -> pyarrow Table; a column with mixed types falls back to strings (never fails)."""
    import pyarrow as pa

    columns: list[str] = list(dict.fromkeys(k for r in rows for k in r))
    arrays = []
    for col in columns:
        values = [r.get(col) for r in rows]
        if col == "timestamp":  # pyarrow holds years 1..9999 (pandas' nanoseconds do not)
            arr = pa.array([None if v is None else _as_utc(v) for v in values], type=pa.timestamp("us", tz="UTC"))
        else:
            try:
                arr = pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
                arr = pa.array([None if v is None else str(v) for v in values], type=pa.string())
        arrays.append(arr)
    return pa.Table.from_arrays(arrays, names=columns)


def _parquet_bytes(rows: list[dict[str, Any]]) -> bytes:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(_to_table(rows), buf, compression="zstd")
    return buf.getvalue()


def _read_wal(path: Path) -> tuple[list[dict[str, Any]], int]:
    """(records, skipped lines) of one JSONL WAL; torn / non-object / timestamp-less lines are skipped."""
    rows: list[dict[str, Any]] = []
    skipped = 0
    try:
        fh = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115 - closed below
    except OSError:
        return rows, 0
    with fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    raise ValueError("not an object")
                _as_utc(rec["timestamp"])
            except (ValueError, KeyError, TypeError):
                skipped += 1
                continue
            rows.append(rec)
    return rows, skipped


# ---------------------------------------------------------------------------------------- writer
class InferenceLogWriter:
    """Thread-safe inference log writer: JSONL write-ahead log per worker, compacted to parquet parts.

    ``write_batch`` adds the metadata (``request_id`` when absent, ``timestamp``, ``model_version``,
    ``bento_tag``, ``traffic``), appends + flushes the whole batch at once and returns the rows as written.
    A record's own ``timestamp`` (its event time) wins over the batch's; rows land in the partition of
    their own day.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        model_version: str = "",
        bento_tag: str = "",
        worker_id: str | None = None,
        fsync: bool = False,
        flush_rows: int = 5000,
        flush_interval_s: float = 10.0,
        spool_dir: str | os.PathLike[str] | None = None,
        store: ObjectStore | None = None,
        orphan_age_s: float | None = None,
    ) -> None:
        self.root = str(directory)
        self.remote = is_s3(self.root)
        self.directory = Path(self.root) if not self.remote else default_spool_dir(self.root)
        self.spool = Path(spool_dir) if spool_dir is not None else self.directory
        self.model_version = str(model_version)
        self.bento_tag = str(bento_tag)
        self.worker_id = worker_id or uuid.uuid4().hex
        self.fsync = fsync
        self.flush_rows = max(1, int(flush_rows))
        self.flush_interval_s = float(flush_interval_s)
        self.orphan_age_s = (
            orphan_age_s if orphan_age_s is not None else max(120.0, 10 * self.flush_interval_s)
        )
        self.store = store if store is not None else DEFAULT_STORE
        self._lock = threading.RLock()
        self._fhs: dict[str, IO[str]] = {}
        self._buffers: dict[str, list[dict[str, Any]]] = {}
        self._buffered = 0
        self._buffer_since = 0.0
        self._seq = 0
        self._pid = os.getpid()
        self._flusher: threading.Thread | None = None
        self._stop = threading.Event()
        self.parts_written = 0
        with contextlib.suppress(OSError):
            self.compact_orphans()

    # -- paths
    def path_for(self, day: str) -> Path:
        """The live WAL of this worker for ``day``."""
        return self.spool / f"date={day}" / f"{self.worker_id}{WAL_SUFFIX}"

    def _put_part(self, day: str, name: str, payload: bytes) -> str:
        """Write one part (local: atomically; S3: one PUT); returns its path / URL."""
        url = join(self.root, f"date={day}", name)
        self.store.write_bytes(url, payload)
        return url

    # -- process / thread housekeeping
    def _check_fork(self) -> None:
        # A fork (e.g. a worker forked after the writer was created) must not share the parent's
        # WAL or buffer: switch to a new worker id so each process keeps its own files.
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            self.worker_id = uuid.uuid4().hex
            self._fhs = {}
            self._buffers = {}
            self._buffered = 0
            self._flusher = None
            self._stop = threading.Event()

    def _ensure_flusher(self) -> None:
        if self.flush_interval_s <= 0 or (self._flusher is not None and self._flusher.is_alive()):
            return
        t = threading.Thread(target=self._flush_loop, name="inference-log-flusher", daemon=True)
        self._flusher = t
        t.start()

    def _flush_loop(self) -> None:
        tick = min(1.0, max(0.05, self.flush_interval_s / 4))
        while not self._stop.wait(tick):
            try:
                with self._lock:
                    due = self._buffered and time.monotonic() - self._buffer_since >= self.flush_interval_s
                    if due:
                        self._compact_locked()
            except Exception:  # noqa: BLE001 - keep serving; the WAL still holds the rows
                log.exception("Compacting the inference log under %s failed; will retry", self.root)

    # -- writing
    def _handle(self, day: str) -> IO[str]:
        fh = self._fhs.get(day)
        if fh is None:
            path = self.path_for(day)
            path.parent.mkdir(parents=True, exist_ok=True)
            fh = self._fhs[day] = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open across batches
        return fh

    def write_batch(
        self, records: Iterable[Mapping[str, Any]], *, timestamp: datetime | None = None
    ) -> list[dict[str, Any]]:
        """Append ``records`` (one per prediction); returns the records as written."""
        ts = _as_utc(timestamp)
        out: list[dict[str, Any]] = []
        for rec in records:
            own = rec.get("timestamp")
            row: dict[str, Any] = {
                "request_id": str(rec.get("request_id") or uuid.uuid4().hex),
                "timestamp": (_as_utc(own) if own is not None else ts).isoformat(),
                "model_version": str(rec.get("model_version") or self.model_version),
                "bento_tag": str(rec.get("bento_tag") or self.bento_tag),
                "traffic": str(rec.get("traffic") or DEFAULT_TRAFFIC),
            }
            for key, value in rec.items():
                if key not in row:
                    row[key] = _clean(value)
            out.append(row)
        if not out:
            return out
        by_day: dict[str, list[dict[str, Any]]] = {}
        for r in out:
            by_day.setdefault(r["timestamp"][:10], []).append(r)
        with self._lock:
            self._check_fork()
            if self._fhs and max(by_day) > max(self._fhs):  # the day rolled over: earlier days become parts
                self._compact_locked()
            if not self._buffered:
                self._buffer_since = time.monotonic()
            for day, rows in by_day.items():
                payload = "".join(
                    json.dumps(r, default=_json_default, allow_nan=False, separators=(",", ":")) + "\n"
                    for r in rows
                )
                fh = self._handle(day)
                fh.write(payload)
                fh.flush()
                if self.fsync:
                    os.fsync(fh.fileno())
                self._buffers.setdefault(day, []).extend(dict(r) for r in rows)
                self._buffered += len(rows)
            if self._buffered >= self.flush_rows or len(self._fhs) > 8:
                self._compact_locked()
            else:
                self._ensure_flusher()
        return out

    def _compact_locked(self) -> str | None:
        """Buffered rows -> one parquet part per day; the WALs are removed afterwards (caller holds the lock).

        Returns the last part written (None when nothing was buffered).
        """
        path = None
        for day in sorted(self._fhs):
            rows = self._buffers.get(day) or []
            if rows:
                self._seq += 1
                path = self._put_part(
                    day, f"part-{self.worker_id}-{self._seq:06d}{PART_SUFFIX}", _parquet_bytes(rows)
                )
                self.parts_written += 1
            self._fhs[day].close()
            self.path_for(day).unlink(missing_ok=True)
        self._fhs = {}
        self._buffers = {}
        self._buffered = 0
        return path

    def flush(self) -> str | None:
        """Compact what is buffered now (returns the part written, if any)."""
        with self._lock:
            self._check_fork()
            return self._compact_locked()

    def compact_orphans(self) -> int:
        """Compact WALs of dead writers (untouched for ``orphan_age_s``) on this spool; returns rows."""
        if not self.spool.is_dir():
            return 0
        now = time.time()
        total = 0
        for wal in self.spool.glob(f"date=*/*{WAL_SUFFIX}"):
            if wal.stem == self.worker_id:
                continue
            try:
                if now - wal.stat().st_mtime < self.orphan_age_s:
                    continue
                claimed = wal.with_name(f"{wal.name}.claimed-{self.worker_id}")
                os.rename(wal, claimed)  # atomic: only one writer wins the orphan
            except OSError:
                continue
            rows, skipped = _read_wal(claimed)
            if rows:
                day = wal.parent.name[len("date=") :]
                try:
                    self._put_part(day, f"part-{wal.stem}-orphan{PART_SUFFIX}", _parquet_bytes(rows))
                except Exception:  # noqa: BLE001 - a bad orphan must not stop this writer from serving
                    log.exception("Cannot compact orphaned inference WAL %s; kept as %s", wal, claimed)
                    continue
            claimed.unlink(missing_ok=True)
            total += len(rows)
            log.info(
                "Compacted orphaned inference WAL %s (%d rows, %d corrupt lines)", wal, len(rows), skipped
            )
        return total

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            if os.getpid() == self._pid:
                self._compact_locked()
            self._fhs = {}
            self._buffers = {}

    def __enter__(self) -> InferenceLogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------- reader
def _day_of(dirname: str) -> date | None:
    if not dirname.startswith("date="):
        return None
    try:
        return date.fromisoformat(dirname[len("date=") :])
    except ValueError:
        return None


def _in_days(day: date, lo: datetime | None, hi: datetime | None) -> bool:
    return not ((lo is not None and day < lo.date()) or (hi is not None and day > hi.date()))


def _read_part(data: bytes | Path) -> Any:
    import pyarrow.parquet as pq

    return pq.read_table(io.BytesIO(data) if isinstance(data, bytes) else str(data))


def _list_remote(root: str, store: ObjectStore) -> list[tuple[date, str]]:
    """``(day, url)`` of every part under ``root/date=*/`` (one level of partitions, parts only)."""
    base = root.rstrip("/") + "/"
    out: list[tuple[date, str]] = []
    for url in store.list(root, f"*{PART_SUFFIX}", recursive=True):
        part_dir, _, name = url[len(base) :].partition("/")
        day = _day_of(part_dir)
        if day is not None and name and "/" not in name:
            out.append((day, url))
    return sorted(out)


def read_inference_log(
    directory: str | os.PathLike[str],
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    *,
    store: ObjectStore | None = None,
) -> pd.DataFrame:
    """Read every record with ``start <= timestamp < end`` (both optional, UTC) into a DataFrame.

    ``directory`` is a local path or ``s3://bucket/prefix`` (read through ``store``, None: the
    process's default store). A missing or empty root gives an empty frame (with the meta +
    prediction columns). ``timestamp`` is a tz-aware UTC column, rows sorted by it.
    """
    import pyarrow as pa

    root = str(directory)
    lo = _as_utc(start) if start is not None else None
    hi = _as_utc(end) if end is not None else None
    tables: list[Any] = []
    wal_rows: list[dict[str, Any]] = []
    skipped = skipped_files = files = 0
    if is_s3(root):
        store = store if store is not None else DEFAULT_STORE
        for day, url in _list_remote(root, store):
            if not _in_days(day, lo, hi):
                continue
            files += 1
            try:
                tables.append(_read_part(store.read_bytes(url)))
            except Exception as e:  # noqa: BLE001 - a bad part must not hide the others
                skipped_files += 1
                log.warning("Skipping unreadable inference log part %s: %s", url, e)
    elif Path(root).is_dir():
        for day_dir in sorted(p for p in Path(root).iterdir() if p.is_dir()):
            part_day = _day_of(day_dir.name)
            if part_day is None or not _in_days(part_day, lo, hi):
                continue
            # live (or claimed) write-ahead logs FIRST, then the parts: a compaction in between moves rows
            # from a WAL into a part, so they are read twice (de-duplicated below), never missed
            for path in sorted(day_dir.glob(f"*{WAL_SUFFIX}*")):
                files += 1
                rows, bad = _read_wal(path)
                wal_rows.extend(rows)
                skipped += bad
            for path in sorted(day_dir.glob(f"*{PART_SUFFIX}")):
                files += 1
                try:
                    tables.append(_read_part(path))
                except Exception as e:  # noqa: BLE001
                    skipped_files += 1
                    log.warning("Skipping unreadable inference log part %s: %s", path, e)
    if skipped:
        log.warning("Skipped %d corrupt line(s) in the inference log under %s", skipped, root)
    frames: list[pd.DataFrame] = []
    if tables:
        frames.append(pa.concat_tables(tables, promote_options="permissive").to_pandas())
    if wal_rows:
        frames.append(pd.DataFrame.from_records(wal_rows))
    frames = [f for f in frames if not f.empty]
    if not frames:
        frame = pd.DataFrame(columns=[*META_COLUMNS, PREDICTION_COLUMN])
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True).astype("datetime64[ns, UTC]")
    else:
        frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601").astype(
            "datetime64[ns, UTC]"
        )
        if lo is not None:
            frame = frame[frame["timestamp"] >= pd.Timestamp(lo)]
        if hi is not None:
            frame = frame[frame["timestamp"] < pd.Timestamp(hi)]
        if len(frames) > 1:  # a compaction while reading, or a crash between "part written" and "WAL removed"
            frame = frame.drop_duplicates(subset=["request_id", "timestamp"], keep="first")
        frame = frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
    frame.attrs["skipped_lines"] = skipped
    frame.attrs["skipped_files"] = skipped_files
    log.info("Read %d inference record(s) from %d file(s) under %s", len(frame), files, root)
    return frame
