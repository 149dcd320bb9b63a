"""The demo's path on a small slice: the embedded Airflow (components started in order on loopback), real
data landed in the landing zone, and Airflow's scheduler driving features -> training -> deploy through
Assets. Asserts, through Airflow's REST API, that the run left zero failed DAG runs and zero failed task
instances, and that every listening socket of the processes it started is on 127.0.0.1.
"""

from __future__ import annotations

import os
import time

import pytest
from dag_runs import REPO, finished, land_flights, listeners, serving_pids, write_dags

from mlops_provider.embedded import EmbeddedAirflow, create_pools, free_port, wait_for

MODEL = "flights_delay"
pytestmark = [pytest.mark.system, pytest.mark.timeout(1500)]


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("embedded")
    home = tmp / "home"
    dags = write_dags(tmp / "dags", MODEL, {"epochs": 2, "max_rows": 20000, "validation_days": 7, "patience": 1})
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


def test_scheduler_drives_the_loop_with_zero_failures_on_loopback(airflow) -> None:
    api, af = airflow["api"], airflow["af"]
    assert create_pools(api, airflow["dags"]) == {f"mlops_promote_{MODEL}": 1}
    wait_for(lambda: {f"{MODEL}__features", f"{MODEL}__training", f"{MODEL}__deploy"} <= api.dag_ids(),
             "the DAGs parsed", 300)
    assert api.import_errors() == []

    land_flights(airflow["home"], MODEL)

    t0 = time.monotonic()
    for kind in ("features", "training", "deploy"):
        runs = wait_for(lambda k=kind: finished(api, f"{MODEL}__{k}", 1), f"{MODEL}__{kind} finished", 900,
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

    # the served bento (and its stable front) started by deploy, and every Airflow component
    sockets = listeners([*af.running().values(), *serving_pids(airflow["home"], MODEL)])
    assert {port for _, port, _ in sockets} >= {af.port, int(url.rsplit(":", 1)[1].split("/")[0])}, sockets
    assert all(ip == "127.0.0.1" for ip, _, _ in sockets), sockets
    print(f"features -> training -> deploy through the scheduler in {elapsed:.0f}s; listeners: {sockets}")
