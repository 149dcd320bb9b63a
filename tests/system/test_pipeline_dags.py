"""The four DAGs end to end with ``dag.test()`` on a small slice of the real data.

Built by the factory from the example YAML (smaller training budget), run in-process in
order: features (May–June 2013 landed) -> training (bootstraps @champion) -> deploy (bento
served on a loopback port, smoke prediction over HTTP) -> monitor (Evidently drift of the
logged requests). Then the demo's replay clock on that champion: three ordinary July days raise no retrain
signal, a fourth with a named fault in the served weather does. A second features run over a bad landing
proves nothing is materialized.
"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC
from pathlib import Path

import pytest
import yaml
from dag_runs import free_port, states, xcom

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.system, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("system")
    home = tmp / "home"
    old = dict(os.environ)
    os.environ["MLOPS_HOME"] = str(home)
    os.environ["BENTOML_HOME"] = str(home / "bentoml")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    # dag.test() needs a metadata DB: a fresh SQLite one in the session's AIRFLOW_HOME.
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, capture_output=True,
                   env=os.environ.copy(), timeout=600)
    data = yaml.safe_load((REPO / "dags" / "flights_delay.yaml").read_text())
    data["features"]["repo"] = str(REPO / "feature_repo")
    data["features"]["transform"] = str(REPO / "feature_repo" / "transforms.py") + ":build_partitions"
    data["training"].update({"epochs": 2, "max_rows": 20000, "validation_days": 7, "patience": 1})
    data["serving"]["port"] = free_port()
    data["monitoring"]["min_rows"] = 20
    cfg_path = tmp / "dags" / "flights_delay.yaml"
    cfg_path.parent.mkdir()
    cfg_path.write_text(yaml.safe_dump(data))
    yield {"tmp": tmp, "home": home, "cfg": cfg_path}
    try:
        from mlops_provider.runtime.serving.targets.local import stop_local

        stop_local(str(home / "state" / "serving" / "flights_delay"))
    finally:
        os.environ.clear()
        os.environ.update(old)


@pytest.fixture(scope="module")
def dags(env):
    from mlops_provider.factory import dags_from_config

    return dags_from_config(env["cfg"])


def test_golden_path(env, dags) -> None:
    from mlops_provider.examples.flights.data import write_landing_month, write_landing_planes

    landing = env["home"] / "landing" / "flights_delay"
    landing.mkdir(parents=True)
    files = [str(write_landing_planes(str(landing)))]
    for month in (5, 6):  # May-June: the replay below continues into July
        files += [str(f) for f in write_landing_month(str(landing), 2013, month)]

    feat = dags["flights_delay__features"].test(run_conf={"files": files})
    assert feat.state == "success", states(feat)
    mat = xcom(feat, "materialize")
    assert mat["rows"] and all(n > 0 for n in mat["rows"].values()), mat

    train = dags["flights_delay__training"].test()
    assert train.state == "success", states(train)
    verdict = xcom(train, "gate")
    assert verdict["decision"] == "promote" and verdict["bootstrap"] is True, verdict
    assert states(train)["promote"] == "success"

    from mlops_provider.hooks.mlflow import MLflowHook

    client = MLflowHook().get_client()
    champion = client.get_model_version_by_alias("flights_delay", "champion")
    assert champion.tags["snapshot_hash"] and champion.tags["feature_service"] == "flights_delay_v1"

    deploy = dags["flights_delay__deploy"].test()
    assert deploy.state == "success", states(deploy)
    url = env["url"] = xcom(deploy, "deploy")["url"]
    smoke = xcom(deploy, "smoke_test")
    assert 0.0 <= float(smoke["probability"]) <= 1.0

    import httpx

    flights = [
        {"origin": o, "carrier": c, "tailnum": t, "sched_dep_hour": h, "weekday": 2, "month": 6, "distance": d}
        for o, c, t, h, d in [("JFK", "B6", "N804JB", 17, 1069.0), ("EWR", "UA", "N14228", 6, 1400.0),
                              ("LGA", "DL", "N3739P", 9, 762.0)] * 10
    ]
    resp = httpx.post(f"{url}/predict", json={"requests": flights}, timeout=60)
    assert resp.status_code == 200, resp.text
    assert len(resp.json()) == len(flights)
    bad = httpx.post(f"{url}/predict", json={"requests": [{"origin": "JFK"}]}, timeout=60)
    assert 400 <= bad.status_code < 500, bad.text

    mon = dags["flights_delay__monitor"].test()
    assert mon.state == "success", states(mon)
    report = xcom(mon, "drift_report")
    assert report["n_current"] >= len(flights) and Path(report["report"]["json"]).exists(), report
    assert states(mon)["signal_drift"] in ("success", "skipped")


def test_replayed_days_signal_only_on_the_fault_day(env, dags) -> None:
    """The demo's replay clock on the golden path's champion (trained on May-June): July 1-3 in simulated
    time (features online hour by hour, requests with their event time, outcomes a day late, the monitor run
    with ``run_after`` at each day's end) raise no retrain signal; July 4, whose served weather reports temp
    in Celsius (the named fault ``temp_celsius``), does, naming temp. No threshold is set here: the example
    YAML's calibrated drift and detector decide. (On a January-February champion the same fault in March is
    missed: winter's day-to-day temperature swings make the calibrated level-shift threshold z 7.0, the
    Celsius day scored z 6.8.)"""
    from datetime import datetime, timedelta

    from feast import FeatureStore

    from mlops_provider.examples.flights.replay import FAULTS, FlightsReplay, end_of_day, serve_day
    from mlops_provider.paths import ModelPaths

    url = env.get("url")
    assert url, "the golden path deployed no endpoint"
    paths = ModelPaths.for_model("flights_delay", env["home"])
    store = FeatureStore(repo_path=str(REPO / "feature_repo"))
    data = FlightsReplay(REPO)
    first = datetime(2013, 7, 1, tzinfo=UTC)
    verdicts = {}
    for i in range(4):
        day = first + timedelta(days=i)
        fault = FAULTS["temp_celsius"] if i == 3 else None
        served = serve_day(url, data, store, day, fault)
        assert served["ok"] == served["sent"] > 500, served
        end_of_day(data, paths, day, first_day=first)
        _wait_logged(paths.inference_log, f"{day:%Y-%m-%d}", served["ok"])
        end = day + timedelta(days=1)
        # no logical date (a 2013 one precedes the DAG's start_date): the window comes from run_after
        mon = dags["flights_delay__monitor"].test(run_after=end, logical_date=None)
        assert mon.state == "success", states(mon)
        report = xcom(mon, "drift_report")
        assert report is not None, states(mon)
        assert report["n_current"] == served["ok"], report  # the day's requests, nothing from other days
        verdicts[f"{day:%Y-%m-%d}"] = (states(mon)["signal_drift"], report["drifted_columns"], report["trigger"],
                                       report.get("trigger_reasons"))
    ordinary = {d: v for d, v in verdicts.items() if d != "2013-07-04"}
    assert all(v[0] == "skipped" and v[2] is False for v in ordinary.values()), verdicts
    signal, drifted, trigger, _ = verdicts["2013-07-04"]
    assert signal == "success" and trigger is True and "temp" in drifted, verdicts


def _wait_logged(log_dir: Path, day: str, rows: int, timeout: float = 120.0) -> None:
    """The endpoint compacts its inference log every few seconds: wait for the day's rows."""
    import time

    from mlops_provider.examples.flights.demo import logged_rows

    deadline = time.monotonic() + timeout
    while logged_rows(log_dir, day) < rows:
        assert time.monotonic() < deadline, f"{logged_rows(log_dir, day)} of {rows} rows of {day} logged"
        time.sleep(1.0)


