"""The bento service, end to end on real libraries, in one module (one Feast + MLflow world).

1. Over real HTTP: one ``bentoml serve`` of a bento with a split experiment on a free loopback port, its
   request schema generated from the feature service and the example YAML's ``serving.request``.
   API contract (OpenAPI named after the model, model version, readiness, metrics, pinned requirements,
   batch scoring), every kind of bad input (4xx with a message, never 5xx, no traceback in the log, the
   server stays up), traffic classes in the log, sticky champion/challenger routing with both predictions
   in the parquet inference log. (The schemathesis run is ``test_service_openapi.py``.)
2. No training-serving skew: the same raw input gives identical model inputs through the training path
   (``build_training_dataset`` point-in-time join -> snapshot -> ``Preprocessor.transform``) and the
   serving path (``Scorer.lookup`` on the Feast online store -> the pyfunc's ``Preprocessor.transform``),
   and the served torch pyfunc returns exactly the trained network's probabilities.
3. The scoring core in shadow mode (no server).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
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

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

LIMITS = {"max_batch_rows": 8, "max_scoring_rows": 40, "max_body_bytes": 16_384, "scoring_chunk_rows": 16}
REPO = Path(__file__).resolve().parents[2]


def example_serving(**changes: object) -> dict:
    """The example YAML's ``serving`` section (its request limits), with ``changes``."""
    from mlops_provider.config import load_config

    return {**load_config(REPO / "dags" / "flights_delay.yaml").serving.model_dump(), **changes}


@dataclass
class Live:
    url: str
    package: dict
    log_dir: Path
    proc: subprocess.Popen
    bentoml_home: Path
    server_log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def live(serving_world: ServingWorld) -> Iterator[Live]:
    from mlops_provider.runtime.serving.package import package_bento
    from mlops_provider.runtime.serving.process import stop_server, wait_ready

    world = serving_world
    register_model(world.tracking_uri, world.home / "mlflow" / "artifacts", world.home, alias="challenger")
    log_dir = world.home / "inference_log_http" / MODEL_NAME
    pkg = package_bento(
        MODEL_NAME,
        "champion",
        world.tracking_uri,
        str(world.feature_repo),
        FEATURE_SERVICE,
        FEATURES,
        str(log_dir),
        bentoml_home_dir=world.bentoml_home,
        challenger_alias="challenger",
        experiment={"mode": "split", "share": 0.5, "route_by": ["tailnum"]},
        limits=LIMITS,
        log_flush_interval_s=0.5,
        serving=example_serving(),
    )
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server_log = world.home / f"serve-{port}.log"
    env = {**os.environ, "BENTOML_HOME": str(world.bentoml_home), "BENTOML_DO_NOT_TRACK": "True"}
    env.pop("MLOPS_BENTO_CONFIG", None)
    with open(server_log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bentoml",
                "serve",
                pkg["bento_tag"],
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=str(world.home),
            start_new_session=True,
        )
    try:
        # the deploy path's own wait: raises with the log tail on exit, startup failure or timeout
        wait_ready(proc, url, server_log, 0, 150, pkg["bento_tag"], consequence="the test server is gone")
        yield Live(url=url, package=pkg, log_dir=log_dir, proc=proc, bentoml_home=world.bentoml_home,
                   server_log=server_log)
    finally:
        stop_server(proc.pid, timeout=20)


def _post(live: Live, path: str, **kw: object) -> httpx.Response:
    return httpx.post(f"{live.url}{path}", timeout=30, **kw)  # type: ignore[arg-type]


def _alive(live: Live) -> None:
    assert live.proc.poll() is None
    assert httpx.get(f"{live.url}/readyz", timeout=5).status_code == 200
    r = _post(live, "/predict", json={"requests": [GOOD_REQUEST]})
    assert r.status_code == 200, r.text


