"""BentoML 1.4 service template: online features from Feast -> MLflow pyfunc -> inference log.

:func:`mlops_provider.runtime.serving.package_bento` bundles this module (with the rest of the
``mlops_provider`` package) into a bento together with a small JSON config, ``bento_config.json``,
at the root of the bento's ``src/`` directory. Nothing in this module is specific to one model:
the model tag, feature service, feature repo and the column lists all come from that config.

Config resolution (first hit wins):

1. ``$MLOPS_BENTO_CONFIG`` (path to a JSON file), else ``bento_config.json`` next to the bundled
   package (``src/bento_config.json``), else ``./bento_config.json``;
2. per-deployment overrides from the environment (paths differ between the build host and
   a container): ``MLOPS_FEATURE_REPO``, ``MLOPS_INFERENCE_LOG_DIR``, ``MLOPS_DELAY_THRESHOLD``.

Config keys: ``model_name``, ``model_tag`` (BentoML store tag, e.g. ``flights_delay:v3``),
``model_version`` (MLflow version), ``bento_tag``, ``feature_repo``, ``feature_service``,
``categorical`` / ``numeric`` (the raw feature columns the model was trained on, in order),
``request_fields`` (request-time fields passed to Feast in the entity rows), ``inference_log_dir``,
``threshold`` (probability above which ``delayed`` is true).

Endpoints (HTTP POST, JSON): ``/predict`` (batchable; body ``{"requests": [{...}, ...]}``) and
``/health``; BentoML adds ``/readyz`` (200 once the model and the feature store are loaded),
``/livez`` and ``/metrics``. Invalid requests are answered with 400 and the pydantic error list.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlops_provider.exceptions import ConfigError
from mlops_provider.runtime.inference_log import InferenceLogWriter

log = logging.getLogger(__name__)

CONFIG_FILE = "bento_config.json"
ENV_CONFIG = "MLOPS_BENTO_CONFIG"
ENV_OVERRIDES = {
    "MLOPS_FEATURE_REPO": "feature_repo",
    "MLOPS_INFERENCE_LOG_DIR": "inference_log_dir",
    "MLOPS_DELAY_THRESHOLD": "threshold",
}
#: Entity keys of the example model, always passed to Feast and logged.
ENTITY_KEYS = ("origin", "carrier", "tailnum")


class ServiceConfig(BaseModel):
    """The JSON config bundled in the bento (written by ``package_bento``)."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    model_name: str
    model_tag: str
    model_version: str
    bento_tag: str = ""
    feature_repo: str
    feature_service: str
    categorical: list[str]
    numeric: list[str]
    request_fields: list[str] = Field(default_factory=lambda: ["sched_dep_hour", "weekday", "month", "distance"])
    inference_log_dir: str
    threshold: float = Field(0.5, ge=0.0, le=1.0)

    @property
    def raw_columns(self) -> list[str]:
        return [*self.categorical, *self.numeric]


def config_path() -> Path:
    """Where the service reads its config (see module docstring)."""
    if os.environ.get(ENV_CONFIG):
        return Path(os.environ[ENV_CONFIG])
    bundled = Path(__file__).resolve().parents[2] / CONFIG_FILE
    if bundled.is_file():
        return bundled
    return Path.cwd() / CONFIG_FILE


def load_service_config(path: str | os.PathLike[str] | None = None) -> ServiceConfig:
    """Read the bundled config and apply the environment overrides."""
    p = Path(path) if path else config_path()
    if not p.is_file():
        raise ConfigError(
            f"Bento service config {p} not found. Build the bento with "
            f"mlops_provider.runtime.serving.package_bento, or point ${ENV_CONFIG} at a config JSON."
        )
    data: dict[str, Any] = json.loads(p.read_text(encoding="utf-8"))
    for env, key in ENV_OVERRIDES.items():
        if os.environ.get(env):
            data[key] = os.environ[env]
    return ServiceConfig.model_validate(data)