def test_bad_landing_materializes_nothing(env, dags) -> None:
    import pandas as pd

    from mlops_provider.examples.flights.data import load_table

    bad = load_table("flights")
    bad = bad[(bad["month"] == 3)].copy()
    bad.loc[bad.index[:25], "origin"] = "XXX"          # not an allowed category
    bad = bad.drop(columns=["distance"])                # a required column is missing
    path = env["tmp"] / "bad" / "flights_2013_03.parquet"
    path.parent.mkdir()
    bad.to_parquet(path)
    online = env["home"] / "feast"
    before = {p: p.stat().st_mtime_ns for p in online.rglob("*") if p.is_file()}
    run = dags["flights_delay__features"].test(run_conf={"files": [str(path)]})
    assert run.state == "failed"
    task_states = states(run)
    assert task_states["validate_landing"] == "failed"
    assert task_states["materialize"] in ("upstream_failed", None)
    after = {p: p.stat().st_mtime_ns for p in online.rglob("*") if p.is_file()}
    assert after == before, "the online store changed although validation failed"
    assert not list((env["home"] / "lake" / "flights_delay" / "raw" / "flights").glob("month=2013-03*"))
    pd.read_json(max((env["home"] / "reports" / "flights_delay" / "validation").glob("landing*.json"), key=lambda q: q.stat().st_mtime_ns), typ="series")
