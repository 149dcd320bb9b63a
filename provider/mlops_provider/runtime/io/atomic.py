"""Atomic local writes: the one place the temporary-file-and-rename pattern lives.

A reader sees either the old file or the new one, never a torn one: the data goes to a temporary
sibling (same directory, so the rename cannot cross file systems) which then replaces the target
with ``os.replace``. ``fsync=True`` also flushes the file and its directory, so the new content
survives a power cut or a ``kill -9`` of the machine's writer (checkpoints use it).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a directory be opened
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed.

    For writers that want a file name (``DataFrame.to_parquet``, ``torch.save``, a subprocess).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        if fsync and tmp.is_file():
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
        if fsync:
            _fsync_dir(target.parent)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike[str], data: bytes | str, *, fsync: bool = False) -> Path:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically; returns the path."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(payload)
    return Path(path)


def atomic_write_json(path: str | os.PathLike[str], obj: Any, *, fsync: bool = False, indent: int | None = 2,
                      sort_keys: bool = True) -> Path:
    """``obj`` as JSON (``default=str`` for datetimes and paths), written atomically."""
    return atomic_write(path, json.dumps(obj, indent=indent, sort_keys=sort_keys, default=str), fsync=fsync)


__all__ = ["atomic_path", "atomic_write", "atomic_write_json"]