# ---------------------------------------------------------------------------- request / response
class FlightRequest(BaseModel):
    """One prediction request. Unknown fields are rejected (a typo must not silently become NaN)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    origin: str = Field(min_length=3, max_length=4, pattern=r"^[A-Za-z0-9]+$", description="airport code")
    carrier: str = Field(min_length=2, max_length=3, pattern=r"^[A-Za-z0-9]+$", description="carrier code")
    tailnum: str = Field(min_length=1, max_length=10, pattern=r"^[A-Za-z0-9]+$", description="aircraft tail")
    sched_dep_hour: int = Field(ge=0, le=23)
    weekday: int = Field(ge=0, le=6, description="0 = Monday")
    month: int = Field(ge=1, le=12)
    distance: float = Field(gt=0, le=20000, description="miles")
    request_id: str | None = Field(
        default=None, max_length=128, description="caller's id (echoed back and logged); generated if absent"
    )

    @field_validator("origin", "carrier", "tailnum")
    @classmethod
    def _upper(cls, v: str) -> str:
        return v.upper()

    @field_validator("distance")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("distance must be a finite number")
        return v


class Prediction(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    request_id: str
    model_version: str
    probability: float
    delayed: bool


# ---------------------------------------------------------------------------- service
@bentoml.service(name="mlops_prediction_service", traffic={"timeout": 60})
class ModelService:
    """Online prediction: Feast online features + request fields -> MLflow pyfunc -> probabilities."""

    def __init__(self) -> None:
        import feast

        self.config = load_service_config()
        cfg = self.config
        self.model = bentoml.mlflow.load_model(cfg.model_tag)
        self.store = feast.FeatureStore(repo_path=cfg.feature_repo)
        self.feature_service = self.store.get_feature_service(cfg.feature_service)
        served = {f.name for p in self.feature_service.feature_view_projections for f in p.features}
        missing = [c for c in cfg.raw_columns if c not in served and c not in cfg.request_fields and c not in ENTITY_KEYS]
        if missing:
            raise ConfigError(
                f"Feature service {cfg.feature_service!r} in {cfg.feature_repo} does not provide the model "
                f"columns {missing}, and they are not request fields. Fix the feature service or the "
                "model's feature lists and rebuild the bento."
            )
        self.log_writer = InferenceLogWriter(
            cfg.inference_log_dir, model_version=cfg.model_version, bento_tag=cfg.bento_tag
        )
        self._lock = threading.Lock()
        log.info(
            "Serving %s (MLflow version %s) from bento %s with feature service %s",
            cfg.model_tag, cfg.model_version, cfg.bento_tag, cfg.feature_service,
        )

    def build_frame(self, requests: list[FlightRequest]) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(raw feature frame in the model's column order, full frame incl. entity keys for the log)."""
        cfg = self.config
        rows = [r.model_dump(exclude={"request_id"}) for r in requests]
        entity_rows = [{k: row[k] for k in (*ENTITY_KEYS, *cfg.request_fields) if k in row} for row in rows]
        online = self.store.get_online_features(
            features=self.feature_service, entity_rows=entity_rows, full_feature_names=False
        ).to_df()
        req = pd.DataFrame(rows)
        full = pd.DataFrame(index=range(len(rows)))
        for col in dict.fromkeys([*ENTITY_KEYS, *cfg.raw_columns]):
            if col in online.columns:
                full[col] = online[col].to_numpy()
            elif col in req.columns:
                full[col] = req[col].to_numpy()
            else:
                full[col] = np.nan
        for col in cfg.numeric:
            full[col] = pd.to_numeric(full[col], errors="coerce").astype("float64")
        for col in cfg.categorical:
            full[col] = full[col].astype("object")
        return full[cfg.raw_columns], full

    @bentoml.api(batchable=True, max_batch_size=256, max_latency_ms=100)
    def predict(self, requests: list[FlightRequest]) -> list[Prediction]:
        """Delay probability for each flight request."""
        if not requests:
            return []
        cfg = self.config
        with self._lock:
            frame, full = self.build_frame(requests)
            raw = self.model.predict(frame)
        probs = np.asarray(raw, dtype="float64").reshape(-1)
        if len(probs) != len(requests) or not np.all(np.isfinite(probs)):
            raise bentoml.exceptions.InternalServerError(
                f"Model {cfg.model_tag} returned {len(probs)} predictions for {len(requests)} requests "
                "or non-finite values"
            )
        ids = [r.request_id or uuid.uuid4().hex for r in requests]
        records = full.to_dict(orient="records")
        for rec, rid, p in zip(records, ids, probs, strict=True):
            rec["request_id"] = rid
            rec["prediction"] = float(p)
        self.log_writer.write_batch(records)
        return [
            Prediction(request_id=rid, model_version=cfg.model_version, probability=float(p), delayed=bool(p >= cfg.threshold))
            for rid, p in zip(ids, probs, strict=True)
        ]

    @bentoml.api
    def health(self) -> dict[str, Any]:
        """What is serving: model tag and version, bento tag, feature service."""
        cfg = self.config
        return {
            "status": "ok",
            "model_name": cfg.model_name,
            "model_tag": cfg.model_tag,
            "model_version": cfg.model_version,
            "bento_tag": cfg.bento_tag,
            "feature_service": cfg.feature_service,
        }
