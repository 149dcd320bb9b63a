"""Infra validation and offline batch scoring of a real bento / registered model, and the local deploy
target's guarantees (failed deploy keeps the old one serving; the live version is verified).

Real MLflow (sqlite), real Feast (sqlite online store), real ``bentoml serve`` processes on free
loopback ports. One world and one bento per module.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest_features_s3 import bucket, moto_s3  # noqa: F401 - fixtures
from conftest_serving import (
    FEATURE_SERVICE,
    FEATURES,
    MODEL_NAME,
    ServingWorld,
    serving_world_fixture,  # noqa: F401 - the `serving_world` fixture
)

from mlops_provider.exceptions import InfraValidationError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

T0 = datetime(2024, 6, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def bento(serving_world: ServingWorld) -> dict:
    from test_service_http import example_serving

    from mlops_provider.runtime.serving.package import package_bento

    w = serving_world
    return package_bento(
        MODEL_NAME, "champion", w.tracking_uri, str(w.feature_repo), FEATURE_SERVICE, FEATURES,
        str(w.inference_log), bentoml_home_dir=w.bentoml_home, serving=example_serving(),
    )


@pytest.fixture(scope="module")
def snapshot(serving_world: ServingWorld) -> str:
    """A small evaluation snapshot: known and unknown entities, two days, both splits."""
    import numpy as np
    import pandas as pd

    from mlops_provider.runtime.features.snapshot import write_snapshot

    n = 24
    rng = np.random.default_rng(0)
    df = pd.DataFrame({
        "event_timestamp": [T0 + timedelta(hours=2 * i) for i in range(n)],
        "origin": rng.choice(["JFK", "LGA", "EWR", "ZZZ"], n),
        "carrier": rng.choice(["UA", "AA", "B6"], n),
        "tailnum": rng.choice(["N14228", "N24211", "N999"], n),
    })
    for c in FEATURES["numeric"]:
        df[c] = rng.uniform(1, 20, n).round(2)
    df["sched_dep_hour"] = rng.integers(0, 24, n).astype("float64")
    df["weekday"] = rng.integers(0, 7, n).astype("float64")
    df["month"] = rng.integers(1, 13, n).astype("float64")
    df["delayed"] = rng.integers(0, 2, n)
    df["split"] = ["train"] * (n // 2) + ["validation"] * (n - n // 2)
    path, _ = write_snapshot(df, {"feature_service": FEATURE_SERVICE, "label": "delayed"},
                             serving_world.home / "snapshots")
    return path


def _gone(report: dict) -> bool:
    from mlops_provider.runtime.serving.process import is_our_server

    try:
        httpx.get(f"{report['url']}/readyz", timeout=2)
        answered = True
    except httpx.HTTPError:
        answered = False
    return not answered and not is_our_server(report["pid"])


def test_infra_validate_passes_and_stops_the_server(serving_world: ServingWorld, bento: dict, snapshot: str,
                                                    tmp_path: Path) -> None:
    from mlops_provider.operators.bentoml import BentoInfraValidateOperator

    op = BentoInfraValidateOperator(
        task_id="infra_validate", bento_tag=bento["bento_tag"], snapshot=snapshot, sample_rows=6,
        latency_budget_ms=60_000, report_dir=str(tmp_path),
    )
    report = op.execute({})  # type: ignore[arg-type]
    assert report["passed"] is True and report["problems"] == []
    # both projected on the request schema (the input example lacks the tailnum: the YAML's example fills it)
    assert report["replayed"] == {"input_example": 1, "snapshot_sample": 6} and report["task"] == "binary"
    assert report["max_abs_diff"] is not None and report["max_abs_diff"] <= 1e-5
    assert report["batch_max_abs_diff"] <= 1e-5
    assert all(report["checks"].values())
    assert Path(report["report_path"]).is_file()
    assert _gone(report)
    from mlops_provider.runtime.serving.inference_log import read_inference_log

    logged = read_inference_log(serving_world.inference_log)
    infra = logged[logged["request_id"].astype(str).str.startswith("infra-")]
    assert len(infra) >= 7 and set(infra["traffic"]) == {"infra_validation"}  # never counted as live traffic
    assert (infra["timestamp"] == infra["timestamp"].iloc[0]).all()  # one pinned event time


def test_infra_validate_fails_with_the_reasons_and_stops_the_server(serving_world: ServingWorld, bento: dict,
                                                                    snapshot: str) -> None:
    from mlops_provider.runtime.serving.infra_validation import infra_validate

    w = serving_world
    # a negative tolerance makes every (correct) prediction a parity failure; a 1 µs budget fails latency
    with pytest.raises(InfraValidationError) as err:
        infra_validate(
            bento["bento_tag"], bentoml_home_dir=w.bentoml_home, mlflow_tracking_uri=w.tracking_uri,
            snapshot=snapshot, sample_rows=2, tolerance=-1.0, latency_budget_ms=0.001,
        )
    report = err.value.report
    assert report["passed"] is False
    assert report["checks"]["parity"] is False and report["checks"]["latency"] is False
    assert report["checks"]["schema"] is True and report["checks"]["readiness"] is True
    assert "parity:" in str(err.value) and "latency:" in str(err.value) and "not deployed" in str(err.value)
    assert _gone(report)


# ---------------------------------------------------------------------------- batch scoring
def test_batch_predict_window_is_scored_once(serving_world: ServingWorld, snapshot: str, tmp_path: Path) -> None:
    import mlflow
    import numpy as np
    import pandas as pd

    from mlops_provider.operators.bentoml import BatchPredictOperator
    from mlops_provider.runtime.serving.batch import model_input

    op = BatchPredictOperator(
        task_id="batch_predict", model_name=MODEL_NAME, source=snapshot, output_root=str(tmp_path / "scores"),
        features=FEATURES, window_start=(T0 + timedelta(hours=10)).isoformat(),
        window_end=(T0 + timedelta(hours=30)).isoformat(),
    )
    first = op.execute({})  # type: ignore[arg-type]
    assert first["created"] is True and first["rows"] == 10 and first["model_version"] == "1"
    out = Path(first["output"])
    assert out == tmp_path / "scores" / MODEL_NAME / "v1" / "20240601T100000Z__20240602T060000Z.parquet"
    scored = pd.read_parquet(out)
    assert scored["event_timestamp"].min() == pd.Timestamp(T0 + timedelta(hours=10))
    assert scored["event_timestamp"].max() < pd.Timestamp(T0 + timedelta(hours=30))
    mlflow.set_tracking_uri(serving_world.tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}/1")
    own = np.asarray(model.predict(model_input(scored, FEATURES["categorical"], FEATURES["numeric"])))
    assert np.allclose(scored["prediction"].to_numpy(), own) and set(scored["model_version"]) == {"1"}
    mtime = out.stat().st_mtime_ns
    again = op.execute({})  # type: ignore[arg-type]
    assert again["created"] is False and again["rows"] == 10 and out.stat().st_mtime_ns == mtime
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temporary leftovers


def test_batch_predict_to_s3(serving_world: ServingWorld, snapshot: str, moto_s3, bucket: str) -> None:  # noqa: F811
    import io

    import pandas as pd

    from mlops_provider.hooks.objstore import ObjectStoreHook
    from mlops_provider.runtime.io.objstore import ObjectStore
    from mlops_provider.runtime.serving.batch import batch_predict

    kw = dict(mlflow_tracking_uri=serving_world.tracking_uri, window_start=T0.isoformat(),
              window_end=(T0 + timedelta(days=1)).isoformat(), store=ObjectStore(ObjectStoreHook().settings))
    first = batch_predict(MODEL_NAME, snapshot, f"s3://{bucket}/scores", FEATURES, **kw)
    assert first["created"] is True and first["rows"] == 12
    key = f"scores/{MODEL_NAME}/v1/20240601T000000Z__20240602T000000Z.parquet"
    assert moto_s3.keys(bucket, "scores/") == [key]
    body = moto_s3.client.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert len(pd.read_parquet(io.BytesIO(body))) == 12
    again = batch_predict(MODEL_NAME, snapshot, f"s3://{bucket}/scores", FEATURES, **kw)
    assert again["created"] is False and again["rows"] == 12


# ---------------------------------------------------------------------------- local target via the operator
class _TI:
    def __init__(self) -> None:
        self.xcom: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.xcom[key] = value


def test_local_deploy_failure_keeps_the_old_version_and_live_version_is_verified(
    serving_world: ServingWorld, bento: dict
) -> None:
    from conftest_serving import GOOD_REQUEST

    from mlops_provider.exceptions import DeploymentError, LiveVersionMismatch
    from mlops_provider.links.bentoml import BENTO_ENDPOINT_XCOM_KEY
    from mlops_provider.operators.bentoml import BentoDeployOperator, BentoSmokeTestOperator
    from mlops_provider.runtime.serving.package import package_bento
    from mlops_provider.runtime.serving.process import free_port, is_our_server
    from mlops_provider.runtime.serving.targets.local import read_state, stop_local

    w = serving_world
    state_dir = w.home / "state" / "deploy_operator"
    port = free_port()

    def op(tag: str, smoke: dict | None = GOOD_REQUEST) -> BentoDeployOperator:
        return BentoDeployOperator(task_id="deploy", bento_tag=tag, port=port, state_dir=str(state_dir),
                                   ready_timeout=150, smoke_request=smoke, drain_seconds=0.5)

    try:
        ti = _TI()
        first = op(bento["bento_tag"], smoke={}).execute({"ti": ti})  # type: ignore[arg-type]  # {}: the bento's
        assert first["changed"] is True and first["target"] == "local"
        assert first["live"]["bento_tag"] == bento["bento_tag"] and first["live"]["model_version"] == "1"
        front = f"http://127.0.0.1:{port}"  # serving.port is the stable endpoint
        assert first["url"] == first["front_url"] == front and ti.xcom[BENTO_ENDPOINT_XCOM_KEY] == front

        import shutil

        repo_copy = w.home / "repo_for_broken"
        shutil.copytree(w.feature_repo, repo_copy)
        broken = package_bento(
            MODEL_NAME, "champion", w.tracking_uri, str(repo_copy), FEATURE_SERVICE, FEATURES,
            str(w.inference_log), bentoml_home_dir=w.bentoml_home,
        )
        shutil.rmtree(repo_copy)  # the bento's service cannot start: no feature store
        with pytest.raises(DeploymentError, match="previous deployment keeps serving") as err:
            op(broken["bento_tag"]).execute({"ti": _TI()})  # type: ignore[arg-type]
        assert broken["bento_tag"] in str(err.value) and "Log " in str(err.value)  # the reason and where to look
        assert read_state(state_dir)["bento_tag"] == bento["bento_tag"]
        assert is_our_server(first["pid"])
        smoke = BentoSmokeTestOperator(task_id="smoke", url=first["url"], request={},  # the bento's own
                                       expected_bento_tag=bento["bento_tag"])
        assert smoke.execute({})["model_version"] == "1"  # type: ignore[arg-type]
        r = httpx.post(f"{front}/predict", json={"requests": [GOOD_REQUEST]}, timeout=30)
        assert r.status_code == 200 and r.json()[0]["model_version"] == "1"  # the front still routes to v1

        # the endpoint does not serve what the DAG believes it deployed: detected, not ignored
        stale = BentoSmokeTestOperator(task_id="smoke", url=first["url"], request=GOOD_REQUEST,
                                       expected_bento_tag=broken["bento_tag"])
        with pytest.raises(LiveVersionMismatch, match="silent rollback"):
            stale.execute({})  # type: ignore[arg-type]
    finally:
        stop_local(state_dir)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/__front__", timeout=2)  # the front stopped with the deployment


def _until(what: str, check: Callable[[], Any], bound: float, log_file: Path) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` (and the front's log) after ``bound``."""
    import time

    from mlops_provider.runtime.serving.process import log_tail

    deadline = time.monotonic() + bound
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not within {bound:.0f} s; front log:\n{log_tail(log_file)}")
        time.sleep(0.5)


