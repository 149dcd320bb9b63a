"""Durable training checkpoints keyed by the training idempotency key (runtime module).

``<home>/checkpoints/<model>/<key>/checkpoint.pt`` holds everything needed to continue a run
exactly where it stopped: model and optimizer state, the last finished epoch, the RNG states
(torch CPU, CUDA, numpy, the batch-permutation generator), the early-stopping state (best loss,
best epoch, epochs without improvement, best weights), the per-epoch history and the MLflow
run id. Writes are atomic (temporary file + ``os.replace`` + fsync), so a ``kill -9`` at any
moment leaves either the previous or the new checkpoint, never a torn one.

The directory is local to the worker: a retry resumes when it lands on the same machine (or the
directory sits on a shared volume, e.g. ``$MLOPS_HOME`` on a PVC); otherwise it starts over in
the same MLflow run.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch

from mlops_provider.paths import ModelPaths

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

    @property
    def path(self) -> Path:
        return self.directory / CHECKPOINT_FILE

    def save(self, state: dict[str, Any]) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f".{CHECKPOINT_FILE}.{uuid.uuid4().hex}.tmp"
        try:
            with open(tmp, "wb") as f:
                torch.save({"format": CHECKPOINT_FORMAT, **state}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        finally:
            if tmp.exists():
                tmp.unlink()
        try:  # make the rename itself durable
            fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            pass
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
        shutil.rmtree(self.directory, ignore_errors=True)
