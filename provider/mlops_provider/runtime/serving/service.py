"""BentoML 1.4 service template: online features from Feast -> MLflow pyfunc(s) -> inference log.

:func:`mlops_provider.runtime.serving.package.package_bento` bundles this module (with the rest of the
``mlops_provider`` runtime) into a bento together with a small JSON config, ``bento_config.json``,
at the root of the bento's ``src/`` directory. Nothing in this module is specific to one model: the
model tag(s), feature service, feature repo, column lists, limits, worker count, the **request schema**
(generated at package time from the feature service and the YAML) and the **task** come from that
config; the request / response models are built from it when the module is imported
(:func:`~mlops_provider.runtime.serving.schema.build_models`) and named after the model
(``<Model>Request``, ``<Model>Prediction``, ``<Model>BatchScore``).

The service is a thin BentoML shell around :class:`~mlops_provider.runtime.serving.scorer.Scorer`
(time-correct Feast lookup, model call, inference log), guarded by
:class:`~mlops_provider.runtime.serving.guard.RequestGuardMiddleware`.

HTTP API (JSON; OpenAPI at ``/docs.json``, UI at ``/``):

- ``POST /predict`` ``{"requests": [<Model>Request, ...]}`` (1..``max_batch_rows``)
  -> ``[<Model>Prediction, ...]``; every prediction carries the ``model_version`` that answered it. Concurrent
  requests are scored together (:class:`~mlops_provider.runtime.serving.batcher.GreedyBatcher`: whatever is
  queued when the model is free, up to ``max_batch_size`` rows; a request queued longer than
  ``max_latency_ms`` is answered 503 "overloaded");
- ``POST /score_batch`` ``{"rows": [...]}`` (up to ``max_scoring_rows``) -> ``<Model>BatchScore``;
- ``POST /health`` -> what is serving (model/bento tag and version, task, experiment);
- ``GET /healthz`` / ``/livez`` (process up), ``GET /readyz`` (503 until the model(s) and the feature
  store are loaded and a warm-up prediction went through), ``GET /metrics`` (Prometheus, incl.
  ``mlops_feature_lookup_seconds``, ``mlops_feature_age_seconds``, ``mlops_feature_stale_total``,
  ``mlops_feature_missing_total``, ``mlops_unknown_entity_total``, ``mlops_predictions_total``).

Header ``X-Mlops-Traffic: live | smoke | infra_validation | warmup | shadow`` (default live) is logged with
every prediction; only live traffic counts in monitoring windows. The warm-up is not logged at all.

Bad input is answered with a 4xx and a message, never a 5xx, and never logs a traceback: pydantic
validation errors (wrong or coerced types, missing or unknown fields, out-of-range values, NaN/inf,
over-long strings, too many rows, malformed JSON) -> 400 ``{"error", "detail": [...]}``; a body over
``max_body_bytes`` -> 413; a non-JSON content type -> 415; with ``stale_features: reject`` a request whose
features are stale -> 422 naming them. An overloaded worker answers 503 ``{"error": "overloaded: ..."}``
with ``Retry-After``. An **unknown entity** is not an error: its features are imputed as in training.

Online experiments (``experiment`` in the config, see :mod:`mlops_provider.runtime.serving.experiments`):
champion and challenger are both loaded; ``split`` routes a sticky share of entities to the
challenger, ``shadow`` scores every request with both and answers with the champion.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import bentoml
from pydantic import Field

from mlops_provider.runtime.serving.batcher import GreedyBatcher, Overloaded
from mlops_provider.runtime.serving.guard import RequestGuardMiddleware, install_log_filter, openapi_document
from mlops_provider.runtime.serving.request_schema import request_schema
from mlops_provider.runtime.serving.schema import (
    ServiceConfig,
    ServiceLimits,
    ServiceModels,
    TaskInfo,
    build_models,
    load_service_config,
)
from mlops_provider.runtime.serving.scorer import Scorer

log = logging.getLogger(__name__)

__all__ = [
    "MODELS", "ModelService", "PredictRows", "RequestGuardMiddleware", "Scorer", "ScoringRows", "ServiceConfig",
    "ServiceLimits", "load_service_config",
]


def _import_time_config() -> ServiceConfig | None:
    """The bundled config when there is one (API signatures need it); None for docs, tests, the client."""
    try:
        return load_service_config()
    except Exception:  # noqa: BLE001 - importing the module needs no config
        return None


def _import_time_models(cfg: ServiceConfig | None) -> ServiceModels:
    if cfg is not None and cfg.request_schema:
        return build_models(cfg.request_schema, cfg.task)
    # no bundled schema: a placeholder (the module is imported for its names, not served)
    model = cfg.model_name if cfg is not None else "model"
    return build_models(request_schema({"name": "", "model": model}), cfg.task if cfg else TaskInfo())


CONFIG = _import_time_config()
LIMITS = CONFIG.limits if CONFIG is not None else ServiceLimits()
MODELS = _import_time_models(CONFIG)
RequestModel = MODELS.request
PredictionModel = MODELS.prediction
BatchModel = MODELS.batch

PredictRows = Annotated[list[RequestModel], Field(min_length=1, max_length=LIMITS.max_batch_rows)]  # type: ignore[valid-type]
ScoringRows = Annotated[list[RequestModel], Field(min_length=1, max_length=LIMITS.max_scoring_rows)]  # type: ignore[valid-type]


def _refuse(rows: list[Any]) -> Any:
    """``on_stale`` of the scorer: mark the HTTP requests of rows with stale features (the guard answers 422)."""

    def on_stale(stale: list[list[str]]) -> list[bool]:
        for row, feats in zip(rows, stale, strict=True):
            if feats:
                state = row.request_state
                state["rejected"].setdefault(str(row.request_id or "row"), set()).update(feats)
        return [bool(row.request_state["rejected"]) for row in rows]

    return on_stale


@bentoml.service(
    name="mlops_prediction_service",
    workers=CONFIG.workers if CONFIG is not None else 1,
    traffic={"timeout": 60},
)
class ModelService:
    """Online prediction: time-correct Feast online features + request fields -> MLflow pyfunc."""

    def __init__(self) -> None:
        install_log_filter()
        self.config = load_service_config()
        # the import-time models: BentoML validates answers against the classes of the API signatures
        self.scorer = Scorer(self.config, models=MODELS if self.config.request_schema else None)
        self.scorer.warm_up()
        self.batcher = GreedyBatcher(
            self._score, max_batch_size=self.config.limits.max_batch_size,
            max_latency_s=self.config.limits.max_latency_ms / 1000.0,
        )
        cfg = self.config
        log.info(
            "Serving %s (MLflow version %s, %s) from bento %s with feature service %s%s",
            cfg.model_tag,
            cfg.model_version,
            cfg.task.type,
            cfg.bento_tag,
            cfg.feature_service,
            f"; experiment {cfg.experiment.mode} with {cfg.experiment.challenger_tag}"
            if cfg.experiment
            else "",
        )

    def __is_ready__(self) -> bool:
        return bool(getattr(self, "scorer", None) is not None and self.scorer.ready)

    def _score(self, rows: list[Any], source: str = "online") -> list[Any]:
        return self.scorer.score(
            rows, source=source, traffic=[r.request_state["traffic"] for r in rows], on_stale=_refuse(rows)
        )

    @bentoml.api
    async def predict(self, requests: PredictRows) -> list[PredictionModel]:  # type: ignore[valid-type]
        """One prediction per request row (concurrent requests are scored together)."""
        from bentoml.exceptions import ServiceUnavailable

        try:
            return await self.batcher.submit(requests)
        except Overloaded as e:
            raise ServiceUnavailable(f"overloaded: {e}") from e

    @bentoml.api
    def score_batch(self, rows: ScoringRows) -> BatchModel:  # type: ignore[valid-type]
        """Offline-style scoring of many rows in one call (chunked feature lookups)."""
        cfg = self.config
        chunk = cfg.limits.scoring_chunk_rows
        preds: list[Any] = []
        for i in range(0, len(rows), chunk):
            preds.extend(self._score(rows[i : i + chunk], source="batch"))
        return BatchModel(model_version=cfg.model_version, bento_tag=cfg.bento_tag, rows=len(preds),
                          predictions=preds)

    @bentoml.api
    def health(self) -> dict[str, Any]:
        """What is serving: model tag and version, bento tag, feature service, task, experiment."""
        return self.scorer.info()

    @bentoml.on_shutdown
    def _close_log(self) -> None:
        self.batcher.close()
        self.scorer.close()


ModelService.add_asgi_middleware(  # type: ignore[attr-defined]
    RequestGuardMiddleware,
    max_body_bytes=LIMITS.max_body_bytes,
    retry_after_s=LIMITS.retry_after_s,
    openapi=lambda: openapi_document(ModelService.openapi_spec.asdict()),  # type: ignore[attr-defined]
)
install_log_filter()
