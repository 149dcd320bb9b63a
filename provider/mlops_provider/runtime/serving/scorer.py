"""The framework-free scoring core of the bento service: Feast lookup -> pyfunc(s) -> inference log.

:class:`Scorer` is what :class:`~mlops_provider.runtime.serving.service.ModelService` wraps; the FastAPI
baseline of ``benchmarks/serving_throughput.py`` uses it as is (same lookup, same model, same log).

Preprocessing: the scorer hands the **raw** feature frame (Feast online features + request fields, in
the model's column order) to the MLflow pyfunc, whose ``predict`` runs the very
:meth:`mlops_provider.runtime.training.model.Preprocessor.transform` that training used. The only
serving-side step is :meth:`Scorer.lookup` (what the offline point-in-time join does for training).

An **unknown entity** (one the feature store has no row for) is not an error: its online features
are missing and the model's preprocessor imputes them exactly as in training; the log row records
``missing_features`` and ``unknown_entities`` (and ``mlops_unknown_entity_total`` counts them).
Prometheus metrics (:func:`_observe`) are exported by BentoML's ``/metrics``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mlops_provider.exceptions import ConfigError
from mlops_provider.runtime.serving.experiments import CHALLENGER, CHAMPION, run_experiment
from mlops_provider.runtime.serving.inference_log import InferenceLogWriter
from mlops_provider.runtime.serving.schema import ENTITY_KEYS, FlightRequest, Prediction, ServiceConfig

log = logging.getLogger(__name__)


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
