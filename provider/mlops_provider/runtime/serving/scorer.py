"""The framework-free scoring core of the bento service: Feast lookup -> pyfunc(s) -> inference log.

:class:`Scorer` is what :class:`~mlops_provider.runtime.serving.service.ModelService` wraps; the FastAPI
baseline of ``benchmarks/serving_throughput.py`` uses it as is (same lookup, same model, same log).
Nothing here knows the example: entity keys, request fields and feature views come from the model's
FeatureService (:func:`~mlops_provider.runtime.serving.feature_service.feature_service_info`), the request
and response models from the bundled request schema and the model version's task.

Preprocessing: the scorer hands the **raw** feature frame (Feast online features + request fields, in
the model's column order) to the MLflow pyfunc, whose ``predict`` runs the very
:meth:`mlops_provider.runtime.training.model.Preprocessor.transform` that training used. The only
serving-side step is :meth:`Scorer.lookup` (what the offline point-in-time join does for training): each
value is served only when it is fresh **as of the request's event time** (``event_timestamp``, else now)
under its view's TTL (:class:`~mlops_provider.runtime.serving.feature_service.OnlineFeatures`).

A missing value (an **unknown entity**, a null) or a **stale** one (older than the TTL, or newer than the
request: replays never see the future) is served as missing, and the model's preprocessor imputes it
exactly as in training; ``stale_features: reject`` refuses such requests instead (the service answers
422 naming the features). Counted in ``mlops_feature_missing_total{feature}``,
``mlops_feature_stale_total{feature}``, ``mlops_unknown_entity_total{entity}``; ages in
``mlops_feature_age_seconds{view}`` (exported by BentoML's ``/metrics``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel

from mlops_provider.exceptions import ConfigError, MlopsError
from mlops_provider.runtime.serving.experiments import CHALLENGER, CHAMPION, run_experiment
from mlops_provider.runtime.serving.feature_service import OnlineFeatures, as_utc, feature_service_info
from mlops_provider.runtime.serving.inference_log import AGE_PREFIX, DEFAULT_TRAFFIC, InferenceLogWriter
from mlops_provider.runtime.serving.request_schema import (
    EVENT_TIME_FIELD,
    REQUEST_ID_FIELD,
    example_request,
    request_schema,
)
from mlops_provider.runtime.serving.schema import ServiceConfig, ServiceModels, build_models

log = logging.getLogger(__name__)


class StaleFeaturesError(MlopsError):
    """``stale_features: reject``: a request's features are older than their TTL (or newer than it)."""

    def __init__(self, message: str, stale: Mapping[str, list[str]]) -> None:
        super().__init__(message)
        self.stale = dict(stale)


def _load_bento_mlflow(tag: str) -> Callable[[pd.DataFrame], Any]:
    import bentoml

    model = bentoml.mlflow.load_model(tag)
    return model.predict  # type: ignore[no-any-return]


@dataclass
class Scored:
    """One scored batch: the predictions (response models) and, per row, the stale features."""

    predictions: list[BaseModel]
    stale: list[list[str]]
    logged: int


#: Event times the inference log can hold (pandas' nanosecond range, with a day of margin): a request's
#: event time outside it (a schema-valid year 252 or 5448) is logged at the nearest bound.
LOG_TIME_MIN = datetime(1677, 9, 23, tzinfo=UTC)
LOG_TIME_MAX = datetime(2262, 4, 10, tzinfo=UTC)


def log_time(ts: datetime) -> datetime:
    """The inference-log timestamp of an event time (UTC, clamped to what the log's readers can hold)."""
    return min(LOG_TIME_MAX, max(LOG_TIME_MIN, as_utc(ts)))


def _as_dict(row: Any) -> dict[str, Any]:
    if isinstance(row, BaseModel):
        return row.model_dump()
    return dict(row)


