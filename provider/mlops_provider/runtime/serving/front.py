"""The stable front of the local target: one port that always reaches the live version (runtime module).

Blue/green moves the server between free loopback ports (:mod:`mlops_provider.runtime.serving.targets.local`).
On the stable port (``serving.port``) a small ASGI reverse proxy listens, in its own process, and forwards
every request to the URL in the deployment state file, re-read whenever the file changes. A request whose
upstream refuses or drops the connection (the old version just stopped) is retried on the freshly
read state, so a switch behind the front loses nothing.

``<state_dir>/front.json`` records the front's process (pid, start time, host, port, url, log file);
:func:`ensure_front` is idempotent, :func:`stop_front` stops it with the deployment.

**Supervision.** The front process also supervises the live server, independently of any Airflow worker:
every ``MLOPS_SUPERVISE_INTERVAL_S`` (2 s) :func:`supervise_once` checks that the ``bentoml serve``
arbiter named in the state runs; when it died (crash, OOM kill, ``kill -9``) it starts the same bento on a
free loopback port, waits for ``/readyz``, switches the state to it (the front follows) and stops what
is left of the dead one (orphaned workers). Restarts count in the state (``restarts``,
``last_restart_at``, ``last_exit``), in ``GET /__front__`` and in the front's log; failed restarts back off
exponentially (2 s doubling to 5 min). It never fights a deploy: a deploy or stop holds
``<state_dir>/deploy.lock`` for its whole run and the supervisor skips while it is held; a deploy writes
the new state before it stops the old server, and the supervisor restarts only the server the state
still names after taking the lock. The state's ``supervise: false`` turns it off.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlops_provider.exceptions import DeploymentError
from mlops_provider.runtime.io.atomic import atomic_write_json
from mlops_provider.runtime.serving.process import log_tail, matches, port_free, proc_start, stop_process
from mlops_provider.runtime.serving.state import deploy_lock, read_state, state_path, write_state

log = logging.getLogger(__name__)

FRONT_FILE = "front.json"
FRONT_INFO_PATH = "/__front__"


class Supervisor:
    """Restart the state's ``bentoml serve`` when it died (module docstring); one per front process."""

    def __init__(self, state_dir: str | os.PathLike[str], *, max_backoff_s: float = 300.0) -> None:
        self.state_dir = Path(state_dir)
        self.max_backoff_s = max_backoff_s
        self.restarts = 0
        self.failures = 0
        self.not_before = 0.0
        self.last_error: str | None = None
        self.last_restart_at: str | None = None
        #: the live server's workers as last seen (pid -> [pid, start]): the orphans if its arbiter dies
        self.workers: dict[int, list[float]] = {}

    def info(self) -> dict[str, Any]:
        return {"restarts": self.restarts, "failed_attempts": self.failures, "last_error": self.last_error,
                "last_restart_at": self.last_restart_at}

    def once(self) -> str:
        """One check; returns what it did: ``idle`` | ``alive`` | ``busy`` | ``backoff`` | ``restarted`` | ``failed``."""
        from mlops_provider.runtime.serving.process import is_our_server

        st = read_state(self.state_dir)
        if not st or not st.get("pid") or not st.get("bento_tag") or st.get("supervise") is False:
            return "idle"
        if is_our_server(st.get("pid"), st.get("proc_start")):
            self._remember_workers(int(st["pid"]))
            return "alive"
        if time.monotonic() < self.not_before:
            return "backoff"
        with deploy_lock(self.state_dir, blocking=False) as held:
            if not held:
                return "busy"  # a deploy / stop owns the state now
            st = read_state(self.state_dir)  # what the state names now, under the lock
            if not st or not st.get("pid") or is_our_server(st.get("pid"), st.get("proc_start")):
                return "alive"
            try:
                self._restart(st)
            except Exception as e:  # noqa: BLE001 - logged, retried with backoff
                self.failures += 1
                self.last_error = f"{type(e).__name__}: {e}"[:2000]
                delay = min(self.max_backoff_s, 2.0 ** self.failures)
                self.not_before = time.monotonic() + delay
                log.error("Supervisor: restarting %s failed (attempt %d, next in %.0f s): %s",
                          st.get("bento_tag"), self.failures, delay, self.last_error)
                return "failed"
        self.failures, self.not_before = 0, 0.0
        return "restarted"

    def _remember_workers(self, arbiter: int) -> None:
        from mlops_provider.runtime.serving.process import worker_identities

        for pid, started in worker_identities(arbiter):
            self.workers[int(pid)] = [pid, started]
        if len(self.workers) > 256:  # respawned workers accumulate: keep the newest
            self.workers = dict(sorted(self.workers.items(), key=lambda kv: kv[1][1])[-64:])

    def _restart(self, st: dict[str, Any]) -> None:
        from datetime import UTC, datetime

        from mlops_provider.runtime.serving.package import safe_name
        from mlops_provider.runtime.serving.process import (
            free_port,
            start_server,
            stop_orphans,
            wait_ready,
            worker_identities,
        )

        tag, host = str(st["bento_tag"]), str(st.get("host") or "127.0.0.1")
        dead = f"pid {st.get('pid')} (started {st.get('started_at')}) is not running"
        log.warning("Supervisor: the server of %s, %s; restarting it", tag, dead)
        port = free_port(host)
        log_file = self.state_dir / "logs" / f"{safe_name(tag.split(':', 1)[-1])}-{port}.log"
        proc, offset = start_server(tag, host, port, log_file, bentoml_home_dir=st.get("bentoml_home"),
                                    cwd=self.state_dir)
        url = f"http://{host}:{port}"
        wait_ready(proc, url, log_file, offset, float(st.get("ready_timeout") or 120.0), tag,
                   consequence="the supervisor retries with backoff")
        now = datetime.now(UTC).isoformat()
        orphans = [*(st.get("workers") or []), *self.workers.values()]
        self.workers = {}
        new = {**st, "pid": proc.pid, "proc_start": proc_start(proc.pid), "port": port, "url": url,
               "log_file": str(log_file), "workers": worker_identities(proc.pid), "started_at": now,
               "restarts": int(st.get("restarts") or 0) + 1, "last_restart_at": now, "last_exit": dead}
        write_state(self.state_dir, new)
        self.restarts += 1
        self.last_restart_at, self.last_error = now, None
        log.warning("Supervisor: %s serving again at %s (pid %s, restart %d)", tag, url, proc.pid, new["restarts"])
        stop_orphans(orphans)  # workers the dead arbiter left behind (they still answer, unsupervised)

    def run_forever(self, interval: float) -> None:
        while True:
            try:
                self.once()
            except Exception:  # noqa: BLE001 - the supervisor must outlive any one check
                log.exception("Supervisor check failed")
            time.sleep(interval)


