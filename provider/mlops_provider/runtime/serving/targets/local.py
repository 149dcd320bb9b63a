"""Local deployment target: ``bentoml serve`` on loopback, **blue/green on two ports** (runtime module).

:func:`deploy_local` starts the new bento on whichever of ``port`` / ``port + 1`` the current
deployment does not use; the state file (:mod:`mlops_provider.runtime.serving.state`) is switched only
once the new server answers ``/readyz`` (and, when asked, the smoke request and the live-version
check), and only then is the old server drained and stopped. If the new one fails it is killed and
the old one keeps serving untouched (:class:`~mlops_provider.exceptions.DeploymentError`).
Re-deploying the tag that is already serving and ready is a no-op. The URL therefore alternates
between the two ports; it is returned (and pushed to XCom / the asset event) on every deploy. With
``front_port`` a stable front (:mod:`mlops_provider.runtime.serving.front`) keeps one URL across
switches.

Server logs: ``<state_dir>/logs/<bento-version>-<port>.log``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops_provider.exceptions import DeploymentError
from mlops_provider.runtime.serving.checks import smoke_test, verify_live_version
from mlops_provider.runtime.serving.front import ensure_front, stop_front
from mlops_provider.runtime.serving.package import safe_name
from mlops_provider.runtime.serving.process import (
    is_our_server,
    port_free,
    proc_start,
    ready,
    start_server,
    stop_server,
    wait_ready,
)
from mlops_provider.runtime.serving.state import read_state, state_path, write_state

log = logging.getLogger(__name__)

__all__ = ["deploy_local", "read_state", "stop_local", "write_state"]


def deploy_local(
    bento_tag: str,
    host: str = "127.0.0.1",
    port: int = 3000,
    state_dir: str | os.PathLike[str] = ".",
    timeout: float = 120.0,
    *,
    bentoml_home_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    smoke_request: Mapping[str, Any] | None = None,
    drain_seconds: float = 2.0,
    verify_version: bool = True,
    front_port: int | None = None,
) -> dict[str, Any]:
    """Serve ``bento_tag`` with ``bentoml serve`` on loopback, blue/green (see module docstring).

    With ``front_port`` a stable front (a small reverse proxy, :func:`ensure_front`) listens there and
    forwards to whatever the state file names, so callers keep one URL (``front_url``) across switches.

    With ``smoke_request`` the new server must also answer it correctly (:func:`smoke_test`) before
    it takes over; with ``verify_version`` its ``/health`` must report ``bento_tag``. Otherwise it is
    stopped and the previous deployment keeps serving. After the switch the previous server keeps
    answering for ``drain_seconds`` (clients that resolved the old URL finish), then stops gracefully.

    Returns ``{"url", "pid", "bento_tag", "host", "port", "log_file", "changed", "previous"}``
    where ``previous`` is the replaced deployment's state (or None).
    """
    state_dir = Path(state_dir).expanduser().resolve()
    current = read_state(state_dir)
    if current and not is_our_server(current.get("pid"), current.get("proc_start")):
        log.info("Previous deployment %s (pid %s) is not running any more", current.get("bento_tag"), current.get("pid"))
        current = None
    if current and current.get("bento_tag") == bento_tag and ready(current["url"]):
        log.info("%s already serving at %s (pid %s); nothing to do", bento_tag, current["url"], current["pid"])
        front = ensure_front(host, front_port, state_dir) if front_port else None
        return {**current, "changed": False, "previous": None, "front_url": front["url"] if front else None}

    slots = [port, port + 1]
    target = slots[1] if current and int(current.get("port", -1)) == slots[0] else slots[0]
    if not port_free(host, target):
        raise DeploymentError(
            f"Cannot deploy {bento_tag}: {host}:{target} is in use by a process this deployment does not "
            f"own (state {state_path(state_dir)}). Free the port or choose another base port."
        )
    version = bento_tag.split(":", 1)[-1]
    log_file = state_dir / "logs" / f"{safe_name(version)}-{target}.log"
    proc, log_offset = start_server(
        bento_tag, host, target, log_file, bentoml_home_dir=bentoml_home_dir, env=env, cwd=state_dir
    )
    url = f"http://{host}:{target}"
    wait_ready(proc, url, log_file, log_offset, timeout, bento_tag)
    try:
        if smoke_request is not None:
            smoke_test(url, smoke_request)
        if verify_version:
            verify_live_version(url, bento_tag=bento_tag)
    except DeploymentError as e:
        from mlops_provider.exceptions import LiveVersionMismatch

        stop_server(proc.pid)
        msg = f"{bento_tag} failed its pre-switch check at {url}; stopped it, the previous deployment keeps serving. {e}"
        if isinstance(e, LiveVersionMismatch):
            raise LiveVersionMismatch(msg, live=e.live) from e
        raise DeploymentError(msg) from e

    state = {
        "bento_tag": bento_tag,
        "pid": proc.pid,
        "proc_start": proc_start(proc.pid),
        "host": host,
        "port": target,
        "url": url,
        "log_file": str(log_file),
        "started_at": datetime.now(UTC).isoformat(),
        "previous_bento_tag": current.get("bento_tag") if current else None,
    }
    write_state(state_dir, state)
    log.info("%s ready at %s (pid %s)", bento_tag, url, proc.pid)
    if current:
        if drain_seconds > 0:
            log.info("Draining %s at %s for %.1fs", current.get("bento_tag"), current.get("url"), drain_seconds)
            time.sleep(drain_seconds)
        log.info("Stopping previous deployment %s (pid %s)", current.get("bento_tag"), current.get("pid"))
        stop_server(int(current["pid"]), proc_start_time=current.get("proc_start"))
    front = ensure_front(host, front_port, state_dir) if front_port else None
    return {**state, "changed": True, "previous": current, "front_url": front["url"] if front else None}


def stop_local(state_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Stop the deployment recorded in ``state_dir`` (if any) and clear the state; returns it."""
    stop_front(state_dir)
    current = read_state(state_dir)
    if current is None:
        return None
    if current.get("pid"):
        stop_server(int(current["pid"]), proc_start_time=current.get("proc_start"))
    write_state(state_dir, None)
    return current
