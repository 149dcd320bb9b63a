"""Serving end to end on real libraries: MLflow sqlite registry -> BentoML store -> bento ->
``bentoml serve`` behind the stable local endpoint -> HTTP predictions -> inference log; blue/green redeploy
on the SAME URL and a failed deployment that leaves the previous one serving."""

from __future__ import annotations

import random
import shutil
import socket

import httpx
import pytest
from conftest_serving import (
    FEATURE_SERVICE,
    FEATURES,
    GOOD_REQUEST,
    MODEL_NAME,
    ServingWorld,
    register_model,
    serving_world_fixture,  # noqa: F401 - the `serving_world` fixture
)

from mlops_provider.exceptions import ConfigError, DeploymentError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _free_port_pair() -> int:
    """A port p such that p and p + 1 are both free on loopback."""
    for _ in range(200):
        p = random.randint(20000, 40000)
        ok = True
        for q in (p, p + 1):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", q))
                except OSError:
                    ok = False
        if ok:
            return p
    raise RuntimeError("no free port pair")


def _package(world: ServingWorld, **kw: object) -> dict:
    from mlops_provider.runtime.serving.package import package_bento

    args = dict(
        model_name=MODEL_NAME, alias="champion", mlflow_tracking_uri=world.tracking_uri,
        feature_repo=str(world.feature_repo), feature_service=FEATURE_SERVICE, features=FEATURES,
        inference_log_dir=str(world.inference_log), bentoml_home_dir=world.bentoml_home,
    )
    args.update(kw)
    return package_bento(**args)  # type: ignore[arg-type]


def _alive(pid: int) -> bool:
    from mlops_provider.runtime.serving.process import is_our_server

    return is_our_server(pid)


def test_package_is_idempotent(serving_world: ServingWorld) -> None:
    first = _package(serving_world)
    assert first["model_tag"] == f"{MODEL_NAME}:v1"
    assert first["bento_tag"].startswith(f"{MODEL_NAME}_service:v1-")
    second = _package(serving_world)
    assert second["bento_tag"] == first["bento_tag"]
    assert second["bento_created"] is False and second["model_created"] is False
    bentos = list((serving_world.bentoml_home / "bentos" / f"{MODEL_NAME}_service").iterdir())
    assert len([b for b in bentos if b.name != "latest"]) == 1
    bento_dir = serving_world.bentoml_home / "bentos" / f"{MODEL_NAME}_service" / first["bento_tag"].split(":")[1]
    reqs = (bento_dir / "env" / "python" / "requirements.txt").read_text()
    assert "bentoml==" in reqs and "feast==" in reqs and "mlflow==" in reqs


def test_a_bad_feature_service_or_smoke_request_fails_packaging(serving_world: ServingWorld) -> None:
    with pytest.raises(ConfigError, match="no_such_service"):
        _package(serving_world, feature_service="no_such_service")
    with pytest.raises(ConfigError, match="smoke_request does not fit.*'month'"):
        _package(serving_world, serving={"smoke_request": {**GOOD_REQUEST, "month": "june"}})


