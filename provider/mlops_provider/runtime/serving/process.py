"""``bentoml serve`` processes on loopback: start, wait until ready, recognise, stop (runtime module).

Used by the local blue/green target (:mod:`mlops_provider.runtime.serving.targets.local`), infra
validation and the tests / benchmarks that serve a bento.

- :func:`start_server` runs ``bentoml serve <bento>`` in its own session (its own process group),
  appending to a log file; the bento's bundled config always wins over ``$MLOPS_BENTO_CONFIG``.
- :func:`wait_ready` polls ``/readyz`` and fails fast when the process exits or the service raised
  while initialising (BentoML logs :data:`STARTUP_FAILED_MARKER` and would respawn it forever).
- :func:`is_our_server` recognises a live ``bentoml serve`` arbiter (it renames itself ``circusd``);
  the recorded start time (``proc_start``) guards against a recycled pid.
- :func:`stop_server` stops the arbiter gracefully, then its workers (circus puts them in their own
  sessions, so they are found through the process tree), and kills whatever is left after a timeout.

Process inspection goes through ``psutil``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import psutil

from mlops_provider.exceptions import DeploymentError

log = logging.getLogger(__name__)

#: Line BentoML logs when a worker's service ``__init__`` raised (circus then respawns it forever).
STARTUP_FAILED_MARKER = b"Application startup failed"
#: Tolerance when comparing a recorded process start time with the live one (seconds).
_START_TOLERANCE_S = 0.05


# ---------------------------------------------------------------------------- process identity
def proc_start(pid: int) -> float | None:
    """Start time of ``pid`` (seconds since the epoch), or None when it is gone."""
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def _same_start(proc: psutil.Process, recorded: float | int) -> bool:
    """Whether ``proc`` started at ``recorded`` (a :func:`proc_start` value).

    State files written before ``psutil`` recorded Linux clock ticks since boot (an int); they are
    converted, so a deployment started by an older version is still recognised and stopped.
    """
    try:
        started = proc.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False
    if isinstance(recorded, int) and hasattr(os, "sysconf"):
        with contextlib.suppress(ValueError, OSError):
            recorded = psutil.boot_time() + recorded / os.sysconf("SC_CLK_TCK")
    return abs(started - float(recorded)) <= _START_TOLERANCE_S


def alive(pid: int) -> bool:
    """Running and not a zombie (reaps it when it is our own exited child)."""
    with contextlib.suppress(ChildProcessError, OSError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)  # a process this user cannot signal is not one of ours
    except (ProcessLookupError, PermissionError):
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return True


def descendants(pid: int) -> list[int]:
    """All live descendants of ``pid`` (circus puts bentoml workers in their own sessions)."""
    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return []


def worker_pids(arbiter: int) -> list[int]:
    """The live BentoML worker processes of a ``bentoml serve`` arbiter (one per ``serving.workers``)."""
    out = []
    try:
        children = psutil.Process(arbiter).children(recursive=True)
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return []
    for child in children:
        try:
            if "_bentoml_impl.worker" in " ".join(child.cmdline()) and child.status() != psutil.STATUS_ZOMBIE:
                out.append(child.pid)
        except psutil.Error:
            continue
    return sorted(out)


def matches(
    pid: int | None,
    proc_start_time: float | int | None,
    cmdline: Callable[[str], bool],
    *,
    unreadable: bool,
) -> bool:
    """A live ``pid`` started at ``proc_start_time`` (when given) whose command line satisfies ``cmdline``.

    ``unreadable`` is the answer when the command line cannot be read.
    """
    if not pid or not alive(int(pid)):
        return False
    try:
        proc = psutil.Process(int(pid))
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    if proc_start_time is not None and not _same_start(proc, proc_start_time):
        return False
    try:
        cmd = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return unreadable
    return cmdline(cmd)


def is_our_server(pid: int | None, proc_start_time: float | int | None = None) -> bool:
    """True if ``pid`` is a live ``bentoml serve`` arbiter (it renames itself ``circusd``).

    ``proc_start_time`` (recorded in the state file) guards against a recycled pid.
    """
    return matches(
        pid, proc_start_time, lambda cmd: "circusd" in cmd or ("bentoml" in cmd and "serve" in cmd), unreadable=False
    )


# ---------------------------------------------------------------------------- ports, readiness, logs
def ready(url: str, timeout: float = 2.0) -> bool:
    """Whether ``<url>/readyz`` answers 200."""
    import httpx

    try:
        return httpx.get(f"{url}/readyz", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def port_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS reports free on ``host`` right now (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def startup_failed(log_file: Path, offset: int) -> bool:
    """Whether the server log (from ``offset`` on) says the service raised while initialising."""
    try:
        with open(log_file, "rb") as fh:
            fh.seek(offset)
            return STARTUP_FAILED_MARKER in fh.read()
    except OSError:
        return False


def log_tail(path: Path, n: int = 40) -> str:
    """The last ``n`` lines of a log file (for error messages)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------------------- start / wait / stop
