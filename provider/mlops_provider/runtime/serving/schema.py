"""The bento service's config and HTTP request / response models (runtime module, no BentoML import).

- :class:`ServiceConfig`: the JSON config bundled in the bento (``bento_config.json``, written by
  :func:`mlops_provider.runtime.serving.package.package_bento`); :func:`load_service_config` reads it
  (``$MLOPS_BENTO_CONFIG``, else ``src/bento_config.json`` of the bento, else ``./bento_config.json``)
  and applies the per-deployment environment overrides (``MLOPS_FEATURE_REPO``,
  ``MLOPS_INFERENCE_LOG_DIR``, ``MLOPS_DELAY_THRESHOLD``);
- :class:`ServiceLimits`: request limits and batching knobs (``limits`` in the config);
- :class:`FlightRequest` / :class:`Prediction` / :class:`BatchScoreResponse`: the API's JSON models.
  Unknown fields, wrong types, NaN/inf and out-of-range values are rejected (the service answers 400).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlops_provider.exceptions import ConfigError
from mlops_provider.runtime.serving.experiments import ExperimentSpec

CONFIG_FILE = "bento_config.json"
ENV_CONFIG = "MLOPS_BENTO_CONFIG"
ENV_OVERRIDES = {
    "MLOPS_FEATURE_REPO": "feature_repo",
    "MLOPS_INFERENCE_LOG_DIR": "inference_log_dir",
    "MLOPS_DELAY_THRESHOLD": "threshold",
}
#: Entity keys of the example model, always passed to Feast and logged.
ENTITY_KEYS = ("origin", "carrier", "tailnum")
#: Request-time fields when the packaging call names none.
DEFAULT_REQUEST_FIELDS = ["sched_dep_hour", "weekday", "month", "distance"]


class ServiceLimits(BaseModel):
    """Request limits and batching knobs (``limits`` in the bento config)."""

    model_config = ConfigDict(extra="forbid")

    max_batch_rows: int = Field(256, ge=1, le=10_000, description="rows per /predict request")
    max_scoring_rows: int = Field(10_000, ge=1, le=1_000_000, description="rows per /score_batch request")
    max_body_bytes: int = Field(2_000_000, ge=1_024, description="request body size limit (413 above)")
    max_batch_size: int = Field(512, ge=1, description="adaptive batching: most rows per model call")
    max_latency_ms: int = Field(3_000, ge=1, description="adaptive batching: longest queueing before 503")
    scoring_chunk_rows: int = Field(2_048, ge=1, description="/score_batch rows per feature lookup")


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
    request_fields: list[str] = Field(default_factory=lambda: list(DEFAULT_REQUEST_FIELDS))
    inference_log_dir: str
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    limits: ServiceLimits = Field(default_factory=ServiceLimits)
    experiment: ExperimentSpec | None = None
    log_flush_rows: int = Field(5000, ge=1)
    log_flush_interval_s: float = Field(10.0, ge=0)

    @property
    def raw_columns(self) -> list[str]:
        return [*self.categorical, *self.numeric]


def config_path() -> Path:
    """Where the service reads its config (see module docstring)."""
    if os.environ.get(ENV_CONFIG):
        return Path(os.environ[ENV_CONFIG])
    bundled = Path(__file__).resolve().parents[3] / CONFIG_FILE  # src/ of the bento: src/mlops_provider/runtime/serving/
    if bundled.is_file():
        return bundled
    return Path.cwd() / CONFIG_FILE


def load_service_config(path: str | os.PathLike[str] | None = None) -> ServiceConfig:
    """Read the bundled config and apply the environment overrides."""
    p = Path(path) if path else config_path()
    if not p.is_file():
        raise ConfigError(
            f"Bento service config {p} not found. Build the bento with "
            f"mlops_provider.runtime.serving.package.package_bento, or point ${ENV_CONFIG} at a config JSON."
        )
    data: dict[str, Any] = json.loads(p.read_text(encoding="utf-8"))
    for env, key in ENV_OVERRIDES.items():
        if os.environ.get(env):
            data[key] = os.environ[env]
    return ServiceConfig.model_validate(data)


# ---------------------------------------------------------------------------- request / response
class FlightRequest(BaseModel):
    """One prediction request. Unknown fields are rejected (a typo must not silently become NaN)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, allow_inf_nan=False)

    origin: str = Field(min_length=3, max_length=4, pattern=r"^[A-Za-z0-9]+$", description="airport code")
    carrier: str = Field(min_length=2, max_length=3, pattern=r"^[A-Za-z0-9]+$", description="carrier code")
    tailnum: str = Field(min_length=1, max_length=10, pattern=r"^[A-Za-z0-9]+$", description="aircraft tail")
    sched_dep_hour: int = Field(ge=0, le=23)
    weekday: int = Field(ge=0, le=6, description="0 = Monday")
    month: int = Field(ge=1, le=12)
    distance: float = Field(ge=1, le=20000, description="miles (at least 1)")
    request_id: str | None = Field(
        default=None, max_length=128, description="caller's id (echoed back and logged); generated if absent"
    )

    @field_validator("origin", "carrier", "tailnum")
    @classmethod
    def _upper(cls, v: str) -> str:
        return v.upper()


class Prediction(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    request_id: str
    model_version: str = Field(description="MLflow version of the model that answered")
    probability: float = Field(ge=0.0, le=1.0)
    delayed: bool = Field(description="probability >= the service threshold")


class BatchScoreResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_version: str
    bento_tag: str
    rows: int
    predictions: list[Prediction]
