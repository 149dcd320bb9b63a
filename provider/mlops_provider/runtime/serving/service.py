"""BentoML 1.4 service template: online features from Feast -> MLflow pyfunc(s) -> inference log.

:func:`mlops_provider.runtime.serving.deploy.package_bento` bundles this module (with the rest of the
``mlops_provider`` runtime) into a bento together with a small JSON config, ``bento_config.json``,
at the root of the bento's ``src/`` directory. Nothing in this module is specific to one model:
the model tag(s), feature service, feature repo, column lists and limits come from that config.

Config resolution (first hit wins):

1. ``$MLOPS_BENTO_CONFIG`` (path to a JSON file), else ``bento_config.json`` next to the bundled
   package (``src/bento_config.json``), else ``./bento_config.json``;
2. per-deployment overrides from the environment (paths differ between the build host and
   a container): ``MLOPS_FEATURE_REPO``, ``MLOPS_INFERENCE_LOG_DIR``, ``MLOPS_DELAY_THRESHOLD``.

Preprocessing: the service hands the **raw** feature frame (Feast online features + request fields,
in the model's column order) to the MLflow pyfunc, whose ``predict`` runs the very
:meth:`mlops_provider.runtime.training.model.Preprocessor.transform` that training used. The only serving-side
step is :meth:`Scorer.lookup` (what the offline point-in-time join does for training);
``tests/integration/test_service_skew.py`` proves both give identical model inputs.

HTTP API (JSON; OpenAPI at ``/docs.json``, UI at ``/``):

- ``POST /predict`` (adaptive batching) ``{"requests": [FlightRequest, ...]}`` (1..``max_batch_rows``)
  -> ``[Prediction, ...]``; every prediction carries the ``model_version`` that answered it;
- ``POST /score_batch`` ``{"rows": [...]}`` (up to ``max_scoring_rows``) -> ``BatchScoreResponse``;
- ``POST /health`` -> what is serving (model/bento tag and version, experiment);
- ``GET /healthz`` / ``/livez`` (process up), ``GET /readyz`` (503 until the model(s) and the feature
  store are loaded and a warm-up prediction went through), ``GET /metrics`` (Prometheus, incl.
  ``mlops_feature_lookup_seconds``, ``mlops_unknown_entity_total``, ``mlops_predictions_total``).

Bad input is answered with a 4xx and a message, never a 5xx: pydantic validation errors (wrong
types, missing or unknown fields, out-of-range values, NaN/inf, over-long strings, too many rows,
malformed JSON) -> 400 ``{"error", "detail"}``; a body over ``max_body_bytes`` -> 413; a non-JSON
content type -> 415 (:class:`RequestGuardMiddleware`). An **unknown entity** (origin / carrier /
tailnum the feature store has no row for) is not an error: its online features are missing and the
model's preprocessor imputes them exactly as in training (train medians, the out-of-vocabulary
category); the prediction is returned, and the log row records ``missing_features`` and
``unknown_entities`` (and ``mlops_unknown_entity_total`` counts them).

Online experiments (``experiment`` in the config, see :mod:`mlops_provider.runtime.serving.experiments`):
champion and challenger are both loaded; ``split`` routes a sticky share of entities to the
challenger, ``shadow`` scores every request with both and answers with the champion.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from mlops_provider.exceptions import ConfigError
from mlops_provider.runtime.serving.experiments import CHALLENGER, CHAMPION, ExperimentSpec, run_experiment
from mlops_provider.runtime.serving.inference_log import InferenceLogWriter

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
JSON_MEDIA_TYPES = ("application/json", "text/json")


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
    request_fields: list[str] = Field(
        default_factory=lambda: ["sched_dep_hour", "weekday", "month", "distance"]
    )
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
            f"mlops_provider.runtime.serving.deploy.package_bento, or point ${ENV_CONFIG} at a config JSON."
        )
    data: dict[str, Any] = json.loads(p.read_text(encoding="utf-8"))
    for env, key in ENV_OVERRIDES.items():
        if os.environ.get(env):
            data[key] = os.environ[env]
    return ServiceConfig.model_validate(data)


def _import_time_limits() -> ServiceLimits:
    """Limits known when the class is defined (API signatures need them); defaults without a config."""
    try:
        return load_service_config().limits
    except Exception:  # noqa: BLE001 - importing the module (docs, tests, the client) needs no config
        return ServiceLimits()


LIMITS = _import_time_limits()


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


# ---------------------------------------------------------------------------- scoring core
def _load_bento_mlflow(tag: str) -> Callable[[pd.DataFrame], Any]:
    import bentoml

    model = bentoml.mlflow.load_model(tag)
    return model.predict  # type: ignore[no-any-return]


class Scorer:
    """Framework-free scoring core: Feast lookup -> pyfunc(s) -> inference log.

    The bento service wraps it; the FastAPI baseline of ``benchmarks/serving_throughput.py`` and
    offline batch scoring can use it as is (same lookup, same model, same log).
    """

    def __init__(
        self,
        config: ServiceConfig,
        *,
        load_model: Callable[[str], Callable[[pd.DataFrame], Any]] = _load_bento_mlflow,
        store: Any = None,
        log_writer: InferenceLogWriter | None = None,
    ) -> None:
        self.config = cfg = config
        self.ready = False
        self.champion = load_model(cfg.model_tag)
        self.experiment = cfg.experiment
        self.challenger = load_model(cfg.experiment.challenger_tag) if cfg.experiment else None
        if store is None:
            import feast

            store = feast.FeatureStore(repo_path=cfg.feature_repo)
        self.store = store
        try:
            self.feature_service = store.get_feature_service(cfg.feature_service)
        except Exception as e:
            raise ConfigError(
                f"Feature service {cfg.feature_service!r} is not in the Feast registry of {cfg.feature_repo} "
                f"({type(e).__name__}: {e}). Run the feature DAG's feast apply, or fix the feature service "
                "name and rebuild the bento."
            ) from e
        served = {f.name for p in self.feature_service.feature_view_projections for f in p.features}
        missing = [
            c
            for c in cfg.raw_columns
            if c not in served and c not in cfg.request_fields and c not in ENTITY_KEYS
        ]
        if missing:
            raise ConfigError(
                f"Feature service {cfg.feature_service!r} in {cfg.feature_repo} does not provide the model "
                f"columns {missing}, and they are not request fields. Fix the feature service or the "
                "model's feature lists and rebuild the bento."
            )
        self.entity_features = self._entity_features()
        self.log_writer = log_writer or InferenceLogWriter(
            cfg.inference_log_dir,
            model_version=cfg.model_version,
            bento_tag=cfg.bento_tag,
            flush_rows=cfg.log_flush_rows,
            flush_interval_s=cfg.log_flush_interval_s,
        )
        self._lock = threading.Lock()
        self.last_feature_seconds = 0.0

    def _entity_features(self) -> dict[str, list[str]]:
        """Entity key -> the model columns that come from that entity's feature views."""
        out: dict[str, list[str]] = {}
        wanted = set(self.config.raw_columns)
        for proj in self.feature_service.feature_view_projections:
            try:
                fv = self.store.get_feature_view(proj.name)
            except Exception:  # noqa: BLE001 - on-demand views have no entity
                continue
            for entity in getattr(fv, "entities", []) or []:
                cols = [f.name for f in proj.features if f.name in wanted]
                if cols:
                    out.setdefault(str(entity), []).extend(cols)
        return out

    def warm_up(self) -> None:
        """One prediction through the whole path (not logged); sets ``ready``."""
        probe = FlightRequest(
            origin="ZZZ",
            carrier="ZZ",
            tailnum="WARMUP",
            sched_dep_hour=12,
            weekday=0,
            month=1,
            distance=500.0,
            request_id="warmup",
        )
        self.score([probe], log_rows=False)
        self.ready = True

    # -- features
    def lookup(self, requests: Sequence[FlightRequest]) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(raw feature frame in the model's column order, full frame incl. entity keys for the log)."""
        cfg = self.config
        rows = [r.model_dump(exclude={"request_id"}) for r in requests]
        entity_rows = [{k: row[k] for k in (*ENTITY_KEYS, *cfg.request_fields) if k in row} for row in rows]
        online = self.store.get_online_features(
            features=self.feature_service, entity_rows=entity_rows, full_feature_names=False
        ).to_dict()
        n = len(rows)
        numeric = set(cfg.numeric)
        data: dict[str, Any] = {}
        for col in dict.fromkeys([*ENTITY_KEYS, *cfg.raw_columns]):
            if col in online and col not in ENTITY_KEYS:
                values = list(online[col])
            elif col in rows[0]:
                values = [row[col] for row in rows]
            else:
                values = [None] * n
            if col in numeric:
                try:
                    data[col] = np.array([np.nan if v is None else v for v in values], dtype="float64")
                except (TypeError, ValueError):
                    data[col] = pd.to_numeric(pd.Series(values, dtype="object"), errors="coerce").to_numpy(
                        "float64"
                    )
            else:
                data[col] = np.array(values, dtype=object)
        full = pd.DataFrame(data)
        return full[cfg.raw_columns], full

    # -- scoring
    def score(
        self, requests: Sequence[FlightRequest], *, source: str = "online", log_rows: bool = True
    ) -> list[Prediction]:
        if not requests:
            return []
        cfg = self.config
        with self._lock:  # (the baseline's thread pool queues here; BentoML's batcher queues before)
            t0 = time.perf_counter()
            frame, full = self.lookup(requests)
            t1 = time.perf_counter()
            route_rows = [r.model_dump() for r in requests] if self.experiment is not None else []
            result = run_experiment(frame, route_rows, self.experiment, self.champion, self.challenger)
        t2 = time.perf_counter()
        probs = result["served"]
        if len(probs) != len(requests) or not np.all(np.isfinite(probs)):
            raise RuntimeError(
                f"Model {cfg.model_tag} returned {len(probs)} predictions for {len(requests)} requests "
                "or non-finite values"
            )
        probs = np.clip(probs, 0.0, 1.0)
        self.last_feature_seconds = t1 - t0
        to_chall = result["to_challenger"]
        chall_version = self.experiment.challenger_version if self.experiment else ""
        versions = [chall_version if c else cfg.model_version for c in to_chall]
        ids = [r.request_id or uuid.uuid4().hex for r in requests]
        missing, unknown = self._missing(full)
        if log_rows:
            columns = {c: full[c].to_numpy().tolist() for c in full.columns}
            records = [{c: v[i] for c, v in columns.items()} for i in range(len(full))]
            batch_ms = round((t2 - t0) * 1000.0, 3)
            feat_ms = round((t1 - t0) * 1000.0, 3)
            for i, rec in enumerate(records):
                rec["request_id"] = ids[i]
                rec["model_version"] = versions[i]
                rec["prediction"] = float(probs[i])
                rec["source"] = source
                rec["latency_ms"] = batch_ms
                rec["feature_ms"] = feat_ms
                rec["batch_rows"] = len(requests)
                rec["missing_features"] = int(missing[i])
                rec["unknown_entities"] = unknown[i]
                if self.experiment is not None:
                    rec["variant"] = CHALLENGER if to_chall[i] else CHAMPION
                    rec["experiment"] = self.experiment.name
                    rec["experiment_mode"] = self.experiment.mode
                    rec["challenger_version"] = chall_version
                    rec["champion_prediction"] = float(result["champion"][i])
                    rec["challenger_prediction"] = float(result["challenger"][i])
            self.log_writer.write_batch(records)
        _observe(feature_seconds=t1 - t0, rows=len(requests), unknown=[u for u in unknown if u])
        return [
            Prediction(
                request_id=rid, model_version=v, probability=float(p), delayed=bool(p >= cfg.threshold)
            )
            for rid, v, p in zip(ids, versions, probs, strict=True)
        ]

    def _missing(self, full: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        """Per row: number of missing model columns, and the entities without any online feature."""
        cols = [c for c in self.config.raw_columns if c in full.columns]
        isna = full[cols].isna().to_numpy()
        missing = isna.sum(axis=1)
        pos = {c: i for i, c in enumerate(cols)}
        unknown_by_entity = {
            ent: isna[:, [pos[c] for c in cols_]].all(axis=1)
            for ent, cols_ in self.entity_features.items()
            if all(c in pos for c in cols_)
        }
        unknown = [",".join(e for e, mask in unknown_by_entity.items() if mask[i]) for i in range(len(full))]
        return missing, unknown

    def info(self) -> dict[str, Any]:
        cfg = self.config
        out: dict[str, Any] = {
            "status": "ok" if self.ready else "starting",
            "model_name": cfg.model_name,
            "model_tag": cfg.model_tag,
            "model_version": cfg.model_version,
            "bento_tag": cfg.bento_tag,
            "feature_service": cfg.feature_service,
            "limits": cfg.limits.model_dump(),
            "experiment": cfg.experiment.model_dump() if cfg.experiment else None,
        }
        return out

    def close(self) -> None:
        self.log_writer.close()


# ---------------------------------------------------------------------------- metrics
_METRICS: dict[str, Any] = {}


def _observe(*, feature_seconds: float, rows: int, unknown: list[str]) -> None:
    """Prometheus metrics (``prometheus_client``; BentoML's ``/metrics`` exports them, multiprocess-safe)."""
    try:
        if not _METRICS:
            import prometheus_client as prom

            _METRICS["lookup"] = prom.Histogram(
                "mlops_feature_lookup_seconds",
                "Feast online lookup time per model batch",
                buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            )
            _METRICS["rows"] = prom.Counter("mlops_predictions", "Rows scored")
            _METRICS["unknown"] = prom.Counter(
                "mlops_unknown_entity", "Rows scored with an unknown entity (imputed)", labelnames=["entity"]
            )
        _METRICS["lookup"].observe(feature_seconds)
        _METRICS["rows"].inc(rows)
        for u in unknown:
            for ent in u.split(","):
                _METRICS["unknown"].labels(entity=ent).inc()
    except Exception:  # noqa: BLE001 - metrics never break a prediction
        log.debug("metrics update failed", exc_info=True)


# ---------------------------------------------------------------------------- ASGI guard
class RequestGuardMiddleware:
    """Body-size limit (413) and JSON-only content type (415) before BentoML parses anything.

    A declared ``Content-Length`` over the limit is refused without reading the body; a chunked body is
    read up to the limit and refused as soon as it passes it.
    """

    def __init__(self, app: Any, max_body_bytes: int = LIMITS.max_body_bytes) -> None:
        self.app = app
        self.max_body_bytes = int(max_body_bytes)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        ctype = headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if ctype and ctype not in JSON_MEDIA_TYPES and not ctype.endswith("+json"):
            await _reject(send, 415, f"Content-Type {ctype!r} is not supported: send application/json")
            return
        length = headers.get("content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _reject(send, 400, "Content-Length is not an integer")
                return
            if declared > self.max_body_bytes:
                await _reject(
                    send,
                    413,
                    f"Request body of {declared} bytes exceeds the limit of "
                    f"{self.max_body_bytes} bytes; split the request",
                )
                return
            await self.app(scope, receive, send)
            return
        # no Content-Length (chunked): buffer up to the limit, then replay
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await _reject(
                    send,
                    413,
                    f"Request body exceeds the limit of {self.max_body_bytes} bytes; split the request",
                )
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Any:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _reject(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------------- the BentoML service
import bentoml  # noqa: E402 - after the framework-free core, which the FastAPI baseline imports too

PredictRows = Annotated[list[FlightRequest], Field(min_length=1, max_length=LIMITS.max_batch_rows)]
ScoringRows = Annotated[list[FlightRequest], Field(min_length=1, max_length=LIMITS.max_scoring_rows)]


@bentoml.service(name="mlops_prediction_service", traffic={"timeout": 60})
class ModelService:
    """Online prediction: Feast online features + request fields -> MLflow pyfunc -> probabilities."""

    def __init__(self) -> None:
        self.config = load_service_config()
        self.scorer = Scorer(self.config)
        self.scorer.warm_up()
        cfg = self.config
        log.info(
            "Serving %s (MLflow version %s) from bento %s with feature service %s%s",
            cfg.model_tag,
            cfg.model_version,
            cfg.bento_tag,
            cfg.feature_service,
            f"; experiment {cfg.experiment.mode} with {cfg.experiment.challenger_tag}"
            if cfg.experiment
            else "",
        )

    def __is_ready__(self) -> bool:
        return bool(getattr(self, "scorer", None) is not None and self.scorer.ready)

    @bentoml.api(batchable=True, max_batch_size=LIMITS.max_batch_size, max_latency_ms=LIMITS.max_latency_ms)
    def predict(self, requests: PredictRows) -> list[Prediction]:
        """Delay probability for each flight request (adaptive batching across concurrent callers)."""
        return self.scorer.score(requests)

    @bentoml.api
    def score_batch(self, rows: ScoringRows) -> BatchScoreResponse:
        """Offline-style scoring of many rows in one call (chunked feature lookups)."""
        cfg = self.config
        chunk = cfg.limits.scoring_chunk_rows
        preds: list[Prediction] = []
        for i in range(0, len(rows), chunk):
            preds.extend(self.scorer.score(rows[i : i + chunk], source="batch"))
        return BatchScoreResponse(
            model_version=cfg.model_version, bento_tag=cfg.bento_tag, rows=len(preds), predictions=preds
        )

    @bentoml.api
    def health(self) -> dict[str, Any]:
        """What is serving: model tag and version, bento tag, feature service, experiment."""
        return self.scorer.info()

    @bentoml.on_shutdown
    def _close_log(self) -> None:
        self.scorer.close()


ModelService.add_asgi_middleware(RequestGuardMiddleware, max_body_bytes=LIMITS.max_body_bytes)  # type: ignore[attr-defined]
