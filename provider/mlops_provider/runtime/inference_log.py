"""Append-only JSONL log of every prediction the bento service makes (writer + reader).

Layout (see :mod:`mlops_provider.paths`)::

    <home>/inference_log/<model>/date=YYYY-MM-DD/<worker-uuid>.jsonl

One JSON object per line and per prediction::

    {"request_id": str, "timestamp": iso UTC, "model_version": str, "bento_tag": str,
     "origin": ..., "carrier": ..., "tailnum": ..., <every raw feature column>: value,
     "prediction": float}

Every worker process writes its own file (named by a per-process uuid), so several
workers never interleave partial lines. Within a process, a lock serialises writers
(BentoML runs sync APIs in a thread pool). Each request batch is written with one
``write`` and flushed before the response is returned, so a crash loses at most the
batch in flight. Files roll over at UTC midnight (the ``date=`` directory is taken from
each record's timestamp).

The reader (:func:`read_inference_log`) is what drift monitoring uses: it tolerates a
missing or empty directory (empty frame) and skips corrupt lines (e.g. the torn last line
of a killed worker), logging how many it skipped.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Any

import pandas as pd

log = logging.getLogger(__name__)

#: Columns every record carries besides the features.
META_COLUMNS = ("request_id", "timestamp", "model_version", "bento_tag")
PREDICTION_COLUMN = "prediction"


def _json_default(value: Any) -> Any:
    """JSON encoder fallback for numpy scalars, timestamps and other odd values."""
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _clean(value: Any) -> Any:
    """NaN/inf become null so every line is strict JSON (``json.loads`` in any language)."""
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


class InferenceLogWriter:
    """Thread-safe append-only JSONL writer; one file per process per UTC day.

    ``write_batch`` adds the metadata (``request_id`` when absent, ``timestamp``,
    ``model_version``, ``bento_tag``) and writes + flushes the whole batch at once.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        model_version: str = "",
        bento_tag: str = "",
        worker_id: str | None = None,
        fsync: bool = False,
    ) -> None:
        self.directory = Path(directory)
        self.model_version = str(model_version)
        self.bento_tag = str(bento_tag)
        self.worker_id = worker_id or uuid.uuid4().hex
        self.fsync = fsync
        self._lock = threading.Lock()
        self._day: str | None = None
        self._fh: IO[str] | None = None
        self._pid = os.getpid()

    def path_for(self, day: str) -> Path:
        return self.directory / f"date={day}" / f"{self.worker_id}.jsonl"

    def _handle(self, day: str) -> IO[str]:
        # A fork (e.g. a worker process forked after the writer was created) must not share the
        # parent's file: switch to a new worker id so each process keeps its own file.
        if os.getpid() != self._pid:
            self._pid = os.getpid()
            self.worker_id = uuid.uuid4().hex
            self._fh = None
            self._day = None
        if self._fh is None or self._day != day:
            if self._fh is not None:
                self._fh.close()
            path = self.path_for(day)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open across batches
            self._day = day
        return self._fh

    def write_batch(
        self, records: Iterable[Mapping[str, Any]], *, timestamp: datetime | None = None
    ) -> list[dict[str, Any]]:
        """Append ``records`` (one per prediction); returns the records as written."""
        ts = _as_utc(timestamp)
        out: list[dict[str, Any]] = []
        for rec in records:
            row: dict[str, Any] = {
                "request_id": str(rec.get("request_id") or uuid.uuid4().hex),
                "timestamp": ts.isoformat(),
                "model_version": str(rec.get("model_version") or self.model_version),
                "bento_tag": str(rec.get("bento_tag") or self.bento_tag),
            }
            for key, value in rec.items():
                if key not in row:
                    row[key] = _clean(value)
            out.append(row)
        if not out:
            return out
        payload = "".join(
            json.dumps(r, default=_json_default, allow_nan=False, separators=(",", ":")) + "\n" for r in out
        )
        day = ts.date().isoformat()
        with self._lock:
            fh = self._handle(day)
            fh.write(payload)
            fh.flush()
            if self.fsync:
                os.fsync(fh.fileno())
        return out

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
                self._day = None

    def __enter__(self) -> InferenceLogWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _day_of(dirname: str) -> date | None:
    if not dirname.startswith("date="):
        return None
    try:
        return date.fromisoformat(dirname[len("date=") :])
    except ValueError:
        return None


def read_inference_log(
    directory: str | os.PathLike[str],
    start: datetime | str | None = None,
    end: datetime | str | None = None,
) -> pd.DataFrame:
    """Read every record with ``start <= timestamp < end`` (both optional, UTC) into a DataFrame.

    A missing or empty directory gives an empty frame (with the meta + prediction columns).
    Lines that are not a JSON object with a parseable ``timestamp`` are skipped; the count is
    logged as a warning and stored in ``frame.attrs["skipped_lines"]``. ``timestamp`` is
    returned as a tz-aware UTC datetime column, rows sorted by it.
    """
    root = Path(directory)
    lo = _as_utc(start) if start is not None else None
    hi = _as_utc(end) if end is not None else None
    rows: list[dict[str, Any]] = []
    skipped = 0
    files = 0
    if root.is_dir():
        for day_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            day = _day_of(day_dir.name)
            if day is None:
                continue
            # Prune whole partitions outside the window (a day dir holds records of that UTC day).
            if lo is not None and day < lo.date():
                continue
            if hi is not None and day > hi.date():
                continue
            for path in sorted(day_dir.glob("*.jsonl")):
                files += 1
                with open(path, encoding="utf-8", errors="replace") as fh:
                    for line in fh:
                        line = line.strip()
                        if not line:
                            continue
                        try:
                            rec = json.loads(line)
                            if not isinstance(rec, dict):
                                raise ValueError("not an object")
                            ts = _as_utc(rec["timestamp"])
                        except (ValueError, KeyError, TypeError):
                            skipped += 1
                            continue
                        if (lo is not None and ts < lo) or (hi is not None and ts >= hi):
                            continue
                        rows.append(rec)
    if skipped:
        log.warning("Skipped %d corrupt line(s) in the inference log under %s", skipped, root)
    if not rows:
        frame = pd.DataFrame(columns=[*META_COLUMNS, PREDICTION_COLUMN])
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    else:
        frame = pd.DataFrame.from_records(rows)
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
        frame = frame.sort_values("timestamp", kind="stable").reset_index(drop=True)
    frame.attrs["skipped_lines"] = skipped
    log.info("Read %d inference record(s) from %d file(s) under %s", len(frame), files, root)
    return frame
