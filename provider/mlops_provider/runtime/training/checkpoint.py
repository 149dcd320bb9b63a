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
directory sits on a shared volume, e.g. ``$MLOPS_HOME`` on a PVC). With a ``mirror`` (an ``s3://`` prefix:
``<storage.root>/checkpoints/<model>/<key>``) every durable write is also uploaded, by the same background
thread, and a worker without the local file downloads the mirror's before it resumes: a retry on another
machine resumes too. Without either it starts over in the same MLflow run.
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


def checkpoint_dir(model: str, key: str, home: str | os.PathLike[str] | None = None, *,
                   root: str | None = None) -> Path:
    """``<root>/<model>/<key>/`` for a local ``root`` (a directory the workers share), else
    ``<home>/checkpoints/<model>/<key>/`` (home = ``$MLOPS_HOME`` by default; an ``s3://`` root is mirrored
    from there: :func:`checkpoint_mirror`)."""
    if root and not root.startswith("s3://"):
        return Path(root) / model / key
    return ModelPaths.for_model(model, home).home / "checkpoints" / model / key


def checkpoint_mirror(root: str | None, model: str, key: str) -> str | None:
    """``<root>/<model>/<key>`` when ``root`` is an ``s3://`` prefix (the checkpoints under the storage root),
    else None: a local root is a directory the workers share, no mirror needed."""
    return "/".join([root.rstrip("/"), model, key]) if root and root.startswith("s3://") else None


class CheckpointStore:
    """Save / load / clear the single latest checkpoint of one training key (in ``directory``, mirrored to the
    ``s3://`` prefix ``mirror`` through ``objects``, an ObjectStore, when given)."""

    def __init__(self, directory: str | os.PathLike[str], *, mirror: str | None = None, objects: Any = None) -> None:
        self.directory = Path(directory)
        self.mirror = mirror.rstrip("/") if mirror else None
        self._objects = objects
        self._pool: ThreadPoolExecutor | None = None
        self._pending: Future[Path] | None = None

    @property
    def objects(self) -> Any:
        if self._objects is None:
            from mlops_provider.runtime.io.objstore import DEFAULT_STORE

            self._objects = DEFAULT_STORE
        return self._objects

    @property
    def remote(self) -> str | None:
        return f"{self.mirror}/{CHECKPOINT_FILE}" if self.mirror else None

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
        if self.remote:  # one object PUT: a reader sees the previous or the new checkpoint, never half of one
            self.objects.upload(self.path, self.remote)
        return self.path

    def load(self) -> dict[str, Any] | None:
        """The checkpoint (the mirror's when there is one, else the local file), or None when there is none or it
        is unreadable (then training starts over)."""
        if self.remote:  # the mirror is never older than a local copy: each save uploads before it returns
            try:
                if self.objects.head(self.remote) is not None:
                    self.objects.download(self.remote, self.path)
                    log.info("fetched checkpoint %s into %s", self.remote, self.path)
            except Exception as e:  # noqa: BLE001 - an unreachable mirror must not block training
                log.warning("cannot fetch checkpoint %s (%s); using a local copy if there is one", self.remote, e)
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
        if self.remote:
            try:
                self.objects.delete(self.remote)
            except Exception as e:  # noqa: BLE001 - a leftover object is only storage; the run key is what matters
                log.warning("could not delete checkpoint %s: %s", self.remote, e)


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
