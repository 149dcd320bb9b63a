"""The bike_demand example (regression, UCI Bike Sharing 2011 from ISLP) through the whole loop with
``dag.test()``: land -> features -> training -> gate -> deploy -> HTTP predictions -> monitor.

Written against the cross-room contracts of issue 13 (``training.task: regression``, regression metrics in
the gate, the regression pyfunc and the served response ``{request_id, model_version, prediction}``, the
inference log's ``traffic`` / ``prediction`` columns). A provider without task types cannot load the YAML
(``training.task`` is an unknown key there): the features stage then runs on the YAML less its
task-specific keys (``training.task``, ``gate``) -- the features DAG reads neither -- and the loop fails
loudly at the first step that needs regression support. Nothing is skipped.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from dag_runs import free_port, states, xcom

REPO = Path(__file__).resolve().parents[2]
MODEL = "bike_demand"
pytestmark = [pytest.mark.system, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("bike_system")
    home = tmp / "home"
    old = dict(os.environ)
    os.environ["MLOPS_HOME"] = str(home)
    os.environ["BENTOML_HOME"] = str(home / "bentoml")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True,
                   env=os.environ.copy(), timeout=600)
    data = yaml.safe_load((REPO / "dags" / f"{MODEL}.yaml").read_text())
    repo = REPO / "feature_repo" / MODEL
    data["features"]["repo"] = str(repo)
    data["features"]["transform"] = f"{repo / 'transforms.py'}:build_partitions"
    data["training"].update({"epochs": 8, "patience": 2})
    data["serving"]["port"] = free_port()
    data["monitoring"]["min_rows"] = 20
    cfg_path = tmp / "dags" / f"{MODEL}.yaml"
    cfg_path.parent.mkdir()
    cfg_path.write_text(yaml.safe_dump(data))
    # dag.test() serializes the DAGs of the configured DAGs folder: make it this model's folder
    shutil.copy(REPO / "dags" / "mlops_pipelines.py", cfg_path.parent / "mlops_pipelines.py")
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(cfg_path.parent)
    yield {"tmp": tmp, "home": home, "cfg": cfg_path}
    try:
        from mlops_provider.runtime.serving.targets.local import stop_local

        stop_local(str(home / "state" / "serving" / MODEL))
    finally:
        os.environ.clear()
        os.environ.update(old)


@pytest.fixture(scope="module")
def dags(env):
    from mlops_provider.factory import dags_from_config

    return dags_from_config(env["cfg"])


def _land_year(env) -> list[str]:
    from mlops_provider.examples.bike_demand.data import months, write_landing_months

    landing = env["home"] / "landing" / MODEL
    return write_landing_months(landing, 2011, months())


def test_features_then_the_whole_loop(env, dags) -> None:
    # -- features: 12 landed months -> validated, partitioned, applied, materialized -----------------------
    files = _land_year(env)
    assert len(files) == 24
    feat = dags[f"{MODEL}__features"].test(run_conf={"files": files})
    assert feat.state == "success", states(feat)
    part = xcom(feat, "write_offline_partition")
    assert part["rows"]["labels"] == 2 * 8645 and part["rows"]["segment_demand_history"] == 2 * 8645, part
    assert part["rows"]["city_weather_hourly"] == 8645, part
    assert part["window_start"] == "2011-01-01T05:00:00+00:00", part  # local midnight, EST -> UTC
    mat = xcom(feat, "materialize")
    assert set(mat["rows"]) >= {"city_weather_hourly", "segment_demand_history"}, mat
    assert all(n > 0 for n in mat["rows"].values()), mat

    from mlops_provider.runtime.features.store import open_store

    online = open_store(REPO / "feature_repo" / MODEL).get_online_features(
        features=open_store(REPO / "feature_repo" / MODEL).get_feature_service(f"{MODEL}_v1"),
        entity_rows=[{"segment": s, "city": "washington_dc", "hr": 17, "weekday": 3, "workingday": 1,
                      "holiday": 0, "season": 1} for s in ("casual", "registered")],
    ).to_dict()
    assert online["weathersit"][0] is not None and online["riders_mean_7d"][1] is not None, online

    # -- training: a regression (training.task: regression, gate metrics rmse / mae) -----------------------
    train = dags[f"{MODEL}__training"].test()
    assert train.state == "success", states(train)
    dataset = xcom(train, "training_dataset")
    assert dataset["label"] == "riders" and sum(dataset["rows"].values()) > 10000, dataset
    verdict = xcom(train, "gate")
    assert verdict["decision"] == "promote" and verdict["bootstrap"] is True, verdict
    assert states(train)["promote"] == "success"

    from mlops_provider.hooks.mlflow import MLflowHook

    client = MLflowHook().get_client()
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.tags["feature_service"] == f"{MODEL}_v1"
    assert champion.tags["mlops.task"] == "regression" and champion.tags["mlops.label"] == "riders"
    run = client.get_run(champion.run_id)
    rmse = next(v for k, v in run.data.metrics.items() if k.endswith("rmse"))
    assert 0 < rmse < 60.0, run.data.metrics  # the gate's ceiling; a constant predictor scores ~75

    # -- deploy + HTTP predictions ------------------------------------------------------------------------
    deploy = dags[f"{MODEL}__deploy"].test()
    assert deploy.state == "success", states(deploy)
    url = xcom(deploy, "deploy")["url"]
    smoke = xcom(deploy, "smoke_test")
    assert isinstance(smoke["prediction"], float), smoke

    import httpx

    rows = [
        {"segment": seg, "city": "washington_dc", "hr": hr, "weekday": 3, "workingday": 1, "holiday": 0,
         "season": 4, "request_id": f"bike-{seg}-{hr}-{i}"}
        for i in range(5) for seg in ("casual", "registered") for hr in (8, 13, 17)
    ]
    resp = httpx.post(f"{url}/predict", json={"requests": rows}, timeout=60)
    assert resp.status_code == 200, resp.text
    answers = resp.json()
    assert len(answers) == len(rows)
    for row, answer in zip(rows, answers, strict=True):
        assert answer["request_id"] == row["request_id"] and answer["model_version"] == str(champion.version)
        assert isinstance(answer["prediction"], float) and "probability" not in answer, answer
    bad = httpx.post(f"{url}/predict", json={"requests": [{"segment": "casual"}]}, timeout=60)
    assert 400 <= bad.status_code < 500, bad.text

    # -- monitor: the live requests (not the smoke / validation traffic) form the window -----------------
    mon = dags[f"{MODEL}__monitor"].test()
    assert mon.state == "success", states(mon)
    report = xcom(mon, "drift_report")
    assert report["n_current"] >= len(rows) and Path(report["report"]["json"]).exists(), report
    assert states(mon)["signal_drift"] in ("success", "skipped")

    from mlops_provider.runtime.serving.inference_log import read_inference_log

    # parquet parts and the live write-ahead log alike (compaction runs every log_flush_interval_s)
    log = read_inference_log(str(env["home"] / "inference_log" / MODEL))
    live = log[log["traffic"] == "live"]
    assert set(live["request_id"]) >= {r["request_id"] for r in rows}
    assert {"segment", "city", "hr", "prediction", "riders_mean_7d"} <= set(live.columns)


def test_bad_landing_materializes_nothing(env, dags) -> None:
    from mlops_provider.examples.bike_demand.data import month_table

    bad = month_table("rides", 2011, 3)
    bad.loc[bad.index[:5], "hr"] = 24          # outside the contract's 0..23
    bad = bad.drop(columns=["registered"])     # a required column is missing
    path = env["tmp"] / "bad" / "rides_2011_03.parquet"
    path.parent.mkdir()
    bad.to_parquet(path)
    online = env["home"] / "feast" / MODEL
    before = {p: p.stat().st_mtime_ns for p in online.rglob("*") if p.is_file()}
    labels = env["home"] / "lake" / MODEL / "labels" / "month=2011-03.parquet"
    labels_before = labels.stat().st_mtime_ns if labels.exists() else None
    run = dags[f"{MODEL}__features"].test(run_conf={"files": [str(path)]})
    assert run.state == "failed"
    task_states = states(run)
    assert task_states["validate_landing"] == "failed"
    assert task_states["materialize"] in ("upstream_failed", None)
    assert {p: p.stat().st_mtime_ns for p in online.rglob("*") if p.is_file()} == before
    assert (labels.stat().st_mtime_ns if labels.exists() else None) == labels_before
    # one validation report per run (the next landing never overwrites it)
    safe_run_id = re.sub(r"[^A-Za-z0-9._-]+", "_", run.run_id).strip("_")  # operator_notes.run_slug
    reports = sorted((env["home"] / "reports" / MODEL / "validation").glob("landing__*.json"))
    assert [p.name for p in reports if safe_run_id in p.name], (run.run_id, [p.name for p in reports])
    report = json.loads(next(p for p in reports if safe_run_id in p.name).read_text())
    rules = {(f["rule"], f["column"]) for f in report["failures"]}
    assert ("max", "hr") in rules and ("missing_column", "registered") in rules, rules