# ---------------------------------------------------------------------------------------- contract
def test_contract_openapi_health_metrics(live: Live) -> None:
    spec = httpx.get(f"{live.url}/docs.json", timeout=10).json()
    assert {"/predict", "/score_batch", "/health"} <= set(spec["paths"])
    schemas = spec["components"]["schemas"]
    request = schemas["FlightsDelayRequest"]  # named after the model, generated from its feature service
    assert request["additionalProperties"] is False
    assert set(request["required"]) == {"origin", "carrier", "tailnum", "sched_dep_hour", "weekday", "month",
                                        "distance"}
    assert request["properties"]["sched_dep_hour"]["maximum"] == 23  # the YAML's limit
    assert request["properties"]["origin"]["pattern"] == "^[A-Z0-9]{3,4}$"
    assert request["properties"]["event_timestamp"]["format"] == "date-time"
    assert set(schemas["FlightsDelayPrediction"]["properties"]) == {"request_id", "model_version", "probability",
                                                                    "prediction"}
    op = spec["paths"]["/predict"]["post"]
    assert op["requestBody"]["required"] is True and "503" in op["responses"] and "422" in op["responses"]
    assert schemas["BadRequest"]["properties"]["detail"]["type"] == "array"
    for probe in ("/healthz", "/livez", "/readyz"):
        assert httpx.get(f"{live.url}{probe}", timeout=5).status_code == 200
    info = _post(live, "/health", json={}).json()
    assert info["status"] == "ok" and info["bento_tag"] == live.package["bento_tag"]
    assert info["model_version"] == "1" and info["experiment"]["challenger_version"] == "2"
    assert info["limits"]["max_batch_rows"] == 8 and info["task"]["type"] == "binary"
    body = _post(
        live, "/predict", json={"requests": [GOOD_REQUEST, {**GOOD_REQUEST, "tailnum": "N24211"}]}
    ).json()
    assert len(body) == 2 and all(b["model_version"] in {"1", "2"} for b in body)
    assert all(b["prediction"] == int(b["probability"] >= 0.5) for b in body)
    # pinned, minimal requirements: every line pinned; nothing the service does not import
    name, version = live.package["bento_tag"].split(":")
    reqs = (live.bentoml_home / "bentos" / name / version / "env" / "python" / "requirements.txt").read_text()
    lines = [ln.strip() for ln in reqs.splitlines() if ln.strip() and not ln.startswith("#")]
    assert lines and all("==" in ln for ln in lines), lines
    names = {ln.split("==")[0].lower() for ln in lines}
    assert {"bentoml", "feast", "mlflow", "pandas", "numpy", "pyarrow", "pydantic"} <= names
    assert not names & {"apache-airflow", "torch", "boto3", "evidently", "scikit-learn"}, names
    metrics = httpx.get(f"{live.url}/metrics", timeout=10).text
    for name in ("mlops_feature_lookup_seconds", "mlops_predictions_total", "mlops_feature_age_seconds_bucket"):
        assert name in metrics, name
    assert 'view="origin_weather_hourly"' in metrics


def test_batch_scoring_endpoint(live: Live) -> None:
    rows = [{**GOOD_REQUEST, "tailnum": f"N{i}", "request_id": f"b-{i}"} for i in range(40)]
    r = _post(live, "/score_batch", json={"rows": rows})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["rows"] == 40 and out["bento_tag"] == live.package["bento_tag"]
    assert [p["request_id"] for p in out["predictions"]] == [f"b-{i}" for i in range(40)]
    r = _post(live, "/score_batch", json={"rows": [*rows, rows[0]]})  # 41 > max_scoring_rows
    assert r.status_code == 400 and "at most 40" in r.text


