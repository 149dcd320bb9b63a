"""The bento service's config and its HTTP request / response models (runtime module, no BentoML import).

- :class:`ServiceConfig`: the JSON config bundled in the bento (``bento_config.json``, written by
  :func:`mlops_provider.runtime.serving.package.package_bento`); :func:`load_service_config` reads it
  (``$MLOPS_BENTO_CONFIG``, else ``src/bento_config.json`` of the bento, else ``./bento_config.json``)
  and applies the per-deployment environment overrides (``MLOPS_FEATURE_REPO``,
  ``MLOPS_INFERENCE_LOG_DIR``, ``MLOPS_THRESHOLD``);
- :class:`ServiceLimits`: request limits and batching knobs (``limits`` in the config);
- :class:`TaskInfo`: the task of the served model (``mlops.task`` / ``mlops.classes`` / ``mlops.quantiles``
  of the registered model version; absent: binary);
- :func:`build_models`: the API's pydantic models, generated from the request schema
  (:mod:`mlops_provider.runtime.serving.request_schema`) and the task, and named after the model
  (``ChurnRiskRequest``, ``ChurnRiskPrediction``, ``ChurnRiskBatchScore`` for a model ``churn_risk``). Types are strict (no
  coercion of ``"17"`` or ``false`` into numbers), unknown fields, NaN/inf and out-of-range values are
  rejected (the service answers 400).
"""

from __future__ import annotations

import contextvars
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    WithJsonSchema,
    create_model,
)

from mlops_provider.exceptions import ConfigError
from mlops_provider.runtime.serving.experiments import ExperimentSpec
from mlops_provider.runtime.serving.request_schema import (
    EVENT_TIME_FIELD,
    REQUEST_ID_FIELD,
    camel,
    parse_datetime,
)

CONFIG_FILE = "bento_config.json"
ENV_CONFIG = "MLOPS_BENTO_CONFIG"
ENV_OVERRIDES = {
    "MLOPS_FEATURE_REPO": "feature_repo",
    "MLOPS_FEATURE_STORE_YAML": "feature_store_yaml",
    "MLOPS_INFERENCE_LOG_DIR": "inference_log_dir",
    "MLOPS_THRESHOLD": "threshold",
}
TASKS = ("binary", "multiclass", "regression")


class ServiceLimits(BaseModel):
    """Request limits and batching knobs (``limits`` in the bento config)."""

    model_config = ConfigDict(extra="forbid")

    max_batch_rows: int = Field(256, ge=1, le=10_000, description="rows per /predict request")
    max_scoring_rows: int = Field(10_000, ge=1, le=1_000_000, description="rows per /score_batch request")
    max_body_bytes: int = Field(2_000_000, ge=1_024, description="request body size limit (413 above)")
    max_batch_size: int = Field(512, ge=1, description="adaptive batching: most rows per model call")
    max_latency_ms: int = Field(3_000, ge=1, description="adaptive batching: longest queueing before 503")
    scoring_chunk_rows: int = Field(2_048, ge=1, description="/score_batch rows per feature lookup")
    retry_after_s: int = Field(1, ge=0, le=3600, description="Retry-After of a 503 'overloaded'")


class TaskInfo(BaseModel):
    """What the served pyfunc returns (TASK-CONTRACT): binary / multiclass (classes) / regression (quantiles)."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["binary", "multiclass", "regression"] = "binary"
    label: str | None = None
    classes: list[str | int] | None = None
    quantiles: list[float] | None = None

    @classmethod
    def from_tags(cls, tags: Mapping[str, Any] | None) -> TaskInfo:
        """From a registered model version's tags (``mlops.task``, ``mlops.classes`` JSON, ...); absent: binary."""
        tags = dict(tags or {})

        def js(key: str) -> Any:
            raw = tags.get(key)
            if raw in (None, ""):
                return None
            try:
                return json.loads(raw) if isinstance(raw, str) else raw
            except ValueError as e:
                raise ConfigError(f"model version tag {key}={raw!r} is not JSON") from e

        task = str(tags.get("mlops.task") or "binary")
        if task not in TASKS:
            raise ConfigError(f"model version tag mlops.task={task!r}: expected one of {list(TASKS)}")
        info = cls(type=task, label=tags.get("mlops.label") or None, classes=js("mlops.classes"),  # type: ignore[arg-type]
                   quantiles=js("mlops.quantiles"))
        if info.type == "multiclass" and not info.classes:
            raise ConfigError("a multiclass model version needs the tag mlops.classes (JSON list of its classes)")
        return info

    @property
    def score_column(self) -> str:
        """The inference-log column of the model's primary score (binary: the probability)."""
        return "probability" if self.type == "binary" else "prediction"