class Scorer:
    """Framework-free scoring core: Feast lookup -> pyfunc(s) -> inference log (module docstring)."""

    def __init__(
        self,
        config: ServiceConfig,
        *,
        load_model: Callable[[str], Callable[[pd.DataFrame], Any]] = _load_bento_mlflow,
        store: Any = None,
        log_writer: InferenceLogWriter | None = None,
        models: ServiceModels | None = None,
    ) -> None:
        """``models``: the API models to answer with (the service passes the ones its API signatures use);
        default: built from the config's request schema (or, without one, from the feature service)."""
        self.config = cfg = config
        self.ready = False
        self.champion = load_model(cfg.model_tag)
        self.experiment = cfg.experiment
        self.challenger = load_model(cfg.experiment.challenger_tag) if cfg.experiment else None
        if store is None:
            import feast

            store = feast.FeatureStore(
                repo_path=cfg.feature_repo, fs_yaml_file=Path(cfg.feature_repo) / cfg.feature_store_yaml
            )
        self.store = store
        self.fs_info = feature_service_info(store, cfg.feature_service, model=cfg.model_name)
        self.feature_service = store.get_feature_service(cfg.feature_service)
        if models is None:
            schema = cfg.request_schema or request_schema({**self.fs_info, "model": cfg.model_name})
            models = build_models(schema, cfg.task)
        self.models: ServiceModels = models
        self.task = cfg.task
        self.online = OnlineFeatures(store, self.feature_service, self.fs_info)
        self.entity_keys = list(self.models.schema["entity_keys"])
        self.request_fields = list(self.models.schema["request_fields"])
        self.served = [f for v in self.fs_info["views"] for f in v["features"]] + [
            f for v in self.fs_info["on_demand"] for f in v["features"]
        ]
        missing = [
            c for c in cfg.raw_columns
            if c not in self.served and c not in self.request_fields and c not in self.entity_keys
        ]
        if missing:
            raise ConfigError(
                f"Feature service {cfg.feature_service!r} in {cfg.feature_repo} does not provide the model "
                f"columns {missing}, and they are not request fields or entity keys. Fix the feature service or "
                "the model's feature lists and rebuild the bento."
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
        for view in self.fs_info["views"]:
            cols = [f for f in view["features"] if f in wanted]
            for key in view["join_keys"]:
                if cols:
                    out.setdefault(key, []).extend(cols)
        return out

    def warm_up(self) -> None:
        """One prediction through the whole path (not logged); sets ``ready``.

        The request is the first bundled sample (a row of the evaluation snapshot projected on the
        request schema), else one built from the schema's defaults/examples; without either only the
        model itself is called (on a row of missing values, which its preprocessor imputes).
        """
        samples = self.config.sample_requests
        probe = samples[0] if samples else example_request(self.models.schema)
        if probe is not None:
            row = self.models.request.model_validate_json(json.dumps({**probe, REQUEST_ID_FIELD: "warmup"}))
            self.score([row], log_rows=False, traffic="warmup", enforce=False)
        else:
            frame = pd.DataFrame({c: [np.nan] for c in self.config.raw_columns})
            for c in self.config.categorical:
                frame[c] = frame[c].astype(object)
            self.champion(frame)
        self.ready = True

    # -- features
    def _event_times(self, rows: Sequence[Mapping[str, Any]], now: datetime) -> list[datetime]:
        return [r.get(EVENT_TIME_FIELD) or now for r in rows]

    def lookup(
        self, requests: Sequence[Any], *, now: datetime | None = None
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(raw feature frame in the model's column order, full frame incl. entity keys for the log)."""
        frame, full, _ = self._lookup([_as_dict(r) for r in requests], now or datetime.now(UTC))
        return frame, full

    def _lookup(self, rows: list[dict[str, Any]], now: datetime) -> tuple[pd.DataFrame, pd.DataFrame, Any]:
        cfg = self.config
        times = self._event_times(rows, now)
        got = self.online.read(rows, times)
        n = len(rows)
        numeric = set(cfg.numeric)
        data: dict[str, Any] = {}
        for col in dict.fromkeys([*self.entity_keys, *self.request_fields, *self.served, *cfg.raw_columns]):
            if col in got.values and col not in self.entity_keys:
                values = got.values[col]
            elif col in rows[0] or col in self.entity_keys or col in self.request_fields:
                values = [row.get(col) for row in rows]
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
        return full[cfg.raw_columns], full, got

    # -- scoring
    def score(self, requests: Sequence[Any], **kw: Any) -> list[BaseModel]:
        """Predictions for ``requests`` (request models or dicts); keywords of :meth:`score_rows`."""
        return self.score_rows(requests, **kw).predictions

    def score_rows(
        self,
        requests: Sequence[Any],
        *,
        source: str = "online",
        log_rows: bool = True,
        traffic: str | Sequence[str] | None = None,
        on_stale: Callable[[list[list[str]]], Sequence[bool]] | None = None,
        enforce: bool = True,
        now: datetime | None = None,
    ) -> Scored:
        """Score a batch; ``traffic``: one class for all rows or one per row (default ``live``).

        With ``stale_features: reject`` (and ``enforce``) rows with stale features are refused: ``on_stale``
        receives the stale features per row and returns, per row, whether it is refused (refused rows are
        answered but not logged; the service turns their requests into 422). Without ``on_stale`` a stale
        row raises :class:`StaleFeaturesError`.
        """
        if not requests:
            return Scored([], [], 0)
        cfg = self.config
        rows = [_as_dict(r) for r in requests]
        n = len(rows)
        now = now or datetime.now(UTC)
        with self._lock:  # (the baseline's thread pool queues here; BentoML's batcher queues before)
            t0 = time.perf_counter()
            frame, full, got = self._lookup(rows, now)
            t1 = time.perf_counter()
            stale = got.stale_by_row(n)
            refused = [False] * n
            if enforce and cfg.stale_features == "reject" and any(stale):
                if on_stale is None:
                    named = {str(rows[i].get(REQUEST_ID_FIELD) or i): s for i, s in enumerate(stale) if s}
                    raise StaleFeaturesError(f"stale features (older than their view's TTL): {named}", named)
                refused = [bool(x) for x in on_stale(stale)]
            result = run_experiment(frame, rows if self.experiment else [], self.experiment, self.champion,
                                    self.challenger)
        t2 = time.perf_counter()
        served = result["served"]
        self._check_outputs(served, n)
        self.last_feature_seconds = t1 - t0
        to_chall = result["to_challenger"]
        chall_version = self.experiment.challenger_version if self.experiment else ""
        versions = [chall_version if c else cfg.model_version for c in to_chall]
        ids = [r.get(REQUEST_ID_FIELD) or uuid.uuid4().hex for r in rows]
        outputs = [self._output(served[i]) for i in range(n)]
        traffics = [traffic] * n if traffic is None or isinstance(traffic, str) else list(traffic)
        missing, unknown = self._missing(full, got)
        logged = 0
        if log_rows:
            keep = [i for i in range(n) if not refused[i]]
            columns = {c: full[c].to_numpy().tolist() for c in full.columns}
            batch_ms = round((t2 - t0) * 1000.0, 3)
            feat_ms = round((t1 - t0) * 1000.0, 3)
            records = []
            for i in keep:
                rec: dict[str, Any] = {c: v[i] for c, v in columns.items()}
                for feat, ages in got.ages.items():
                    rec[AGE_PREFIX + feat] = ages[i]
                rec["request_id"] = ids[i]
                rec["timestamp"] = log_time(rows[i].get(EVENT_TIME_FIELD) or now)
                rec["traffic"] = traffics[i] or DEFAULT_TRAFFIC
                rec["model_version"] = versions[i]
                rec.update(self._log_columns(outputs[i]))
                rec["source"] = source
                rec["latency_ms"] = batch_ms
                rec["feature_ms"] = feat_ms
                rec["batch_rows"] = n
                rec["missing_features"] = int(missing[i])
                rec["stale_features"] = ",".join(stale[i])
                rec["unknown_entities"] = unknown[i]
                if self.experiment is not None:
                    rec["variant"] = CHALLENGER if to_chall[i] else CHAMPION
                    rec["experiment"] = self.experiment.name
                    rec["experiment_mode"] = self.experiment.mode
                    rec["challenger_version"] = chall_version
                    rec["champion_prediction"] = self._primary(result["champion"][i])
                    rec["challenger_prediction"] = self._primary(result["challenger"][i])
                records.append(rec)
            self.log_writer.write_batch(records, timestamp=now)
            logged = len(records)
        _observe(feature_seconds=t1 - t0, rows=n, unknown=[u for u in unknown if u], lookup=got,
                 missing=missing)
        preds = [
            self.models.prediction(request_id=rid, model_version=v, **out)
            for rid, v, out in zip(ids, versions, outputs, strict=True)
        ]
        return Scored(preds, stale, logged)

    # -- outputs per task (TASK-CONTRACT)
    def _check_outputs(self, served: np.ndarray, n: int) -> None:
        t = self.task
        want_2d = t.type == "multiclass" or (t.type == "regression" and bool(t.quantiles))
        k = len(t.classes or []) if t.type == "multiclass" else 1 + len(t.quantiles or [])
        ok = len(served) == n and (served.ndim == 2 and served.shape[1] == k if want_2d else served.ndim == 1)
        if not ok or not np.all(np.isfinite(served)):
            raise RuntimeError(
                f"Model {self.config.model_tag} ({t.type}) returned outputs of shape {served.shape} for {n} "
                f"rows{' (expected ' + str(k) + ' columns)' if want_2d else ''} or non-finite values"
            )

    def _output(self, v: np.ndarray) -> dict[str, Any]:
        t = self.task
        if t.type == "binary":
            p = float(min(1.0, max(0.0, float(v))))
            return {"probability": p, "prediction": int(p >= self.config.threshold)}
        if t.type == "multiclass":
            classes = list(t.classes or [])
            probs = np.clip(np.asarray(v, dtype="float64"), 0.0, 1.0)
            return {"prediction": classes[int(np.argmax(probs))],
                    "probabilities": {str(c): float(p) for c, p in zip(classes, probs, strict=True)}}
        if t.quantiles:
            arr = np.asarray(v, dtype="float64")
            return {"prediction": float(arr[0]),
                    "quantiles": {str(q): float(x) for q, x in zip(t.quantiles, arr[1:], strict=True)}}
        return {"prediction": float(v)}

    def _log_columns(self, out: Mapping[str, Any]) -> dict[str, Any]:
        t = self.task
        if t.type == "binary":
            return {"probability": out["probability"], "prediction": out["prediction"]}
        if t.type == "multiclass":
            return {"prediction": out["prediction"], "probabilities": json.dumps(out["probabilities"])}
        rec = {"prediction": out["prediction"]}
        for q, x in (out.get("quantiles") or {}).items():
            rec[f"quantile_{q}"] = x
        return rec

    def _primary(self, v: Any) -> Any:
        """The score logged for an experiment variant (binary: probability; multiclass: the label)."""
        arr = np.asarray(v, dtype="float64")
        if not np.all(np.isfinite(arr)):
            return None
        if self.task.type == "multiclass":
            return (self.task.classes or [])[int(np.argmax(arr))]
        return float(arr.reshape(-1)[0])

    def _missing(self, full: pd.DataFrame, got: Any) -> tuple[np.ndarray, list[str]]:
        """Per row: the number of missing (imputed) model columns, and the entities the store has no row for."""
        cols = [c for c in self.config.raw_columns if c in full.columns]
        missing = full[cols].isna().to_numpy().sum(axis=1)
        absent: dict[str, set[int]] = {f: set(rows) for f, rows in got.missing.items()}
        unknown_by_entity = {
            ent: set.intersection(*(absent.get(c, set()) for c in cols_))
            for ent, cols_ in self.entity_features.items()
            if cols_
        }
        unknown = [",".join(e for e, rows in unknown_by_entity.items() if i in rows) for i in range(len(full))]
        return missing, unknown

    def info(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "status": "ok" if self.ready else "starting",
            "model_name": cfg.model_name,
            "model_tag": cfg.model_tag,
            "model_version": cfg.model_version,
            "bento_tag": cfg.bento_tag,
            "feature_service": cfg.feature_service,
            "task": cfg.task.model_dump(),
            "stale_features": cfg.stale_features,
            "limits": cfg.limits.model_dump(),
            "experiment": cfg.experiment.model_dump() if cfg.experiment else None,
        }

    def close(self) -> None:
        self.log_writer.close()


# ---------------------------------------------------------------------------- metrics
_METRICS: dict[str, Any] = {}
#: Buckets of ``mlops_feature_age_seconds`` (1 min .. 1 year).
AGE_BUCKETS = (60, 300, 900, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400, 30 * 86400,
               365 * 86400)


def _metrics() -> dict[str, Any]:
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
        _METRICS["stale"] = prom.Counter(
            "mlops_feature_stale", "Feature values older than their view's TTL (or newer than the request) "
            "at request time: not served", labelnames=["feature"]
        )
        _METRICS["missing"] = prom.Counter(
            "mlops_feature_missing", "Feature values the online store did not have at request time",
            labelnames=["feature"],
        )
        _METRICS["age"] = prom.Histogram(
            "mlops_feature_age_seconds", "Age of the served feature values at the request's event time",
            labelnames=["view"], buckets=AGE_BUCKETS,
        )
    return _METRICS


def _observe(*, feature_seconds: float, rows: int, unknown: list[str], lookup: Any = None,
             missing: Any = None) -> None:
    """Prometheus metrics (``prometheus_client``; BentoML's ``/metrics`` exports them, multiprocess-safe)."""
    try:
        m = _metrics()
        m["lookup"].observe(feature_seconds)
        m["rows"].inc(rows)
        for u in unknown:
            for ent in u.split(","):
                m["unknown"].labels(entity=ent).inc()
        if lookup is not None:
            for feat, idx in lookup.stale.items():
                m["stale"].labels(feature=feat).inc(len(idx))
            for feat, idx in lookup.missing.items():
                m["missing"].labels(feature=feat).inc(len(idx))
            for view, ages in lookup.view_ages.items():
                hist = m["age"].labels(view=view)
                for a in ages:
                    hist.observe(a)
    except Exception:  # noqa: BLE001 - metrics never break a prediction
        log.debug("metrics update failed", exc_info=True)
