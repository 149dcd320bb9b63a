"""Shared setup of the serving benchmark (not a benchmark itself).

- :func:`build_world`: a temp home with the serving tests' Feast repo (SQLite online store, a few
  materialized entities), a small **torch** model (``TabularTorchModel`` pyfunc, the training code's
  own ``log_model``) registered as ``flights_delay@champion`` in an MLflow sqlite registry, and the bento
  built by ``package_bento``.
- the **baseline**: ``python benchmarks/_serving_bench.py fastapi <bento_config.json> <port>`` serves a
  plain FastAPI + uvicorn app (one worker) that loads the same model from the BentoML store and runs the
  same :class:`~mlops_provider.runtime.serving.scorer.Scorer` (same time-correct Feast lookup, same inference
  log) once per HTTP request. Sync endpoint (FastAPI's thread pool), pydantic validation of the same generated
  request / response models.
"""

import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "provider"))
sys.path.insert(0, str(REPO / "tests" / "integration"))

MODEL_NAME = "flights_delay"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def register_torch_model(tracking_uri: str, artifacts: Path, features: dict[str, list[str]]) -> str:
    """A small (untrained, seeded) MLP logged with the training code's ``log_model``; @champion."""
    import mlflow
    import numpy as np
    import pandas as pd
    import torch
    from mlflow import MlflowClient

    from mlops_provider.runtime.training.model import Preprocessor, build_network
    from mlops_provider.runtime.training.tracking import log_model

    rng = np.random.default_rng(0)
    n = 500
    frame = pd.DataFrame({c: rng.normal(50, 20, n) for c in features["numeric"]})
    frame["origin"] = rng.choice(["JFK", "LGA", "EWR"], n)
    frame["carrier"] = rng.choice(["UA", "AA", "B6"], n)
    frame = frame[[*features["categorical"], *features["numeric"]]]
    pre = Preprocessor.fit(frame, features["categorical"], features["numeric"])
    torch.manual_seed(0)
    arch = {"name": "mlp"}
    net = build_network(arch, len(pre.numeric), pre.cardinalities)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name("serving_bench")
    exp_id = exp.experiment_id if exp else client.create_experiment("serving_bench", artifacts.as_uri())
    with mlflow.start_run(experiment_id=exp_id):
        info = log_model(net, pre, arch, frame)
    mv = mlflow.register_model(info.model_uri, MODEL_NAME)
    client.set_registered_model_alias(MODEL_NAME, "champion", mv.version)
    return str(mv.version)


def build_world(home: Path, serving: dict[str, Any] | None = None) -> dict[str, Any]:
    """Feast repo + torch model + bento under ``home``; returns paths and the package result."""
    from conftest_serving import FEATURE_SERVICE, FEATURES, build_feature_repo

    os.environ["MLOPS_HOME"] = str(home)
    os.environ["BENTOML_HOME"] = str(home / "bentoml")
    os.environ["BENTOML_DO_NOT_TRACK"] = "True"
    os.environ.setdefault("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")
    (home / "mlflow").mkdir(parents=True, exist_ok=True)
    tracking_uri = f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    repo = home / "feature_repo"
    build_feature_repo(repo)
    register_torch_model(tracking_uri, home / "mlflow" / "artifacts", FEATURES)
    from mlops_provider.runtime.serving.package import package_bento

    pkg = package_bento(
        MODEL_NAME,
        "champion",
        tracking_uri,
        str(repo),
        FEATURE_SERVICE,
        FEATURES,
        str(home / "inference_log" / MODEL_NAME),
        bentoml_home_dir=home / "bentoml",
        serving=serving,
    )
    bento_dir = home / "bentoml" / "bentos" / pkg["bento_tag"].replace(":", "/")
    return {
        "package": pkg,
        "config": bento_dir / "src" / "bento_config.json",
        "home": home,
        "log_dir": home / "inference_log" / MODEL_NAME,
    }


def make_fastapi_app(config_path: str, log_dir: str) -> Any:
    from typing import Annotated

    from fastapi import FastAPI
    from pydantic import BaseModel, Field

    from mlops_provider.runtime.serving.schema import build_models, load_service_config
    from mlops_provider.runtime.serving.scorer import Scorer

    cfg = load_service_config(config_path).model_copy(update={"inference_log_dir": log_dir})
    assert cfg.request_schema is not None
    models = build_models(cfg.request_schema, cfg.task)
    scorer = Scorer(cfg, models=models)
    scorer.warm_up()
    rows = Annotated[list[models.request], Field(min_length=1, max_length=cfg.limits.max_batch_rows)]  # type: ignore[name-defined]

    class Body(BaseModel):
        requests: rows  # type: ignore[valid-type]

    app = FastAPI(title="baseline")

    @app.post("/predict")
    def predict(body: Body) -> list[models.prediction]:  # type: ignore[name-defined]
        return scorer.score(body.requests)

    @app.get("/readyz")
    def readyz() -> dict[str, bool]:
        return {"ready": scorer.ready}

    return app


if __name__ == "__main__":
    if sys.argv[1] == "fastapi":
        import uvicorn

        config, port, log_dir = sys.argv[2], int(sys.argv[3]), sys.argv[4]
        uvicorn.run(
            make_fastapi_app(config, log_dir),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
            workers=1,
        )
    else:
        print(json.dumps({"error": f"unknown command {sys.argv[1:]}"}))
        sys.exit(2)