def test_a_killed_local_server_comes_back_without_a_dag_run(
    serving_world: ServingWorld, bento: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The front supervises the served process: kill -9 the whole server (arbiter and workers), then only its
    arbiter (the workers it orphans keep answering until the restarted server takes over, then stop)."""
    import os
    import signal

    from conftest_serving import GOOD_REQUEST

    from mlops_provider.runtime.serving.process import alive, free_port, is_our_server, ready, worker_pids
    from mlops_provider.runtime.serving.targets.local import deploy_local, read_state, stop_local

    w = serving_world
    monkeypatch.setenv("MLOPS_SUPERVISE_INTERVAL_S", "0.5")  # the front inherits it
    state_dir = w.home / "state" / "supervised"
    port = free_port()
    front_log = state_dir / "logs" / f"front-{port}.log"
    try:
        first = deploy_local(bento["bento_tag"], port=port, state_dir=state_dir, timeout=150,
                             bentoml_home_dir=w.bentoml_home, drain_seconds=0)
        front = first["url"]
        arbiter = first["pid"]
        workers = worker_pids(arbiter)
        assert workers and read_state(state_dir)["restarts"] == 0
        for pid in [arbiter, *workers]:  # the whole server dies at once (an OOM kill, a crash)
            os.kill(pid, signal.SIGKILL)
        assert not is_our_server(arbiter)

        def back(previous: int) -> dict | None:
            st = read_state(state_dir) or {}
            return st if st.get("pid") not in (None, previous) and ready(front) else None

        st = _until("the endpoint answering again", lambda: back(arbiter), 240, front_log)
        assert st["bento_tag"] == bento["bento_tag"] and st["restarts"] == 1
        assert is_our_server(st["pid"], st["proc_start"]) and "is not running" in st["last_exit"]
        r = httpx.post(f"{front}/predict", json={"requests": [GOOD_REQUEST]}, timeout=60)
        assert r.status_code == 200 and r.json()[0]["model_version"] == "1"
        assert httpx.get(f"{front}/__front__", timeout=5).json()["supervisor"]["restarts"] == 1

        orphans = worker_pids(st["pid"])
        assert orphans
        os.kill(st["pid"], signal.SIGKILL)  # only the arbiter: its workers are orphaned, still serving
        st2 = _until("the second restart", lambda: back(st["pid"]), 240, front_log)
        assert st2["restarts"] == 2
        _until("the orphaned workers stopped", lambda: not any(alive(p) for p in orphans), 60, front_log)
        assert "Supervisor: " in front_log.read_text()  # the restarts are in the front's log
    finally:
        stopped = stop_local(state_dir)  # the front (and its supervisor) first, then the server
    assert stopped is not None and not is_our_server(stopped["pid"])
    assert read_state(state_dir) is None


def test_kubernetes_target_renders_validated_manifests_for_the_bento(serving_world: ServingWorld, bento: dict,
                                                                     tmp_path: Path) -> None:
    import yaml

    from mlops_provider.operators.bentoml import BentoDeployOperator
    from mlops_provider.runtime.serving.targets.kubernetes import validate_manifests

    op = BentoDeployOperator(
        task_id="deploy", bento_tag=bento["bento_tag"], state_dir=str(tmp_path), target="kubernetes",
        kubernetes={"namespace": "ml", "replicas": 2, "conn_id": "kubernetes_not_configured", "url": None},
    )
    result = op.execute({"ti": _TI()})  # type: ignore[arg-type]
    assert result["mode"] == "render-only" and result["url"] is None and result["target"] == "kubernetes"
    docs = list(yaml.safe_load_all(Path(result["manifests_path"]).read_text()))
    dep = validate_manifests(docs)[0]
    (container,) = dep.spec.template.spec.containers
    assert container.image == bento["bento_tag"]  # what `bentoml containerize` tags
    assert dep.spec.template.metadata.labels["mlops/model-version"] == "1"
    assert dep.metadata.namespace == "ml" and dep.metadata.name == "flights-delay-serving"