def _front_app(state_dir: str | os.PathLike[str], supervisor: Supervisor | None = None) -> Any:
    """ASGI reverse proxy to the URL in the deployment state (re-read when the file changes)."""
    import asyncio

    import httpx
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    state_file = state_path(state_dir)
    cache: dict[str, Any] = {"mtime": None, "url": None}

    def upstream() -> str | None:
        try:
            mtime = state_file.stat().st_mtime_ns
        except OSError:
            return None
        if mtime != cache["mtime"]:
            st = read_state(state_dir)
            cache.update(mtime=mtime, url=(st or {}).get("url"))
        return cache["url"]

    client = httpx.AsyncClient(
        timeout=httpx.Timeout(120.0, connect=5.0),
        limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
    )
    hop = {b"host", b"content-length", b"connection", b"keep-alive", b"transfer-encoding"}
    drop = {"content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding"}

    async def info(request: Request) -> Response:
        return JSONResponse({"upstream": upstream(), "state": str(state_file),
                             "supervisor": supervisor.info() if supervisor else None})

    async def proxy(request: Request) -> Response:
        body = await request.body()
        headers = [(k, v) for k, v in request.headers.raw if k.lower() not in hop]
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        error: Exception | None = None
        for _ in range(5):
            base = upstream()
            if not base:
                return Response("no deployment is serving", status_code=503)
            try:
                r = await client.request(request.method, base + path, content=body, headers=headers)
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as e:
                error = e
                await asyncio.sleep(0.2)
                cache["mtime"] = None  # re-read the state: a switch is under way
                continue
            out = {k: v for k, v in r.headers.items() if k.lower() not in drop}
            return Response(r.content, status_code=r.status_code, headers=out)
        return Response(f"upstream unavailable: {error}", status_code=502)

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    return Starlette(routes=[Route(FRONT_INFO_PATH, info), Route("/{path:path}", proxy, methods=methods)])


