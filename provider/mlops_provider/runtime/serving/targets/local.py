"""Local deployment target: one stable URL, ``bentoml serve`` blue/green behind it (runtime module).

``port`` is the **stable endpoint**: a small reverse proxy (:mod:`mlops_provider.runtime.serving.front`)
listens there and forwards every request to the server named in the deployment state file
(:mod:`mlops_provider.runtime.serving.state`). :func:`deploy_local` starts the new bento on a **free
loopback port**; the state switches only once the new server answers ``/readyz`` (and, when asked, the
smoke request and the live-version check), and only then is the old server drained and stopped. If the new
one fails it is killed and the old one keeps serving untouched
(:class:`~mlops_provider.exceptions.DeploymentError`). Re-deploying the tag that is already serving and
ready is a no-op. After a switch the same ``http://host:port`` answers with the new champion.

``front_port`` is the deprecated name of the stable port (when given it wins over ``port``). A deployment
made by an older version (its server on ``port`` itself, no front) is moved behind the front on the next
deploy: the new server starts on a free port, the old one stops, the front takes the port.

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
from mlops_provider.runtime.serving.front import ensure_front, front_running, stop_front
from mlops_provider.runtime.serving.package import safe_name
from mlops_provider.runtime.serving.process import (
    free_port,
    is_our_server,
    port_free,
    proc_start,
    ready,
    start_server,
    stop_orphans,
    stop_server,
    wait_ready,
    worker_identities,
)
from mlops_provider.runtime.serving.state import deploy_lock, read_state, state_path, write_state

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
    """Serve ``bento_tag`` behind the stable front on ``host:port`` (see module docstring).

    With ``smoke_request`` the new server must also answer it correctly (:func:`smoke_test`) before
    it takes over; with ``verify_version`` its ``/health`` must report ``bento_tag``. Otherwise it is
    stopped and the previous deployment keeps serving. After the switch the previous server keeps
    answering for ``drain_seconds`` (requests the front already sent it finish), then stops gracefully.

    Returns ``{"url" (the stable front), "front_url" (the same), "backend_url", "pid", "bento_tag", "host",
    "port" (the backend's), "log_file", "changed", "previous"}`` where ``previous`` is the replaced
    deployment's state (or None).
    """
    if front_port:
        log.warning("serving.front_port is deprecated: serving.port is the stable front now (using %s)", front_port)
    state_dir = Path(state_dir).expanduser().resolve()
    with deploy_lock(state_dir):  # one deploy at a time; the front's supervisor keeps off meanwhile
        return _deploy_locked(
            bento_tag, host, int(front_port or port), state_dir, timeout, bentoml_home_dir=bentoml_home_dir,
            env=env, smoke_request=smoke_request, drain_seconds=drain_seconds, verify_version=verify_version,
        )


def _deploy_locked(
    bento_tag: str,
    host: str,
    stable: int,
    state_dir: Path,
    timeout: float,
    *,
    bentoml_home_dir: str | os.PathLike[str] | None,
    env: Mapping[str, str] | None,
    smoke_request: Mapping[str, Any] | None,
    drain_seconds: float,
    verify_version: bool,
) -> dict[str, Any]:
    current = read_state(state_dir)
    orphaned = None  # a dead arbiter's workers may still answer: stopped once the new server serves
    if current and not is_our_server(current.get("pid"), current.get("proc_start")):
        log.info("Previous deployment %s (pid %s) is not running any more", current.get("bento_tag"), current.get("pid"))
        orphaned, current = current.get("workers"), None
    legacy = bool(current) and int((current or {}).get("port", -1)) == stable  # an older version's layout
    if current and not legacy and current.get("bento_tag") == bento_tag and ready(current["url"]):
        log.info("%s already serving at %s (pid %s); nothing to do", bento_tag, current["url"], current["pid"])
        front = ensure_front(host, stable, state_dir)
        return {**current, "url": front["url"], "front_url": front["url"], "backend_url": current["url"],
                "changed": False, "previous": None}
    if not legacy and not port_free(host, stable) and not front_running(state_dir, host, stable):
        raise DeploymentError(
            f"Cannot deploy {bento_tag}: the stable port {host}:{stable} is in use by a process this deployment "
            f"does not own (state {state_path(state_dir)}). Free the port or choose another serving.port."
        )
    target = free_port(host)
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
        "front_url": f"http://{host}:{stable}",
        "log_file": str(log_file),
        "started_at": datetime.now(UTC).isoformat(),
        "previous_bento_tag": current.get("bento_tag") if current else None,
        # what the front's supervisor needs to restart this server if it dies (front.supervise)
        "workers": worker_identities(proc.pid),
        "bentoml_home": str(Path(bentoml_home_dir).expanduser().resolve()) if bentoml_home_dir else None,
        "ready_timeout": float(timeout),
        "restarts": 0,
    }
    write_state(state_dir, state)
    log.info("%s ready at %s (pid %s)", bento_tag, url, proc.pid)
    stop_orphans(orphaned)
    if current:
        if drain_seconds > 0 and not legacy:
            log.info("Draining %s at %s for %.1fs", current.get("bento_tag"), current.get("url"), drain_seconds)
            time.sleep(drain_seconds)
        log.info("Stopping previous deployment %s (pid %s)", current.get("bento_tag"), current.get("pid"))
        stop_server(int(current["pid"]), proc_start_time=current.get("proc_start"))
        stop_orphans(current.get("workers"))
    front = ensure_front(host, stable, state_dir)
    return {**state, "url": front["url"], "front_url": front["url"], "backend_url": url, "changed": True,
            "previous": current}


def stop_local(state_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Stop the deployment recorded in ``state_dir`` (if any) and clear the state; returns it.

    The front (and with it the supervisor) stops first, so nothing restarts the server being stopped.
    """
    stop_front(state_dir)
    with deploy_lock(state_dir):
        current = read_state(state_dir)
        if current is None:
            return None
        if current.get("pid"):
            stop_server(int(current["pid"]), proc_start_time=current.get("proc_start"))
        stop_orphans(current.get("workers"))
        write_state(state_dir, None)
    return current