class ServiceConfig(BaseModel):
    """The JSON config bundled in the bento (written by ``package_bento``)."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    model_name: str
    model_tag: str
    model_version: str
    bento_tag: str = ""
    #: The Feast repo configuration: relative paths are inside the bento (``src/feature_repo``).
    feature_repo: str
    feature_store_yaml: str = "feature_store.yaml"
    feature_service: str
    categorical: list[str]
    numeric: list[str]
    #: The generated request schema (None: built at startup from the feature service with defaults).
    request_schema: dict[str, Any] | None = None
    task: TaskInfo = Field(default_factory=TaskInfo)
    inference_log_dir: str
    threshold: float = Field(0.5, ge=0.0, le=1.0)
    limits: ServiceLimits = Field(default_factory=ServiceLimits)
    experiment: ExperimentSpec | None = None
    log_flush_rows: int = Field(5000, ge=1)
    log_flush_interval_s: float = Field(10.0, ge=0)
    workers: int = Field(1, ge=1, le=64)
    stale_features: Literal["impute", "reject"] = "impute"
    #: Requests projected from the evaluation snapshot (warm-up; the default smoke request).
    sample_requests: list[dict[str, Any]] = Field(default_factory=list)
    smoke_request: dict[str, Any] | None = None

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
    repo = Path(str(data.get("feature_repo") or "")).expanduser()
    if data.get("feature_repo") and not repo.is_absolute():  # bundled in the bento, beside this config
        data["feature_repo"] = str((p.parent / repo).resolve())
    return ServiceConfig.model_validate(data)




# ---------------------------------------------------------------------------------------------- request state
#: Per-HTTP-request state, set by the guard middleware before BentoML parses the body: the traffic class
#: (header ``X-Mlops-Traffic``) and, after scoring, the stale features that refuse the request. Each
#: request row captures it when validated, so it travels with the row through adaptive batching.
REQUEST_STATE: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "mlops_request_state", default=None
)


def new_request_state(traffic: str = "live") -> dict[str, Any]:
    return {"traffic": traffic, "rejected": {}}


def current_request_state() -> dict[str, Any]:
    state = REQUEST_STATE.get()
    return state if state is not None else new_request_state()


class RequestBase(BaseModel):
    """Base of the generated request models: carries its HTTP request's state (not part of the schema)."""

    _mlops_state: dict[str, Any] = PrivateAttr(default_factory=current_request_state)

    @property
    def request_state(self) -> dict[str, Any]:
        return self._mlops_state


# ---------------------------------------------------------------------------------------------- models
def _drop_null_defaults(schema: dict[str, Any]) -> None:
    """An omitted optional field takes None internally; the document shows no ``default: null``."""
    for prop in schema.get("properties", {}).values():
        if "default" in prop and prop["default"] is None:
            del prop["default"]


def _strict_datetime(value: Any) -> datetime:
    if not isinstance(value, str):
        raise ValueError("expected an RFC 3339 date-time string such as 2013-07-01T08:00:00Z")
    return parse_datetime(value)


def _enum_check(values: list[Any]) -> Callable[[Any], Any]:
    allowed = list(values)

    def check(v: Any) -> Any:
        if v not in allowed:
            raise ValueError(f"must be one of {allowed}")
        return v

    return check


def _field(f: Mapping[str, Any]) -> tuple[Any, Any]:
    """(annotation, FieldInfo) of one request-schema field."""
    jt = f["type"]
    extra: dict[str, Any] = {}
    if f.get("examples"):
        extra["examples"] = list(f["examples"])
    kw: dict[str, Any] = {"description": f.get("description")}
    if jt == "datetime":
        ann: Any = Annotated[
            datetime,
            PlainValidator(_strict_datetime),
            WithJsonSchema({"type": "string", "format": "date-time"}),
        ]
    else:
        ann = {"string": str, "integer": int, "number": float, "boolean": bool}[jt]
        for src, dst in (("minimum", "ge"), ("maximum", "le"), ("min_length", "min_length"),
                         ("max_length", "max_length"), ("pattern", "pattern")):
            if src in f:
                kw[dst] = f[src]
        if "enum" in f:
            ann = Annotated[ann, AfterValidator(_enum_check(f["enum"]))]
            extra["enum"] = list(f["enum"])
    if extra:
        kw["json_schema_extra"] = extra
    if f.get("required"):
        return ann, Field(..., **kw)
    return ann, Field(f.get("default"), **kw)