# ---------------------------------------------------------------------------------------- bad input
BAD_JSON_BODIES = {
    "wrong type": {"requests": [{**GOOD_REQUEST, "month": "june"}]},
    "coerced number": {"requests": [{**GOOD_REQUEST, "month": "6"}]},
    "coerced float": {"requests": [{**GOOD_REQUEST, "month": 6.0}]},
    "coerced bool": {"requests": [{**GOOD_REQUEST, "distance": False}]},
    "wrong type (list)": {"requests": [{**GOOD_REQUEST, "distance": [1]}]},
    "wrong container": {"requests": {"origin": "JFK"}},
    "missing field": {"requests": [{k: v for k, v in GOOD_REQUEST.items() if k != "carrier"}]},
    "missing body field": {"wrong": []},
    "unknown field": {"requests": [{**GOOD_REQUEST, "unexpected": 1}]},
    "out of range": {"requests": [{**GOOD_REQUEST, "sched_dep_hour": 24}]},
    "string too long": {"requests": [{**GOOD_REQUEST, "request_id": "x" * 129}]},
    "string pattern": {"requests": [{**GOOD_REQUEST, "tailnum": "N1'; DROP"}]},
    "bad event time": {"requests": [{**GOOD_REQUEST, "event_timestamp": "yesterday"}]},
    "empty batch": {"requests": []},
    "oversized batch": {"requests": [GOOD_REQUEST] * 9},
    "null": None,
    "array body": [GOOD_REQUEST],
}


