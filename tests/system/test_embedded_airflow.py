"""The demo's path on a small slice: the embedded Airflow (components started in order on loopback), real
data landed in the landing zone, and Airflow's scheduler driving features -> training -> deploy through
Assets. Asserts, through Airflow's REST API, that the run left zero failed DAG runs and zero failed task
instances, and that every listening socket of the processes it started is on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml

from mlops_provider.embedded import EmbeddedAirflow, create_pools, free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
MODEL = "flights_delay"
pytestmark = [pytest.mark.system, pytest.mark.timeout(1500)]


def _listeners(pids: list[int]) -> list[tuple[str, int, int]]:
    """(address, port, pid) of every listening TCP socket of these processes and their children."""
    import psutil

    procs = {}
    for pid in pids:
        try:
            p = psutil.Process(pid)
            for c in [p, *p.children(recursive=True)]:
                procs[c.pid] = c
        except psutil.NoSuchProcess:
            continue
    out = []
    for pid, p in procs.items():
        try:
            conns = p.net_connections(kind="tcp")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        out += [(c.laddr.ip, c.laddr.port, pid) for c in conns if c.status == psutil.CONN_LISTEN]
    return out


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("embedded")
    home = tmp / "home"
    dags = tmp / "dags"
    dags.mkdir()
    (dags / "mlops_pipelines.py").write_text((REPO / "dags" / "mlops_pipelines.py").read_text())
    data = yaml.safe_load((REPO / "dags" / f"{MODEL}.yaml").read_text())
    data["features"]["repo"] = str(REPO / "feature_repo")
    data["features"]["transform"] = str(REPO / "feature_repo" / "transforms.py") + ":build_partitions"
    data["training"].update({"epochs": 2, "max_rows": 20000, "validation_days": 7, "patience": 1})
    data["serving"]["port"] = free_port()
    (dags / f"{MODEL}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    env = {"MLOPS_HOME": str(home), "BENTOML_HOME": str(home / "bentoml"), "MLOPS_TRAINING_QUEUE": "default",
           "AIRFLOW__CORE__PARALLELISM": "4", "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5"}
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        os.environ.pop(var, None)
    af = EmbeddedAirflow(home=tmp / "airflow", dags_folder=dags, plugins_folder=REPO / "plugins", port=free_port(),
                         env=env)
    af.start()
    try:
        yield {"af": af, "home": home, "api": af.api(), "dags": dags}
    finally:
        from mlops_provider.runtime.serving.targets.local import stop_local

        try:
            stop_local(str(home / "state" / "serving" / MODEL))
        finally:
            af.stop()


def _finished(api, dag_id: str, n: int) -> list[dict]:
    runs = api.runs(dag_id)
    done = [r for r in runs if r["state"] in ("success", "failed")]
    return done if len(done) >= n else []


def test_scheduler_drives_the_loop_with_zero_failures_on_loopback(airflow) -> None:
    from mlops_provider.examples.flights.data import write_landing_month, write_landing_planes

    api, af = airflow["api"], airflow["af"]
    assert create_pools(api, airflow["dags"]) == {f"mlops_promote_{MODEL}": 1}
    wait_for(lambda: {f"{MODEL}__features", f"{MODEL}__training", f"{MODEL}__deploy"} <= api.dag_ids(),
             "the DAGs parsed", 300)
    assert api.import_errors() == []

    landing = airflow["home"] / "landing" / MODEL
    landing.mkdir(parents=True, exist_ok=True)
    write_landing_planes(str(landing))
    for month in (1, 2):
        write_landing_month(str(landing), 2013, month)

    t0 = time.monotonic()
    for kind in ("features", "training", "deploy"):
        runs = wait_for(lambda k=kind: _finished(api, f"{MODEL}__{k}", 1), f"{MODEL}__{kind} finished", 900,
                        interval=3)
        assert runs[0]["state"] == "success", (kind, api.task_states(f"{MODEL}__{kind}", runs[0]["dag_run_id"]))
        # every run came from an Asset event or the watcher, not from a manual trigger
        assert runs[0]["run_type"] in ("asset_triggered", "scheduled"), runs[0]
    elapsed = time.monotonic() - t0

    failures = api.failures()
    assert failures == {"dag_runs": [], "task_instances": []}, failures

    deploy_run = api.runs(f"{MODEL}__deploy")[0]["dag_run_id"]
    url = api.xcom(f"{MODEL}__deploy", deploy_run, "deploy")["url"]
    assert url.startswith("http://127.0.0.1:"), url

    pids = list(af.running().values())
    state_dir = airflow["home"] / "state" / "serving" / MODEL
    for name in ("deployment.json", "front.json"):  # the served bento (and its stable front), started by deploy
        if (state_dir / name).is_file():
            pids.append(int(json.loads((state_dir / name).read_text())["pid"]))
    listeners = _listeners(pids)
    assert {port for _, port, _ in listeners} >= {af.port, int(url.rsplit(":", 1)[1].split("/")[0])}, listeners
    assert all(ip == "127.0.0.1" for ip, _, _ in listeners), listeners
    print(f"features -> training -> deploy through the scheduler in {elapsed:.0f}s; listeners: {listeners}")