def run_front(host: str, port: int, state_dir: str) -> None:
    """Serve the stable front and supervise the live server (blocking; :func:`ensure_front` starts it in its
    own process)."""
    import threading

    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    supervisor = Supervisor(state_dir)
    interval = float(os.environ.get("MLOPS_SUPERVISE_INTERVAL_S", "2"))
    threading.Thread(target=supervisor.run_forever, args=(interval,), name="supervisor", daemon=True).start()
    uvicorn.run(_front_app(state_dir, supervisor), host=host, port=int(port), log_level="warning",
                timeout_graceful_shutdown=10)


def is_front(pid: int | None, proc_start_time: float | int | None = None) -> bool:
    """True if ``pid`` is a live stable front (started at ``proc_start_time`` when given)."""
    return matches(pid, proc_start_time, lambda cmd: "run_front" in cmd, unreadable=True)


def front_running(state_dir: str | os.PathLike[str], host: str, port: int) -> bool:
    """Whether this deployment's own front already listens on ``host:port``."""
    try:
        front = json.loads((Path(state_dir) / FRONT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(
        is_front(front.get("pid"), front.get("proc_start"))
        and (front.get("host"), int(front.get("port", -1))) == (host, int(port))
    )


def ensure_front(host: str, port: int, state_dir: str | os.PathLike[str], timeout: float = 60.0) -> dict[str, Any]:
    """Start the stable front on ``host:port`` for ``state_dir`` unless it already runs; returns its state."""
    import httpx

    state_dir = Path(state_dir).expanduser().resolve()
    front_file = state_dir / FRONT_FILE
    try:
        front = json.loads(front_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        front = None
    if front and is_front(front.get("pid"), front.get("proc_start")):
        if (front.get("host"), int(front.get("port", -1))) == (host, int(port)):
            return dict(front)
        _stop_front(front)
    if not port_free(host, port):
        raise DeploymentError(
            f"Cannot start the stable front on {host}:{port}: the port is in use by a process this deployment "
            "does not own. Free it or change serving.port."
        )
    log_file = state_dir / "logs" / f"front-{port}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    code = f"from {__name__} import run_front; run_front({host!r}, {int(port)}, {str(state_dir)!r})"
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", code], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=str(state_dir), start_new_session=True,
        )
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise DeploymentError(f"The stable front exited with code {proc.returncode}. Log {log_file}:\n{log_tail(log_file)}")
        try:
            if httpx.get(f"{url}{FRONT_INFO_PATH}", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            _stop_front({"pid": proc.pid})
            raise DeploymentError(f"The stable front did not answer on {url} within {timeout:.0f}s. Log {log_file}")
        time.sleep(0.3)
    front = {"pid": proc.pid, "proc_start": proc_start(proc.pid), "host": host, "port": int(port), "url": url,
             "log_file": str(log_file)}
    atomic_write_json(front_file, front, sort_keys=False)
    log.info("Stable front %s -> deployment state %s (pid %s)", url, state_path(state_dir), proc.pid)
    return front


def _stop_front(front: Mapping[str, Any], timeout: float = 15.0) -> None:
    pid = front.get("pid")
    if not is_front(pid, front.get("proc_start")):
        return
    assert pid is not None
    stop_process(int(pid), timeout=timeout)


def stop_front(state_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Stop the stable front of ``state_dir`` (if any); returns its state."""
    front_file = Path(state_dir) / FRONT_FILE
    try:
        front = json.loads(front_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    _stop_front(front)
    front_file.unlink(missing_ok=True)
    return dict(front)