def start_server(
    bento_tag: str,
    host: str,
    port: int,
    log_file: Path,
    *,
    bentoml_home_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``bentoml serve <bento_tag>`` on ``host:port`` in its own session; (process, log offset)."""
    from mlops_provider.runtime.serving.schema import ENV_CONFIG

    log_file.parent.mkdir(parents=True, exist_ok=True)
    child_env = dict(os.environ if env is None else env)
    if bentoml_home_dir is not None:
        child_env["BENTOML_HOME"] = str(Path(bentoml_home_dir).expanduser().resolve())
    child_env.setdefault("BENTOML_DO_NOT_TRACK", "True")
    child_env.pop(ENV_CONFIG, None)  # the bento's bundled config must win
    cmd = [sys.executable, "-m", "bentoml", "serve", bento_tag, "--host", host, "--port", str(port)]
    log.info("Starting %s (log %s)", " ".join(cmd), log_file)
    log_offset = log_file.stat().st_size if log_file.exists() else 0
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=child_env, cwd=str(cwd or log_file.parent), start_new_session=True,
        )
    return proc, log_offset


def wait_ready(
    proc: subprocess.Popen[bytes],
    url: str,
    log_file: Path,
    log_offset: int,
    timeout: float,
    bento_tag: str,
    consequence: str = "the previous deployment keeps serving",
) -> None:
    """Wait for ``<url>/readyz``; on exit / startup failure / timeout stop the server and raise."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise DeploymentError(
                f"bentoml serve {bento_tag} exited with code {proc.returncode} before becoming ready; "
                f"{consequence}. Log {log_file}:\n{log_tail(log_file)}"
            )
        if ready(url):
            return
        if startup_failed(log_file, log_offset):
            stop_server(proc.pid, timeout=10)
            raise DeploymentError(
                f"{bento_tag} failed to start (the service raised while initialising; BentoML would keep "
                f"restarting it), stopped it; {consequence}. Log {log_file}:\n{log_tail(log_file)}"
            )
        if time.monotonic() > deadline:
            stop_server(proc.pid)
            raise DeploymentError(
                f"{bento_tag} was not ready at {url}/readyz within {timeout:.0f}s; stopped it, {consequence}. "
                f"Log {log_file}:\n{log_tail(log_file)}"
            )
        time.sleep(0.5)


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def stop_server(pid: int, timeout: float = 30.0, proc_start_time: float | int | None = None) -> None:
    """Stop a ``bentoml serve`` arbiter and its workers: SIGTERM (graceful), SIGKILL after ``timeout``."""
    if not is_our_server(pid, proc_start_time):
        return
    kids = descendants(pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    time.sleep(0.5)  # let the arbiter enter its stop state before its workers go, so none is respawned
    for k in kids:
        _signal(k, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid) and not any(alive(k) for k in kids):
            return
        time.sleep(0.2)
    log.warning("bentoml serve pid %s did not stop within %.0fs; killing it and its workers", pid, timeout)
    for k in [pid, *kids, *descendants(pid)]:
        _signal(k, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, 0)


def stop_process(pid: int, timeout: float = 15.0) -> None:
    """SIGTERM ``pid``, wait up to ``timeout``, then SIGKILL (a single process, e.g. the stable front)."""
    _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if alive(pid):
        _signal(pid, signal.SIGKILL)


def worker_identities(arbiter: int) -> list[list[float]]:
    """``[[pid, start time], ...]`` of the arbiter's live workers (to recognise them once orphaned)."""
    out = []
    for pid in worker_pids(arbiter):
        started = proc_start(pid)
        if started is not None:
            out.append([pid, started])
    return out


def stop_orphans(workers: list[list[float]] | None, timeout: float = 10.0) -> list[int]:
    """Stop the still-running BentoML workers among ``workers`` (:func:`worker_identities` of an arbiter that
    died: its workers keep the listening socket and answer, unsupervised); returns the pids stopped."""
    pids = [
        int(pid) for pid, started in (workers or [])
        if matches(int(pid), started, lambda cmd: "_bentoml_impl.worker" in cmd, unreadable=False)
    ]
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in pids:
        if alive(pid):
            _signal(pid, signal.SIGKILL)
    if pids:
        log.info("Stopped %d worker(s) left behind by a dead server: %s", len(pids), pids)
    return pids