@dataclass(frozen=True)
class ServiceModels:
    """The API's pydantic models for one model (named after it)."""

    request: type[BaseModel]
    prediction: type[BaseModel]
    batch: type[BaseModel]
    schema: dict[str, Any]
    task: TaskInfo


def build_models(schema: Mapping[str, Any], task: TaskInfo | None = None) -> ServiceModels:
    """The request, prediction and batch-score models of ``schema`` and ``task`` (module docstring)."""
    task = task or TaskInfo()
    fields = {f["name"]: _field(f) for f in schema["fields"]}
    examples = [dict(e) for e in schema.get("examples") or []]

    def request_extra(s: dict[str, Any]) -> None:
        _drop_null_defaults(s)
        if examples:
            s["examples"] = examples

    request = create_model(  # type: ignore[call-overload]
        str(schema.get("request_model") or f"{camel(str(schema.get('model', 'model')))}Request"),
        __base__=RequestBase,
        __doc__="One prediction request: entity keys and request-time fields of the model's feature service. "
                "Unknown fields are rejected (a typo must not silently become a missing value).",
        **fields,
    )
    request.model_config.update(ConfigDict(
        strict=True, extra="forbid", allow_inf_nan=False, json_schema_extra=request_extra,
    ))
    request.model_rebuild(force=True)
    common: dict[str, Any] = {
        "request_id": (str, Field(description="The caller's request_id, or a generated one")),
        "model_version": (str, Field(description="MLflow version of the model that answered")),
    }
    if task.type == "binary":
        out: dict[str, Any] = {
            "probability": (float, Field(ge=0.0, le=1.0, description="Calibrated P(label = 1)")),
            "prediction": (int, Field(ge=0, le=1, description="1 when probability >= the service threshold")),
        }
    elif task.type == "multiclass":
        classes = list(task.classes or [])
        label_type: Any = int if classes and all(isinstance(c, int) for c in classes) else str
        out = {
            "prediction": (label_type, Field(description="The most probable class", json_schema_extra={
                "enum": [c if label_type is int else str(c) for c in classes]})),
            "probabilities": (dict[str, float], Field(description="Calibrated probability per class")),
        }
    else:
        out = {"prediction": (float, Field(description="Point prediction"))}
        if task.quantiles:
            out["quantiles"] = (dict[str, float], Field(description="Predicted quantiles ('0.1': value, ...)"))
    pred_name = str(schema.get("prediction_model") or f"{camel(str(schema.get('model', 'model')))}Prediction")
    prediction = create_model(  # type: ignore[call-overload]
        pred_name,
        __config__=ConfigDict(protected_namespaces=(), extra="forbid"),
        __doc__=f"One prediction ({task.type} task).",
        **common,
        **out,
    )
    batch = create_model(  # type: ignore[call-overload]
        str(schema.get("batch_model") or f"{camel(str(schema.get('model', 'model')))}BatchScore"),
        __config__=ConfigDict(protected_namespaces=(), extra="forbid"),
        __doc__="Answer of /score_batch.",
        model_version=(str, ...),
        bento_tag=(str, ...),
        rows=(int, ...),
        predictions=(list[prediction], ...),  # type: ignore[valid-type]
    )
    return ServiceModels(request=request, prediction=prediction, batch=batch, schema=dict(schema), task=task)


def validate_request(models: ServiceModels, request: Mapping[str, Any]) -> BaseModel:
    """``request`` validated exactly as the HTTP service does (JSON, strict); raises pydantic's ValidationError."""
    return models.request.model_validate_json(json.dumps(dict(request)))


__all__ = [
    "CONFIG_FILE", "ENV_CONFIG", "EVENT_TIME_FIELD", "REQUEST_ID_FIELD", "ServiceConfig", "ServiceLimits",
    "ServiceModels", "TaskInfo", "build_models", "config_path", "load_service_config", "validate_request",
]
