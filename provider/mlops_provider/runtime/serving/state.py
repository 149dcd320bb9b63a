"""The local target's deployment state file (runtime module).

``<state_dir>/deployment.json`` = ``{"bento_tag", "pid", "proc_start", "host", "port", "url", "log_file",
"started_at", "previous_bento_tag"}``: what :func:`~mlops_provider.runtime.serving.targets.local.deploy_local`
serves now. The stable front (:mod:`mlops_provider.runtime.serving.front`) forwards to its ``url`` and
re-reads it when it changes; the file is replaced atomically, so a reader never sees a torn one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from mlops_provider.runtime.io.atomic import atomic_write_json

log = logging.getLogger(__name__)

STATE_FILE = "deployment.json"


def state_path(state_dir: str | os.PathLike[str]) -> Path:
    return Path(state_dir) / STATE_FILE


def read_state(state_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The recorded deployment, or None (no file, unreadable file)."""
    p = state_path(state_dir)
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except ValueError:
        log.warning("Ignoring unreadable deployment state %s", p)
        return None
    return data if isinstance(data, dict) else None


def write_state(state_dir: str | os.PathLike[str], state: Mapping[str, Any] | None) -> None:
    """Record ``state`` atomically (None removes the file)."""
    p = state_path(state_dir)
    p.parent.mkdir(parents=True, exist_ok=True)
    if state is None:
        p.unlink(missing_ok=True)
        return
    atomic_write_json(p, dict(state))


LOCK_FILE = "deploy.lock"


@contextlib.contextmanager
def deploy_lock(state_dir: str | os.PathLike[str], *, blocking: bool = True) -> Iterator[bool]:
    """Hold ``<state_dir>/deploy.lock`` (an ``flock``): a deploy / stop of the local target holds it for its
    whole run, the supervisor only for a restart and never waits for it. Yields whether it is held (always
    True when ``blocking``); released when the holder exits, even on ``kill -9``."""
    p = Path(state_dir) / LOCK_FILE
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
