"""Data arrival: an event trigger for an ``AssetWatcher`` on a landing directory.

One event per batch of new or changed files. Files are deduplicated by
(name, size, mtime) against a persisted watermark, so a triggerer restart neither
replays old files nor loops. A file only counts once it is *settled* (unchanged for
``settle_seconds``), so half-copied files are never processed. Pending files are
coalesced: the event fires once ``batch_files`` are pending or the oldest pending file
has waited ``batch_seconds``.

The event payload (``asset_event.extra["payload"]``) is::

    {"path": <landing dir>, "files": [absolute paths, sorted], "count": n, "fingerprints": {...}}
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

_IGNORED_PREFIXES = (".", "_")
_IGNORED_SUFFIXES = (".tmp", ".part", ".crdownload", "_COPYING_")


def _fingerprint(st: os.stat_result) -> str:
    return f"{st.st_size}:{st.st_mtime_ns}"


def scan(path: str, pattern: str) -> dict[str, str]:
    """Fingerprints of the candidate files directly under ``path`` (missing dir -> empty)."""
    out: dict[str, str] = {}
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return out
    for entry in entries:
        name = entry.name
        if name.startswith(_IGNORED_PREFIXES) or name.endswith(_IGNORED_SUFFIXES):
            continue
        if not fnmatch.fnmatch(name, pattern):
            continue
        try:
            if entry.is_file():
                out[str(Path(path, name))] = _fingerprint(entry.stat())
        except FileNotFoundError:  # removed between scandir and stat
            continue
    return out


class Watermark:
    """The set of (file, fingerprint) already emitted, persisted atomically as JSON."""

    def __init__(self, state_path: str) -> None:
        self.state_path = Path(state_path)
        self.seen: dict[str, str] = {}
        if self.state_path.exists():
            try:
                self.seen = json.loads(self.state_path.read_text())["seen"]
            except (ValueError, KeyError, OSError):
                self.seen = {}

    def new_or_changed(self, current: dict[str, str]) -> dict[str, str]:
        return {f: fp for f, fp in current.items() if self.seen.get(f) != fp}

    def commit(self, files: dict[str, str]) -> None:
        self.seen.update(files)
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"seen": self.seen}, sort_keys=True))
        os.replace(tmp, self.state_path)


class DataArrivalTrigger(BaseEventTrigger):
    """Fire when new or changed files land in a directory (use it in an ``AssetWatcher``)."""

    def __init__(
        self,
        *,
        path: str,
        pattern: str = "*",
        state_path: str | None = None,
        poll_interval: float = 5.0,
        settle_seconds: float = 2.0,
        batch_files: int = 1,
        batch_seconds: float = 10.0,
    ) -> None:
        super().__init__()
        self.path = str(path)
        self.pattern = pattern
        self.state_path = state_path or str(Path(self.path, ".mlops_arrival_watermark.json"))
        self.poll_interval = float(poll_interval)
        self.settle_seconds = float(settle_seconds)
        self.batch_files = int(batch_files)
        self.batch_seconds = float(batch_seconds)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "path": self.path,
                "pattern": self.pattern,
                "state_path": self.state_path,
                "poll_interval": self.poll_interval,
                "settle_seconds": self.settle_seconds,
                "batch_files": self.batch_files,
                "batch_seconds": self.batch_seconds,
            },
        )

    def poll_once(
        self, watermark: Watermark, pending: dict[str, tuple[str, float]], now: float
    ) -> dict[str, str] | None:
        """One scan. Updates ``pending`` {file: (fingerprint, first_seen)}; returns a batch to emit."""
        current = scan(self.path, self.pattern)
        fresh = watermark.new_or_changed(current)
        for f in list(pending):
            if f not in fresh:  # deleted, or already emitted
                del pending[f]
        for f, fp in fresh.items():
            if f not in pending or pending[f][0] != fp:  # new, or still being written: restart its clock
                pending[f] = (fp, now)
        settled = {f: fp for f, (fp, seen_at) in pending.items() if now - seen_at >= self.settle_seconds}
        if not settled:
            return None
        oldest = min(pending[f][1] for f in settled)
        if len(settled) >= self.batch_files or now - oldest >= self.batch_seconds:
            return settled
        return None

    async def run(self) -> AsyncIterator[TriggerEvent]:
        watermark = Watermark(self.state_path)
        pending: dict[str, tuple[str, float]] = {}
        self.log.info("Watching %s for %s (watermark: %s)", self.path, self.pattern, self.state_path)
        while True:
            batch = await asyncio.to_thread(self.poll_once, watermark, pending, time.monotonic())
            if batch:
                files = sorted(batch)
                self.log.info("%d new file(s) landed in %s: %s", len(files), self.path, files)
                yield TriggerEvent(
                    {"path": self.path, "files": files, "count": len(files), "fingerprints": batch}
                )
                # Committed after the event was handed over: at-least-once, never lost.
                await asyncio.to_thread(watermark.commit, batch)
                for f in batch:
                    pending.pop(f, None)
            await asyncio.sleep(self.poll_interval)