@pytest.mark.parametrize("case", sorted(BAD_JSON_BODIES))
def test_bad_json_is_a_4xx_with_a_message(live: Live, case: str) -> None:
    r = _post(live, "/predict", json=BAD_JSON_BODIES[case])
    assert r.status_code == 400, (case, r.status_code, r.text)
    assert r.json()["error"] and isinstance(r.json()["detail"], list)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"requests": [{"origin": "JFK", ',  # malformed JSON
        b"\xff\xfe not utf-8",
        b"",
        b'{"requests": [{"origin": "JFK", "carrier": "UA", "tailnum": "N1", "sched_dep_hour": 1, "weekday": 1, '
        b'"month": 1, "distance": NaN}]}',
        b'{"requests": [{"origin": "JFK", "carrier": "UA", "tailnum": "N1", "sched_dep_hour": 1, "weekday": 1, '
        b'"month": 1, "distance": Infinity}]}',
        b'{"requests": [{"origin": "JFK", "carrier": "UA", "tailnum": "N1", "sched_dep_hour": 1, "weekday": 1, '
        b'"month": 1, "distance": 1e999}]}',
        b'{"requests": [{"origin": "JFK", "carrier": "UA", "tailnum": "N1", "sched_dep_hour": '
        + b"9" * 4000
        + b', "weekday": 1, "month": 1, "distance": 5}]}',
        b'{"requests": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    ],
    ids=["malformed", "not-utf8", "empty", "nan", "inf", "overflow", "huge-int", "deep-nesting"],
)
def test_bad_bytes_are_a_400(live: Live, raw: bytes) -> None:
    r = _post(live, "/predict", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400, (raw, r.status_code, r.text)
    assert r.json()["error"]


def test_huge_body_wrong_type_and_method(live: Live) -> None:
    huge = b'{"requests": [' + b'{"origin": "JFK"},' * 5000 + b"{}]}"
    r = _post(live, "/predict", content=huge, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "exceeds the limit" in r.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: streamed
        for _ in range(100):
            yield b" " * 1024

    r = _post(live, "/predict", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = _post(
        live, "/predict", content=b"origin=JFK", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert r.status_code == 415 and "application/json" in r.json()["error"]
    r = _post(live, "/predict", files={"f": ("a.bin", b"123")})
    assert r.status_code == 415
    assert httpx.get(f"{live.url}/predict", timeout=10).status_code == 405
    _alive(live)


def test_client_errors_log_no_traceback(live: Live) -> None:
    """A 4xx is logged (access log) but never with a traceback; the server log stays readable."""
    log_file = live.server_log
    before = log_file.stat().st_size
    for body in BAD_JSON_BODIES.values():
        _post(live, "/predict", json=body)
    _post(live, "/score_batch", json={"rows": [{"x": 1}]})
    import time

    time.sleep(1.0)
    with open(log_file, "rb") as fh:
        fh.seek(before)
        text = fh.read().decode(errors="replace")
    assert "status=400" in text and "Traceback" not in text and "[ERROR]" not in text


def test_traffic_classes_are_logged(live: Live) -> None:
    from mlops_provider.runtime.serving.inference_log import read_inference_log

    for traffic in ("live", "smoke", "shadow"):
        r = _post(live, "/predict", json={"requests": [{**GOOD_REQUEST, "request_id": f"tr-{traffic}"}]},
                  headers={"X-Mlops-Traffic": traffic})
        assert r.status_code == 200, r.text
    r = _post(live, "/predict", json={"requests": [{**GOOD_REQUEST, "request_id": "tr-none"}]})
    assert r.status_code == 200
    r = _post(live, "/predict", json={"requests": [GOOD_REQUEST]}, headers={"X-Mlops-Traffic": "production"})
    assert r.status_code == 400 and "X-Mlops-Traffic" in r.json()["error"]
    frame = read_inference_log(live.log_dir)
    got = frame[frame["request_id"].str.startswith("tr-")].set_index("request_id")["traffic"].to_dict()
    assert got == {"tr-live": "live", "tr-smoke": "smoke", "tr-shadow": "shadow", "tr-none": "live"}


def test_unknown_entity_gets_the_defined_fallback(live: Live) -> None:
    from mlops_provider.runtime.serving.inference_log import read_inference_log

    unknown = {**GOOD_REQUEST, "origin": "ZZZ", "carrier": "QQ", "tailnum": "N0NE", "request_id": "unk-1"}
    r = _post(live, "/predict", json={"requests": [unknown]})
    assert r.status_code == 200, r.text
    assert 0.0 <= r.json()[0]["probability"] <= 1.0
    frame = read_inference_log(live.log_dir)
    row = frame[frame["request_id"] == "unk-1"].iloc[0]
    assert row["unknown_entities"] == "origin,carrier,tailnum" and row["stale_features"] == ""
    assert row["missing_features"] == len(FEATURES["numeric"]) - 4  # all but the request-time fields
    assert row["traffic"] == "live" and np.isnan(row["__age_s__temp"])
    assert "mlops_unknown_entity_total" in httpx.get(f"{live.url}/metrics", timeout=10).text


# ---------------------------------------------------------------------------------------- experiment
def test_split_routing_is_sticky_and_both_variants_are_logged(live: Live) -> None:
    from mlops_provider.runtime.serving.experiments import compare_variants
    from mlops_provider.runtime.serving.inference_log import read_inference_log

    seen: dict[str, set[str]] = {}
    for rep in range(2):
        reqs = [{**GOOD_REQUEST, "tailnum": f"T{i}", "request_id": f"exp-{rep}-{i}"} for i in range(8)]
        for _ in range(3):
            for p, req in zip(_post(live, "/predict", json={"requests": reqs}).json(), reqs, strict=True):
                seen.setdefault(req["tailnum"], set()).add(p["model_version"])
    assert all(len(v) == 1 for v in seen.values()), seen  # sticky per entity
    assert {next(iter(v)) for v in seen.values()} == {"1", "2"}  # both variants answer at share 0.5
    frame = read_inference_log(live.log_dir)
    exp = frame[frame["request_id"].str.startswith("exp-")]
    assert set(exp["variant"]) == {"champion", "challenger"}
    champ = exp[exp["variant"] == "champion"]
    assert (champ["model_version"] == "1").all() and champ["champion_prediction"].notna().all()
    assert champ["challenger_prediction"].isna().all()
    chall = exp[exp["variant"] == "challenger"]
    assert (chall["probability"] == chall["challenger_prediction"]).all() and (
        chall["challenger_version"] == "2"
    ).all()
    summary = compare_variants(exp)
    assert set(summary["variants"]) == {"champion", "challenger"}


# ---------------------------------------------------------------------------------------- no skew
RAW = [  # raw inputs: known entities, a partly unknown and a fully unknown one
    {
        "origin": "JFK",
        "carrier": "UA",
        "tailnum": "N14228",
        "sched_dep_hour": 17,
        "weekday": 4,
        "month": 6,
        "distance": 1400.0,
    },
    {
        "origin": "LGA",
        "carrier": "AA",
        "tailnum": "N24211",
        "sched_dep_hour": 6,
        "weekday": 0,
        "month": 1,
        "distance": 762.0,
    },
    {
        "origin": "EWR",
        "carrier": "B6",
        "tailnum": "NZZZZ",
        "sched_dep_hour": 23,
        "weekday": 6,
        "month": 12,
        "distance": 2475.0,
    },
    {
        "origin": "ZZZ",
        "carrier": "QQ",
        "tailnum": "N0NE",
        "sched_dep_hour": 0,
        "weekday": 3,
        "month": 7,
        "distance": 17.0,
    },
]


def _config(world: ServingWorld, log_dir: Path, **kw: object):
    from mlops_provider.runtime.serving.schema import ServiceConfig

    return ServiceConfig(
        model_name=MODEL_NAME,
        model_tag="unused:v1",
        model_version="1",
        feature_repo=str(world.feature_repo),
        feature_service=FEATURE_SERVICE,
        categorical=FEATURES["categorical"],
        numeric=FEATURES["numeric"],
        inference_log_dir=str(log_dir),
        log_flush_interval_s=0,
        **kw,
    )


@pytest.fixture(scope="module")
def training_frame(serving_world: ServingWorld, tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """The RAW rows through the training dataset code (point-in-time join + snapshot), read back."""
    from feast import FeatureStore

    from mlops_provider.runtime.features.dataset import build_training_dataset
    from mlops_provider.runtime.features.snapshot import load_snapshot

    tmp = tmp_path_factory.mktemp("skew")
    now = datetime.now(UTC)
    labels = pd.DataFrame(RAW)
    labels["event_timestamp"] = now - timedelta(minutes=1)
    old = labels.copy()  # the time split needs a train side: the same rows 5 days earlier (features expired)
    old["event_timestamp"] = now - timedelta(days=5)
    frame = pd.concat([labels, old], ignore_index=True)
    frame["arr_delayed"] = [0, 1] * (len(frame) // 2)
    (tmp / "labels").mkdir()
    frame.to_parquet(tmp / "labels" / "part-0.parquet")
    # the same repo with the project's row-preserving offline store (as feature_repo/feature_store.yaml uses)
    repo = tmp / "repo"
    shutil.copytree(serving_world.feature_repo, repo)
    with open(repo / "feature_store.yaml", "a") as fh:
        fh.write("offline_store:\n  type: mlops_provider.runtime.features.offline_store.PointInTimeFileOfflineStore\n")
    store = FeatureStore(repo_path=str(repo))
    out = build_training_dataset(
        store,
        feature_service=FEATURE_SERVICE,
        labels_dir=str(tmp / "labels"),
        label="arr_delayed",
        snapshot_root=str(tmp / "snapshots"),
        validation_days=1,
    )
    snap, _ = load_snapshot(out["path"])
    recent = snap[snap["split"] == "validation"]
    key = ["origin", "carrier", "tailnum"]
    order = pd.DataFrame(RAW)[key].merge(recent, on=key, how="left")
    assert len(order) == len(RAW)
    return order


@pytest.fixture(scope="module")
def scorer(serving_world: ServingWorld, tmp_path_factory: pytest.TempPathFactory):
    import mlflow

    from mlops_provider.runtime.serving.scorer import Scorer

    mlflow.set_tracking_uri(serving_world.tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@champion")
    s = Scorer(_config(serving_world, tmp_path_factory.mktemp("log")), load_model=lambda tag: model.predict)
    yield s
    s.close()


def _requests(scorer, raws: list[dict]) -> list:
    import json

    return [scorer.models.request.model_validate_json(json.dumps(r)) for r in raws]


def test_training_and_serving_features_are_identical(training_frame: pd.DataFrame, scorer) -> None:
    from mlops_provider.runtime.training.model import Preprocessor

    served, _ = scorer.lookup(_requests(scorer, RAW))
    cols = [*FEATURES["categorical"], *FEATURES["numeric"]]
    trained = training_frame[cols].reset_index(drop=True)
    # raw values: same numbers (NaN where the entity is unknown), same categories
    pd.testing.assert_frame_equal(served.reset_index(drop=True), trained, check_dtype=False)
    assert served.loc[3, ["temp", "carrier_flights_7d", "plane_year"]].isna().all()
    assert served.loc[2, "plane_year"] != served.loc[2, "plane_year"]  # NZZZZ: plane unknown, rest known
    assert not np.isnan(served.loc[2, "temp"])
    # model inputs: the one Preprocessor.transform of training applied to both
    pre = Preprocessor.fit(training_frame.iloc[:3], FEATURES["categorical"], FEATURES["numeric"])
    pre = Preprocessor.from_json(pre.to_json())  # as the pyfunc reloads it from its artifact
    n_train, c_train = pre.transform(trained)
    n_served, c_served = pre.transform(served)
    np.testing.assert_array_equal(n_served, n_train)
    np.testing.assert_array_equal(c_served, c_train)
    assert c_served[3].tolist() == [0, 0]  # unknown categories -> OOV bucket


def test_served_torch_pyfunc_equals_the_trained_network(
    training_frame: pd.DataFrame, scorer, tmp_path: Path
) -> None:
    import json

    import mlflow
    import torch

    from mlops_provider.runtime.training.model import Preprocessor, build_network, predict_proba
    from mlops_provider.runtime.training.tracking import log_model as _log_model

    cols = [*FEATURES["categorical"], *FEATURES["numeric"]]
    pre = Preprocessor.fit(training_frame, FEATURES["categorical"], FEATURES["numeric"])
    torch.manual_seed(0)
    net = build_network({"name": "mlp"}, len(pre.numeric), pre.cardinalities)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'm.db'}")
    exp = mlflow.create_experiment("skew", artifact_location=(tmp_path / "a").as_uri())
    with mlflow.start_run(experiment_id=exp):
        info = _log_model(net, pre, {"name": "mlp"}, training_frame[cols])
    pyfunc = mlflow.pyfunc.load_model(info.model_uri)
    served, _ = scorer.lookup(_requests(scorer, RAW))
    got = np.asarray(pyfunc.predict(served), dtype="float64")
    want = predict_proba(net, pre, training_frame[cols])
    np.testing.assert_array_equal(got, want)
    assert json.loads(json.dumps(got.tolist()))  # finite, JSON-able


def test_shadow_mode_answers_with_champion_and_logs_both(serving_world: ServingWorld, tmp_path: Path) -> None:
    from mlops_provider.runtime.serving.experiments import ExperimentSpec, compare_variants
    from mlops_provider.runtime.serving.inference_log import read_inference_log
    from mlops_provider.runtime.serving.scorer import Scorer

    def champion(frame: pd.DataFrame) -> np.ndarray:
        return np.full(len(frame), 0.25)

    def challenger(frame: pd.DataFrame) -> np.ndarray:
        return np.full(len(frame), 0.75)

    models = {"champ:v1": champion, "chall:v2": challenger}
    spec = ExperimentSpec(mode="shadow", challenger_tag="chall:v2", challenger_version="2")
    cfg = _config(serving_world, tmp_path / "log", experiment=spec).model_copy(
        update={"model_tag": "champ:v1"}
    )
    s = Scorer(cfg, load_model=models.__getitem__)
    try:
        out = s.score(_requests(s, [{**r, "request_id": f"s{i}"} for i, r in enumerate(RAW)]))
    finally:
        s.close()
    assert [p.probability for p in out] == [0.25] * 4 and {p.model_version for p in out} == {"1"}
    frame = read_inference_log(tmp_path / "log")
    assert list(frame["variant"]) == ["champion"] * 4
    assert (frame["champion_prediction"] == 0.25).all() and (frame["challenger_prediction"] == 0.75).all()
    assert set(frame["unknown_entities"]) == {"", "tailnum", "origin,carrier,tailnum"}
    assert compare_variants(frame)["paired"] == {"rows": 4, "mean_abs_diff": 0.5, "agreement_at_0_5": 0.0}
