"""BentoML 1.4 service template: online features from Feast -> MLflow pyfunc(s) -> inference log.

:func:`mlops_provider.runtime.serving.package.package_bento` bundles this module (with the rest of the
``mlops_provider`` runtime) into a bento together with a small JSON config, ``bento_config.json``,
at the root of the bento's ``src/`` directory. Nothing in this module is specific to one model:
the model tag(s), feature service, feature repo, column lists and limits come from that config
(:mod:`mlops_provider.runtime.serving.schema`, which also holds the request / response models).

The service is a thin BentoML shell around :class:`~mlops_provider.runtime.serving.scorer.Scorer`
(Feast lookup, model call, inference log), guarded by
:class:`~mlops_provider.runtime.serving.guard.RequestGuardMiddleware`.
``tests/integration/test_service_skew.py`` proves the scorer's lookup and training's offline join
give identical model inputs.

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
content type -> 415. An **unknown entity** (origin / carrier / tailnum the feature store has no row
for) is not an error: its features are imputed as in training and the prediction is returned.

Online experiments (``experiment`` in the config, see :mod:`mlops_provider.runtime.serving.experiments`):
champion and challenger are both loaded; ``split`` routes a sticky share of entities to the
challenger, ``shadow`` scores every request with both and answers with the champion.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

import bentoml
from pydantic import Field

from mlops_provider.runtime.serving.guard import RequestGuardMiddleware
from mlops_provider.runtime.serving.schema import (
    BatchScoreResponse,
    FlightRequest,
    Prediction,
    ServiceConfig,
    ServiceLimits,
    load_service_config,
)
from mlops_provider.runtime.serving.scorer import Scorer

log = logging.getLogger(__name__)

__all__ = [
    "BatchScoreResponse", "FlightRequest", "ModelService", "Prediction", "PredictRows", "RequestGuardMiddleware",
    "Scorer", "ScoringRows", "ServiceConfig", "ServiceLimits", "load_service_config",
]


def _import_time_limits() -> ServiceLimits:
    """Limits known when the class is defined (API signatures need them); defaults without a config."""
    try:
        return load_service_config().limits
    except Exception:  # noqa: BLE001 - importing the module (docs, tests, the client) needs no config
        return ServiceLimits()


LIMITS = _import_time_limits()

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
