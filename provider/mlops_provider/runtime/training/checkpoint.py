"""Durable training checkpoints keyed by the training idempotency key (runtime module).

``<home>/checkpoints/<model>/<key>/checkpoint.pt`` holds everything needed to continue a run
exactly where it stopped: model and optimizer state, the last finished epoch, the RNG states
(torch CPU, CUDA, numpy, the batch-permutation generator), the early-stopping state (best loss,
best epoch, epochs without improvement, best weights), the per-epoch history and the MLflow
run id. Writes are atomic (``runtime/io/atomic.py``: temporary file + ``os.replace`` + fsync of the
file and the directory), so a ``kill -9`` at any moment leaves either the previous or the new
checkpoint, never a torn one.

``save_async`` takes the snapshot of the state on the caller's (training) thread and leaves the
serialization, write and fsync to one background thread, so the next epoch starts at once; at
most one write is in flight (the next save waits for it) and ``wait()`` — called before the
training result is used — re-raises a failed write.

The directory is local to the worker: a retry resumes when it lands on the same machine (or the
directory sits on a shared volume, e.g. ``$MLOPS_HOME`` on a PVC); otherwise it starts over in
the same MLflow run.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from mlops_provider.paths import ModelPaths
from mlops_provider.runtime.io.atomic import atomic_path

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_FORMAT = 1


def checkpoint_dir(model: str, key: str, home: str | os.PathLike[str] | None = None) -> Path:
    """``<home>/checkpoints/<model>/<key>/`` (home = ``$MLOPS_HOME`` by default)."""
    return ModelPaths.for_model(model, home).home / "checkpoints" / model / key


class CheckpointStore:
    """Save / load / clear the single latest checkpoint of one training key."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future[Path] | None = None

    def save_async(self, state: dict[str, Any]) -> None:
        """Snapshot ``state`` now (tensors cloned to CPU), write it in the background.

        Waits for the previous write first, so checkpoints land in order and at most one state
        copy is held. A write error surfaces on the next ``save_async`` or ``wait``.
        """
        frozen = _snapshot(state)
        self.wait()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._pending = self._pool.submit(self.save, frozen)

    def wait(self) -> Path | None:
        """Block until the background write (if any) is durable; re-raise its error."""
        pending, self._pending = self._pending, None
        return pending.result() if pending is not None else None

    def close(self) -> None:
        try:
            self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None

    @property
    def path(self) -> Path:
        return self.directory / CHECKPOINT_FILE

    def save(self, state: dict[str, Any]) -> Path:
        """Write ``state`` durably (atomic replace, file and directory fsynced: ``runtime/io/atomic.py``)."""
        with atomic_path(self.path, fsync=True) as tmp, open(tmp, "wb") as f:
            torch.save({"format": CHECKPOINT_FORMAT, **state}, f)
        return self.path

    def load(self) -> dict[str, Any] | None:
        """The checkpoint, or None when there is none or it is unreadable (then training starts over)."""
        if not self.path.is_file():
            return None
        try:
            # weights_only=False: RNG states and the history are plain Python / numpy objects we wrote ourselves
            state = torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - a corrupt checkpoint must not block training
            log.warning("checkpoint %s is unreadable (%s); starting over", self.path, e)
            return None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            log.warning("checkpoint %s has an unknown format; starting over", self.path)
            return None
        return state

    def clear(self) -> None:
        self.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def _snapshot(obj: Any) -> Any:
    """A copy of ``obj`` that later in-place updates (optimizer steps) cannot change: tensors are
    detached CPU clones; containers are rebuilt; everything else is deep-copied."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        return t.to("cpu", copy=True) if t.device.type != "cpu" else t.clone()
    if isinstance(obj, dict):
        return {k: _snapshot(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_snapshot(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_snapshot(v) for v in obj)
    return copy.deepcopy(obj)
