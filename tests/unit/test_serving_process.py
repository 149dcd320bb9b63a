"""Process identity of served bentos and the stable front (psutil): start times, recycled pids, stop."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlops_provider.runtime.serving.process import (
    alive,
    descendants,
    is_our_server,
    matches,
    proc_start,
    stop_process,
)


def test_start_time_guards_against_a_recycled_pid() -> None:
    me = os.getpid()
    started = proc_start(me)
    assert isinstance(started, float)
    assert matches(me, started, lambda cmd: True, unreadable=False)
    assert not matches(me, started - 60.0, lambda cmd: True, unreadable=False)  # another process, same pid
    assert not is_our_server(me)  # pytest is no `bentoml serve`
    assert not matches(None, None, lambda cmd: True, unreadable=True)


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="Linux /proc only")
def test_state_files_of_older_versions_are_still_recognised() -> None:
    """Before psutil, ``proc_start`` held the clock ticks since boot from /proc/<pid>/stat."""
    raw = Path(f"/proc/{os.getpid()}/stat").read_text()
    ticks = int(raw[raw.rindex(")") + 2 :].split()[19])
    assert matches(os.getpid(), ticks, lambda cmd: True, unreadable=False)
    assert not matches(os.getpid(), ticks - 1000, lambda cmd: True, unreadable=False)


def test_stop_process_and_liveness() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert alive(proc.pid) and descendants(proc.pid) == []
        assert os.getpid() != proc.pid and proc.pid in descendants(os.getpid())
        stop_process(proc.pid, timeout=10)
        assert not alive(proc.pid)  # reaped, not a zombie
    finally:
        if proc.poll() is None:
            proc.kill()
    assert descendants(proc.pid) == []
