"""EmbeddedAirflow's per-component controls, used by the failure drills: ``kill`` ends a component and every
process under it (``kill -9`` by default: a lost machine), ``restart`` starts it again with the same command
and settings. Real processes, no Airflow needed."""

from __future__ import annotations

import json
import signal
import sys

import psutil
import pytest

from mlops_provider.embedded import EmbeddedAirflow, wait_for

# a parent that forks a child, like a Celery worker and its pool; both sleep
TREE = [sys.executable, "-c", "import os, subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
        "print(os.environ['DRILL_NAME'], flush=True); time.sleep(600)"]


@pytest.fixture
def af(tmp_path):
    af = EmbeddedAirflow(home=tmp_path, dags_folder=tmp_path, components=(), extra={"sleeper": TREE},
                         extra_env={"sleeper": {"DRILL_NAME": "worker-x"}})
    (tmp_path / "logs").mkdir()
    af.pid_file.write_text(json.dumps({"url": af.url, "processes": {}}))
    af._spawn("sleeper", TREE, af.extra_env["sleeper"])
    yield af
    af.stop(timeout=5)


def _tree(pid: int) -> list[psutil.Process]:
    p = psutil.Process(pid)
    return [p, *p.children(recursive=True)]


def test_kill_ends_the_component_and_its_children_and_restart_brings_it_back(af) -> None:
    first = af.running()["sleeper"]
    tree = wait_for(lambda: len(_tree(first)) == 2 and _tree(first), "the child process", 30, interval=0.1)
    ended = af.kill("sleeper")
    assert ended == sorted(p.pid for p in tree)
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in tree)
    assert af.running() == {}
    assert af.kill("sleeper") == []  # not running: nothing to signal

    af.restart("sleeper")
    second = af.running()["sleeper"]
    assert second != first
    log = af.home / "logs" / "sleeper.log"
    wait_for(lambda: log.read_text().count("worker-x") == 2, "the restarted process's output", 30, interval=0.1)


def test_restart_of_a_live_component_stops_it_gracefully_first(af) -> None:
    first = af.running()["sleeper"]
    af.restart("sleeper", signal.SIGTERM)
    assert af.running()["sleeper"] != first
    assert not psutil.pid_exists(first) or psutil.Process(first).status() == psutil.STATUS_ZOMBIE


def test_restart_of_an_unknown_component_names_the_known_ones(af) -> None:
    with pytest.raises(KeyError, match="sleeper"):
        af.restart("nope")
