"""Data arrival: an event trigger for an ``AssetWatcher`` on a landing directory or S3 prefix.

One event per batch of new or changed files. Files are deduplicated by
(name, size, mtime) -- for ``s3://bucket/prefix/`` by (key, size, etag) -- against a persisted
watermark, so a triggerer restart neither replays old files nor loops. A file only counts once it
is *settled* (unchanged for ``settle_seconds``), so half-copied files are never processed. Pending
files are coalesced: the event fires once ``batch_files`` are pending or the oldest pending file
has waited ``batch_seconds``. Only the files directly under the directory / prefix count.

0-byte files / objects are never processed: they are logged as a warning, listed under ``skipped``
in the event of their batch (an event is not fired for a batch of 0-byte files only) and committed
to the watermark, so they are not reported again -- until they are rewritten with content.

The event payload (``asset_event.extra["payload"]``) is::

    {"path": <landing dir or s3 prefix>, "files": [absolute paths or s3:// URLs, sorted], "count": n,
     "fingerprints": {file: "size:mtime_ns" | "size:etag"}, "skipped": [0-byte files, sorted]}

The watermark is a JSON file (``state_path``), local or an ``s3://`` object (the factory puts it under
``storage.root`` when the YAML sets one, so a triggerer that restarts on another host keeps it); for a
directory it defaults to
``<dir>/.mlops_arrival_watermark.json``; for an S3 prefix to
``$MLOPS_HOME/state/arrival/s3-<sha1 of the prefix URL>.json`` (resolved when the trigger is built,
i.e. at DAG parse time, and serialized, so the triggerer uses the same file). The triggerer must be
able to write it and keep it across restarts. S3 is listed through the runtime's ``ObjectStore``, built
inside the trigger's run (``ObjectStore(ObjectStoreHook(aws_conn_id).settings)``: the connection, with
``endpoint_url`` / ``region_name`` in its extras, is resolved at the first listing), in a thread.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
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


def scan_s3(path: str, pattern: str, store: Any) -> dict[str, str]:
    """Fingerprints ``size:etag`` of the objects directly under ``s3://bucket/prefix/`` (none -> empty).

    ``store`` is a :class:`mlops_provider.runtime.io.objstore.ObjectStore`.
    """
    infos = store.list(path, pattern)
    return {url: info.fingerprint for url, info in infos.items() if not basename_ignored(url.rsplit("/", 1)[-1])}


def basename_ignored(name: str) -> bool:
    return name.startswith(_IGNORED_PREFIXES) or name.endswith(_IGNORED_SUFFIXES)


def is_empty_fingerprint(fingerprint: str) -> bool:
    """Both fingerprint kinds start with the size: ``0:...`` is a 0-byte file / object."""
    return fingerprint.split(":", 1)[0] == "0"


def default_s3_state_path(path: str) -> str:
    from mlops_provider.paths import mlops_home

    digest = hashlib.sha1(path.encode()).hexdigest()[:16]
    return str(mlops_home() / "state" / "arrival" / f"s3-{digest}.json")


class Watermark:
    """The set of (file, fingerprint) already emitted, persisted as JSON: a local file written atomically, or
    an ``s3://`` object (one PUT) through ``store``. A missing or corrupt watermark starts empty; an S3 error
    other than "absent" is raised (the trigger fails and is restarted), never read as "nothing seen"."""

    def __init__(self, state_path: str, store: Any = None) -> None:
        self.state_path = str(state_path)
        self.store = store
        self.seen: dict[str, str] = {}
        remote = self.state_path.startswith("s3://")
        if remote and store is None:
            raise ValueError(f"watermark {self.state_path} is on S3: pass the trigger's object store")
        try:
            if remote:
                self.seen = store.read_json(self.state_path)["seen"] if store.head(self.state_path) else {}
            elif Path(self.state_path).exists():
                self.seen = json.loads(Path(self.state_path).read_text())["seen"]
        except (ValueError, KeyError, TypeError, OSError):
            self.seen = {}

    def new_or_changed(self, current: dict[str, str]) -> dict[str, str]:
        return {f: fp for f, fp in current.items() if self.seen.get(f) != fp}

    def commit(self, files: dict[str, str]) -> None:
        from mlops_provider.runtime.io.atomic import atomic_write

        self.seen.update(files)
        body = json.dumps({"seen": self.seen}, sort_keys=True)
        if self.state_path.startswith("s3://"):
            self.store.write_bytes(self.state_path, body)
        else:
            atomic_write(self.state_path, body)


class DataArrivalTrigger(BaseEventTrigger):
    """Fire when new or changed files land in a directory or S3 prefix (use it in an ``AssetWatcher``).

    :param path: a local directory or ``s3://bucket/prefix/``.
    :param aws_conn_id: Airflow connection of the S3 prefix (ignored, and not serialized, for a
        local directory).
    """

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
        aws_conn_id: str | None = "aws_default",
    ) -> None:
        super().__init__()
        self.path = str(path)
        self.pattern = pattern
        self.aws_conn_id = aws_conn_id
        if state_path:
            self.state_path = state_path
        elif self.is_s3:
            self.state_path = default_s3_state_path(self.path)
        else:
            self.state_path = str(Path(self.path, ".mlops_arrival_watermark.json"))
        self.poll_interval = float(poll_interval)
        self.settle_seconds = float(settle_seconds)
        self.batch_files = int(batch_files)
        self.batch_seconds = float(batch_seconds)
        self._store: Any = None

    @property
    def is_s3(self) -> bool:
        return self.path.startswith("s3://")

    @property
    def remote_state(self) -> bool:
        return str(self.state_path).startswith("s3://")

    def serialize(self) -> tuple[str, dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "path": self.path,
            "pattern": self.pattern,
            "state_path": self.state_path,
            "poll_interval": self.poll_interval,
            "settle_seconds": self.settle_seconds,
            "batch_files": self.batch_files,
            "batch_seconds": self.batch_seconds,
        }
        if self.is_s3 or self.remote_state:  # a directory trigger with a local watermark serializes as before
            kwargs["aws_conn_id"] = self.aws_conn_id
        return f"{type(self).__module__}.{type(self).__qualname__}", kwargs

    def _objects(self) -> Any:
        """The trigger's object store, built once (lazily, in the worker thread; the connection is
        resolved at the first S3 listing)."""
        if self._store is None:
            from mlops_provider.hooks.objstore import ObjectStoreHook
            from mlops_provider.runtime.io.objstore import ObjectStore

            self._store = ObjectStore(ObjectStoreHook(self.aws_conn_id).settings)
        return self._store

    def scan(self) -> dict[str, str]:
        if self.is_s3:
            return scan_s3(self.path, self.pattern, self._objects())
        return scan(self.path, self.pattern)

    def poll_once(
        self, watermark: Watermark, pending: dict[str, tuple[str, float]], now: float
    ) -> dict[str, str] | None:
        """One scan. Updates ``pending`` {file: (fingerprint, first_seen)}; returns a batch to emit."""
        current = self.scan()
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
        watermark = await asyncio.to_thread(Watermark, self.state_path,
                                            self._objects() if self.remote_state else None)
        pending: dict[str, tuple[str, float]] = {}
        self.log.info("Watching %s for %s (watermark: %s)", self.path, self.pattern, self.state_path)
        while True:
            batch = await asyncio.to_thread(self.poll_once, watermark, pending, time.monotonic())
            if batch:
                files = sorted(f for f, fp in batch.items() if not is_empty_fingerprint(fp))
                skipped = sorted(f for f, fp in batch.items() if is_empty_fingerprint(fp))
                if skipped:
                    self.log.warning(
                        "skipping %d 0-byte file(s) in %s (not processed; rewrite them with content to "
                        "land them): %s", len(skipped), self.path, skipped,
                    )
                if files:
                    self.log.info("%d new file(s) landed in %s: %s", len(files), self.path, files)
                    yield TriggerEvent(
                        {"path": self.path, "files": files, "count": len(files),
                         "fingerprints": {f: batch[f] for f in files}, "skipped": skipped}
                    )
                # Committed after the event was handed over: at-least-once, never lost.
                await asyncio.to_thread(watermark.commit, batch)
                for f in batch:
                    pending.pop(f, None)
            await asyncio.sleep(self.poll_interval)
