"""The local target's supervisor (in the stable front's process) restarts only what the state names, never
while a deploy holds the lock, and backs off when a restart fails; the deploy DAG pins to serving.queue.
(The restart of a real killed server: tests/integration/test_deploy_validate.py.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from mlops_provider.runtime.serving.front import Supervisor
from mlops_provider.runtime.serving.state import deploy_lock, read_state, write_state

REPO = Path(__file__).resolve().parents[2]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _state(tmp_path: Path, **kw: Any) -> dict[str, Any]:
    st = {"bento_tag": "no_such_bento:v1", "pid": _dead_pid(), "proc_start": 1.0, "host": "127.0.0.1",
          "port": 1, "url": "http://127.0.0.1:1", "bentoml_home": str(tmp_path / "bentoml"), "ready_timeout": 30,
          "restarts": 0, **kw}
    write_state(tmp_path, st)
    return st


def test_nothing_to_supervise_without_a_recorded_server(tmp_path: Path) -> None:
    assert Supervisor(tmp_path).once() == "idle"  # no state
    write_state(tmp_path, {"bento_tag": "b:1", "url": "http://127.0.0.1:1"})  # no pid (a stand-in upstream)
    assert Supervisor(tmp_path).once() == "idle"
    _state(tmp_path, supervise=False)
    assert Supervisor(tmp_path).once() == "idle"


def test_a_deploy_holding_the_lock_is_never_fought(tmp_path: Path) -> None:
    before = _state(tmp_path)
    with deploy_lock(tmp_path) as held:
        assert held
        assert Supervisor(tmp_path).once() == "busy"
    assert read_state(tmp_path) == before  # untouched


def test_a_failed_restart_is_recorded_and_backs_off(tmp_path: Path) -> None:
    before = _state(tmp_path)
    sup = Supervisor(tmp_path)
    assert sup.once() == "failed"  # bentoml serve of a bento that is not in the store exits
    info = sup.info()
    assert info["failed_attempts"] == 1 and info["restarts"] == 0
    assert "no_such_bento:v1" in info["last_error"] and "supervisor retries" in info["last_error"]
    assert sup.once() == "backoff"  # no hot loop of restarts
    assert read_state(tmp_path) == before  # the state still names the dead server; nothing was switched


def test_the_local_deploy_dag_runs_on_the_serving_queue() -> None:
    from mlops_provider.config import ServingConfig, load_config
    from mlops_provider.factory import PipelineAssets, build_deploy_dag

    cfg = load_config(REPO / "dags" / "flights_delay.yaml")

    def queues(**serving: Any) -> set[str]:
        c = cfg.model_copy(update={"serving": ServingConfig.parse({**cfg.serving.model_dump(), **serving})})
        return {t.queue for t in build_deploy_dag(c, PipelineAssets(c)).tasks}

    default = queues()
    assert len(default) == 1 and "serving" not in default  # unset: Airflow's default queue
    assert queues(queue="serving") == {"serving"}  # package, infra_validate, deploy, smoke_test: one host
    assert queues(queue="serving", target="kubernetes") == default  # remote targets are not pinned


def test_the_lock_is_exclusive(tmp_path: Path) -> None:
    code = ("import sys; from mlops_provider.runtime.serving.state import deploy_lock\n"
            f"with deploy_lock({str(tmp_path)!r}, blocking=False) as held: sys.exit(0 if held else 3)")
    with deploy_lock(tmp_path):
        other = subprocess.run([sys.executable, "-c", code], check=False)
    assert other.returncode == 3  # another process (the front) cannot take it while a deploy holds it
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