def test_deploy_predict_log_blue_green_and_failed_deploy(serving_world: ServingWorld) -> None:
    from mlops_provider.runtime.serving.checks import smoke_test
    from mlops_provider.runtime.serving.inference_log import read_inference_log
    from mlops_provider.runtime.serving.process import descendants, stop_server
    from mlops_provider.runtime.serving.targets.local import deploy_local, read_state, stop_local

    world = serving_world
    port = _free_port_pair()
    stable = f"http://127.0.0.1:{port}"
    v1 = _package(world)
    pids: list[int] = []
    try:
        dep = deploy_local(v1["bento_tag"], port=port, state_dir=world.state_dir, timeout=150,
                           bentoml_home_dir=world.bentoml_home)
        pids.append(dep["pid"])
        url = dep["url"]
        assert dep["changed"] is True and url == stable == dep["front_url"]  # serving.port is the stable front
        assert dep["backend_url"] != stable and dep["port"] != port  # the server itself: a free loopback port
        assert httpx.get(f"{url}/readyz", timeout=5).status_code == 200

        # good requests: one with all features online, one with unknown entities (NaN features)
        unknown = {**GOOD_REQUEST, "origin": "ZZZ", "carrier": "QQ", "tailnum": "N0NE", "request_id": "r-2"}
        r = httpx.post(f"{url}/predict", json={"requests": [GOOD_REQUEST, unknown]}, timeout=30)
        assert r.status_code == 200, r.text
        body = r.json()
        assert [set(b) for b in body] == [{"request_id", "model_version", "probability", "prediction"}] * 2
        assert body[1]["request_id"] == "r-2" and body[0]["model_version"] == "1"
        assert all(0.0 <= b["probability"] <= 1.0 for b in body)
        assert body[0]["prediction"] == int(body[0]["probability"] >= 0.5)

        # bad requests -> 4xx, never 500
        bad_bodies = [
            {"requests": [{**GOOD_REQUEST, "month": "june"}]},
            {"requests": [{k: v for k, v in GOOD_REQUEST.items() if k != "origin"}]},
            {"requests": [{**GOOD_REQUEST, "unexpected": 1}]},
            {"requests": [{**GOOD_REQUEST, "distance": "1400"}]},
            {"requests": {"origin": "JFK"}},
            {"wrong": []},
        ]
        for bad in bad_bodies:
            rb = httpx.post(f"{url}/predict", json=bad, timeout=30)
            assert 400 <= rb.status_code < 500, (bad, rb.status_code, rb.text)
        rb = httpx.post(f"{url}/predict", content=b"{not json", headers={"content-type": "application/json"})
        assert 400 <= rb.status_code < 500

        health = httpx.post(f"{url}/health", json={}, timeout=10).json()
        assert health["bento_tag"] == v1["bento_tag"] and health["model_version"] == "1"
        assert httpx.get(f"{url}/metrics", timeout=10).status_code == 200

        # the inference log holds exactly the two good predictions, with the raw feature columns
        frame = read_inference_log(world.inference_log)
        assert len(frame) == 2
        assert set(frame["request_id"]) >= {"r-2"} and set(frame["traffic"]) == {"live"}
        for col in [*FEATURES["categorical"], *FEATURES["numeric"], "tailnum", "probability", "prediction",
                    "bento_tag", "__age_s__temp"]:
            assert col in frame.columns, col
        known = frame[frame["origin"] == "JFK"].iloc[0]
        assert known["temp"] == 0.0 and known["carrier_flights_7d"] == 2.0 and known["sched_dep_hour"] == 17
        assert 1700 < known["__age_s__temp"] < 3 * 3600  # materialized 30 minutes ago
        assert frame[frame["origin"] == "ZZZ"]["temp"].isna().all()

        # same tag again: no-op
        again = deploy_local(v1["bento_tag"], port=port, state_dir=world.state_dir, timeout=150,
                             bentoml_home_dir=world.bentoml_home)
        assert again["changed"] is False and again["pid"] == dep["pid"] and again["url"] == stable

        # a bento whose feature repo is gone fails readiness: v1 keeps serving
        repo_copy = world.home / "repo_copy"
        shutil.copytree(world.feature_repo, repo_copy)
        broken = _package(world, feature_repo=str(repo_copy), inference_log_dir=str(world.home / "broken_log"))
        shutil.rmtree(repo_copy)
        assert broken["bento_tag"] != v1["bento_tag"]
        with pytest.raises(DeploymentError, match="previous deployment keeps serving"):
            deploy_local(broken["bento_tag"], port=port, state_dir=world.state_dir, timeout=150,
                         bentoml_home_dir=world.bentoml_home)
        assert read_state(world.state_dir)["bento_tag"] == v1["bento_tag"]
        assert _alive(dep["pid"])
        assert smoke_test(url, GOOD_REQUEST)["model_version"] == "1"

        # a new champion: blue/green behind the SAME url, the old server is stopped afterwards
        register_model(world.tracking_uri, world.home / "mlflow" / "artifacts", world.home)
        v2 = _package(world)
        assert v2["model_version"] == "2" and v2["model_tag"] == f"{MODEL_NAME}:v2"
        dep2 = deploy_local(v2["bento_tag"], port=port, state_dir=world.state_dir, timeout=150,
                            bentoml_home_dir=world.bentoml_home, smoke_request=GOOD_REQUEST)
        pids.append(dep2["pid"])
        assert dep2["url"] == stable and dep2["backend_url"] != dep["backend_url"]
        assert dep2["previous"]["bento_tag"] == v1["bento_tag"]
        assert not _alive(dep["pid"])
        answer = smoke_test(stable, GOOD_REQUEST)  # the configured port answers the new champion
        assert answer["model_version"] == "2"
        assert httpx.post(f"{stable}/health", json={}, timeout=10).json()["bento_tag"] == v2["bento_tag"]
        logged = read_inference_log(world.inference_log)
        assert set(logged["model_version"]) == {"1", "2"}
        smoke = logged[logged["request_id"].str.startswith("smoke-")]
        assert len(smoke) >= 3 and set(smoke["traffic"]) == {"smoke"}  # pre-switch check + the two above
    finally:
        stop_local(world.state_dir)
        for pid in pids:  # belt and braces: never leave a server behind
            stop_server(pid, timeout=10)
    assert not any(_alive(p) for p in pids)
    assert not any(descendants(p) for p in pids)
    assert read_state(world.state_dir) is None
    with pytest.raises(DeploymentError):
        smoke_test(stable, GOOD_REQUEST, timeout=2)
