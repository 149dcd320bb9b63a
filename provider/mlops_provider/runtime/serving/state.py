"""The local target's deployment state file (runtime module).

``<state_dir>/deployment.json`` = ``{"bento_tag", "pid", "proc_start", "host", "port", "url", "log_file",
"started_at", "previous_bento_tag"}``: what :func:`~mlops_provider.runtime.serving.targets.local.deploy_local`
serves now. The stable front (:mod:`mlops_provider.runtime.serving.front`) forwards to its ``url`` and
re-reads it when it changes; the file is replaced atomically, so a reader never sees a torn one.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
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
