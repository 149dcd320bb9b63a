"""Infra validation of a bento before it is deployed: serve it on a free loopback port and check it.

:func:`infra_validate` starts ``bentoml serve <bento>`` on ``127.0.0.1:<free port>``, waits for
``/readyz``, then replays

- the MLflow **input example** of the model version the bento packages, and
- a deterministic **sample of the evaluation snapshot** (the evaluation split -- else the validation
  split -- of the snapshot the version was trained on: model version tag ``snapshot_path``),

both **projected on the bento's request schema** (entity keys and request-time fields; a missing value takes
the field's default or example, else the row is skipped), one row per request (latency) and once as a
single batch (the batch path), with header ``X-Mlops-Traffic: infra_validation`` and one pinned
``event_timestamp`` (so the expected features are those of the same instant). It checks

1. ``schema``: every answer validates against the bento's response model (task-specific: binary
   ``probability`` + ``prediction`` = probability >= threshold; multiclass ``prediction`` = the most
   probable class + ``probabilities``; regression ``prediction`` [+ ``quantiles``]), echoes the request_id
   and names a version the bento serves (its own, or its experiment challenger's);
2. ``parity``: the served scores equal the **registered model's own prediction** (``mlflow.pyfunc`` of
   ``models:/<name>/<version>``) on the same features, within ``tolerance``; the features are looked up
   by the service's own code (:meth:`~mlops_provider.runtime.serving.scorer.Scorer.lookup`: online store,
   TTLs enforced as of the pinned event time). The tolerance is absolute for scores within +-1
   (probabilities) and relative beyond (a regression target of 40 differs in float32 by ~1e-5 between a
   one-row and a batched forward pass);
3. ``latency``: the ``latency_quantile`` of the single-row request latencies is within
   ``latency_budget_ms``.

The server is always stopped (``finally``). Any failed check raises
:class:`~mlops_provider.exceptions.InfraValidationError` carrying the full report; the report is
also returned (and written as JSON when ``report_dir`` is given).
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops_provider.exceptions import DeploymentError, InfraValidationError
from mlops_provider.runtime.io import objstore
from mlops_provider.runtime.io.objstore import ObjectStore
from mlops_provider.runtime.serving.package import bento_config, safe_name
from mlops_provider.runtime.serving.process import free_port, start_server, stop_server, wait_ready

log = logging.getLogger(__name__)

REQUEST_ID_PREFIX = "infra-"
TRAFFIC = "infra_validation"


def bento_schema(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The request schema bundled in a bento config (built from its feature service for older bentos)."""
    if cfg.get("request_schema"):
        return dict(cfg["request_schema"])
    import feast

    from mlops_provider.runtime.serving.feature_service import feature_service_info
    from mlops_provider.runtime.serving.request_schema import request_schema

    store = feast.FeatureStore(repo_path=str(cfg["feature_repo"]))
    info = feature_service_info(store, str(cfg["feature_service"]), model=str(cfg["model_name"]))
    return request_schema({**info, "model": str(cfg["model_name"])})


def requests_from_frame(
    frame: Any, cfg: Mapping[str, Any], prefix: str, event_timestamp: str | None = None
) -> list[dict[str, Any]]:
    """Service requests (the bento's request schema) from rows of raw feature columns."""
    from mlops_provider.runtime.serving.request_schema import EVENT_TIME_FIELD, project_requests

    schema = bento_schema(cfg)
    reqs, _ = project_requests(frame.to_dict(orient="records"), schema, prefix=prefix)
    if event_timestamp and any(f["name"] == EVENT_TIME_FIELD for f in schema["fields"]):
        for r in reqs:
            r[EVENT_TIME_FIELD] = event_timestamp
    return reqs


def _lookup_scorer(cfg: Mapping[str, Any], log_dir: str) -> Any:
    """A scorer of the bento's config that only looks features up (the service's own lookup code)."""
    import numpy as np

    from mlops_provider.runtime.serving.schema import ServiceConfig
    from mlops_provider.runtime.serving.scorer import Scorer

    data = {**dict(cfg), "experiment": None, "inference_log_dir": log_dir}
    return Scorer(ServiceConfig.model_validate(data), load_model=lambda tag: (lambda f: np.zeros(len(f))))


def expected_frame(requests: Sequence[Mapping[str, Any]], cfg: Mapping[str, Any]) -> Any:
    """The model input the service builds for ``requests``: its own lookup (TTLs as of each event time)."""
    with tempfile.TemporaryDirectory(prefix="mlops-infra-lookup-") as tmp:
        scorer = _lookup_scorer(cfg, tmp)
        try:
            rows = [scorer.models.request.model_validate_json(json.dumps(dict(r))) for r in requests]
            frame, _ = scorer.lookup(rows)
        finally:
            scorer.close()
    return frame


def _input_example(model_uri: str) -> Any | None:
    """The MLflow input example logged with the model (a DataFrame), or None."""
    import mlflow
    from mlflow.models import Model

    with tempfile.TemporaryDirectory(prefix="mlops-infra-") as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp)
        try:
            example = Model.load(local).load_input_example(local)
        except Exception as e:  # noqa: BLE001 - a model without a (readable) example is allowed
            log.warning("Cannot read the input example of %s: %s", model_uri, e)
            return None
    return example


def served_versions(cfg: Mapping[str, Any]) -> list[str]:
    """MLflow versions the bento may answer with: the champion, plus the challenger of an experiment."""
    versions = [str(cfg["model_version"])]
    exp = cfg.get("experiment") or {}
    if isinstance(exp, Mapping) and exp.get("challenger_version"):
        versions.append(str(exp["challenger_version"]))
    return versions


def _scores(item: Mapping[str, Any], task: Mapping[str, Any]) -> list[float]:
    """The numbers of one answer that must equal the registered model's output (per task)."""
    kind = task.get("type", "binary")
    if kind == "binary":
        return [float(item["probability"])]
    if kind == "multiclass":
        return [float(item["probabilities"][str(c)]) for c in task.get("classes") or []]
    return [float(item["prediction"]), *[float(item["quantiles"][str(q)]) for q in task.get("quantiles") or []]]


def _expected_scores(raw: Any, task: Mapping[str, Any]) -> Any:
    """The registered model's output as the service serves it (binary: clipped to [0, 1]), one row per request."""
    import numpy as np

    out = np.asarray(raw, dtype="float64")
    if out.ndim == 1:
        out = out.reshape(-1, 1)
    if task.get("type", "binary") == "binary":
        out = np.clip(out, 0.0, 1.0)
    if task.get("type") == "multiclass":
        out = np.clip(out, 0.0, 1.0)
    return out


def _check_items(
    body: Any, reqs: list[dict[str, Any]], cfg: Mapping[str, Any], where: str, models: Any = None
) -> list[str]:
    """Schema problems of one answer (empty = fine)."""
    from pydantic import ValidationError

    problems: list[str] = []
    if not isinstance(body, list) or len(body) != len(reqs):
        return [f"{where}: expected a list of {len(reqs)} predictions, got {str(body)[:200]}"]
    task = dict(cfg.get("task") or {"type": "binary"})
    threshold = float(cfg.get("threshold", 0.5))
    for req, item in zip(reqs, body, strict=True):
        if not isinstance(item, dict):
            problems.append(f"{where}: item {item!r} is not an object")
            continue
        if models is not None:
            try:
                models.prediction.model_validate(item)
            except ValidationError as e:
                problems.append(f"{where}: {item!r} does not fit {models.prediction.__name__}: "
                                f"{e.errors()[0]['loc']} {e.errors()[0]['msg']}")
                continue
        if item.get("request_id") != req["request_id"]:
            problems.append(f"{where}: request_id {item.get('request_id')!r} != sent {req['request_id']!r}")
        if str(item.get("model_version")) not in served_versions(cfg):
            problems.append(
                f"{where}: model_version {item.get('model_version')!r} not one of {served_versions(cfg)}"
            )
        kind = task.get("type", "binary")
        try:
            scores = _scores(item, task)
        except (KeyError, TypeError, ValueError) as e:
            problems.append(f"{where}: answer {item!r} lacks the {kind} fields ({e})")
            continue
        if not all(math.isfinite(x) for x in scores):
            problems.append(f"{where}: non-finite score in {item!r}")
            continue
        if kind == "binary":
            p = scores[0]
            if not 0.0 <= p <= 1.0:
                problems.append(f"{where}: probability {p!r} is not in [0, 1]")
            elif item.get("prediction") != int(p >= threshold) or isinstance(item.get("prediction"), bool):
                problems.append(
                    f"{where}: prediction {item.get('prediction')!r} inconsistent with probability {p} >= {threshold}"
                )
        elif kind == "multiclass":
            classes = list(task.get("classes") or [])
            best = classes[max(range(len(classes)), key=lambda k: scores[k])] if classes else None
            if str(item.get("prediction")) != str(best):
                problems.append(f"{where}: prediction {item.get('prediction')!r} is not the most probable class {best!r}")
    return problems


def _quantile(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    idx = min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))
    return s[idx]



def _parity_diff(got: Any, want: Any) -> float:
    """Largest difference of served vs registered scores: absolute within +-1, relative beyond."""
    import numpy as np

    got, want = np.asarray(got, dtype=float), np.asarray(want, dtype=float)
    return float(np.max(np.abs(got - want) / np.maximum(1.0, np.abs(want))))

def infra_validate(
    bento_tag: str,
    *,
    bentoml_home_dir: str | os.PathLike[str] | None = None,
    mlflow_tracking_uri: str | None = None,
    mlflow_registry_uri: str | None = None,
    snapshot: str | None = None,
    sample_rows: int = 20,
    tolerance: float = 1e-5,
    latency_budget_ms: float = 1000.0,
    latency_quantile: float = 0.95,
    ready_timeout: float = 180.0,
    host: str = "127.0.0.1",
    report_dir: str | os.PathLike[str] | None = None,
    store: ObjectStore | None = None,
) -> dict[str, Any]:
    """Serve ``bento_tag`` on a free loopback port and validate it (module docstring); returns the report.

    ``store`` reads an ``s3://`` snapshot and writes to an ``s3://`` ``report_dir`` (None: the process's
    default store).
    """
    import httpx
    import mlflow
    import numpy as np
    import pandas as pd
    from mlflow import MlflowClient

    cfg = bento_config(bento_tag, bentoml_home_dir)
    model_name, version = str(cfg["model_name"]), str(cfg["model_version"])
    model_uri = f"models:/{model_name}/{version}"
    if mlflow_tracking_uri:
        mlflow.set_tracking_uri(mlflow_tracking_uri)
    registry = mlflow_registry_uri or mlflow_tracking_uri
    if registry:
        mlflow.set_registry_uri(registry)

    # ---- what to replay (before the server starts: a missing input fails fast)
    frames: dict[str, Any] = {}
    example = _input_example(model_uri)
    if example is not None and len(example):
        frames["input_example"] = pd.DataFrame(example).reset_index(drop=True)
    snap = snapshot
    if not snap:
        client = MlflowClient(
            tracking_uri=mlflow_tracking_uri, registry_uri=mlflow_registry_uri or mlflow_tracking_uri
        )
        snap = client.get_model_version(model_name, version).tags.get("snapshot_path")
    if snap and sample_rows > 0:
        from mlops_provider.runtime.serving.contract import evaluation_sample

        sample = evaluation_sample(str(snap), sample_rows, store)
        if sample is not None:
            frames["snapshot_sample"] = sample
    if not frames:
        raise InfraValidationError(
            f"Nothing to replay against {bento_tag}: {model_uri} has no input example and no evaluation snapshot "
            "(model version tag 'snapshot_path'). Log the model with an input_example or pass snapshot=...",
            report={"bento_tag": bento_tag, "model_uri": model_uri},
        )
    from mlops_provider.runtime.serving.schema import TaskInfo, build_models

    schema = bento_schema(cfg)
    task = dict(cfg.get("task") or {"type": "binary"})
    models = build_models(schema, TaskInfo.model_validate(task))
    pinned = datetime.now(UTC).replace(microsecond=0).isoformat()
    reqs: list[dict[str, Any]] = []
    sources: list[str] = []
    for name, frame in frames.items():
        part = requests_from_frame(frame, {**cfg, "request_schema": schema}, f"{REQUEST_ID_PREFIX}{name}-", pinned)
        reqs.extend(part)
        sources.extend([name] * len(part))
    if not reqs:
        raise InfraValidationError(
            f"Nothing to replay against {bento_tag}: no row of {sorted(frames)} fits its request schema "
            f"({[f['name'] for f in schema['fields'] if f.get('required')]} required). Give the fields defaults or "
            "examples in serving.request.fields, or log an input example with them.",
            report={"bento_tag": bento_tag, "model_uri": model_uri},
        )

    # ---- the registered model's own predictions on the features the service will look up
    x = expected_frame(reqs, {**cfg, "request_schema": schema})
    expected: dict[str, Any] = {}
    for v in served_versions(cfg):
        model = mlflow.pyfunc.load_model(f"models:/{model_name}/{v}")
        expected[v] = _expected_scores(model.predict(x), task)

    # ---- serve, replay, check; always stop the server
    port = free_port(host)
    url = f"http://{host}:{port}"
    log_dir = Path(tempfile.mkdtemp(prefix="mlops-infra-validate-"))
    log_file = log_dir / f"{safe_name(bento_tag.split(':', 1)[-1])}-{port}.log"
    report: dict[str, Any] = {
        "bento_tag": bento_tag,
        "model_uri": model_uri,
        "url": url,
        "log_file": str(log_file),
        "replayed": {k: sources.count(k) for k in frames},
        "snapshot": str(snap) if snap else None,
        "task": task.get("type", "binary"),
        "event_timestamp": pinned,
        "tolerance": tolerance,
        "latency_budget_ms": latency_budget_ms,
        "latency_quantile": latency_quantile,
        "started_at": datetime.now(UTC).isoformat(),
    }
    problems: list[str] = []
    t_start = time.monotonic()
    proc, offset = start_server(bento_tag, host, port, log_file, bentoml_home_dir=bentoml_home_dir)
    report["pid"] = proc.pid
    from mlops_provider.runtime.serving.request_schema import TRAFFIC_HEADER

    headers = {TRAFFIC_HEADER: TRAFFIC}
    try:
        wait_ready(
            proc, url, log_file, offset, ready_timeout, bento_tag, consequence="nothing was deployed"
        )
        report["ready_after_s"] = round(time.monotonic() - t_start, 2)
        latencies: list[float] = []
        diffs: list[float] = []
        with httpx.Client(base_url=url, timeout=60, headers=headers) as http:
            http.post("/predict", json={"requests": [reqs[0]]})  # warm-up (first-call overheads)
            for i, req in enumerate(reqs):
                t0 = time.perf_counter()
                resp = http.post("/predict", json={"requests": [req]})
                latencies.append((time.perf_counter() - t0) * 1000.0)
                if resp.status_code != 200:
                    problems.append(
                        f"schema: {sources[i]} row {i} got HTTP {resp.status_code}: {resp.text[:200]}"
                    )
                    continue
                body = resp.json()
                bad = _check_items(body, [req], cfg, f"{sources[i]} row {i}", models)
                problems.extend(f"schema: {b}" for b in bad)
                if not bad:
                    got = np.array(_scores(body[0], task))
                    want = expected[str(body[0]["model_version"])][i]
                    d = _parity_diff(got, want)
                    diffs.append(d)
                    if d > tolerance:
                        problems.append(
                            f"parity: {sources[i]} row {i} served {got.tolist()} but the registered model predicts "
                            f"{want.tolist()} (tolerance {tolerance})"
                        )
            batch = http.post("/predict", json={"requests": reqs})
            if batch.status_code != 200:
                problems.append(
                    f"schema: batch of {len(reqs)} got HTTP {batch.status_code}: {batch.text[:200]}"
                )
            else:
                bad = _check_items(batch.json(), reqs, cfg, "batch", models)
                problems.extend(f"schema: {b}" for b in bad)
                if not bad:
                    items = batch.json()
                    batch_p = np.array([_scores(b, task) for b in items])
                    batch_w = np.array([expected[str(b["model_version"])][i] for i, b in enumerate(items)])
                    bdiff = _parity_diff(batch_p, batch_w)
                    report["batch_max_abs_diff"] = bdiff
                    if bdiff > tolerance:
                        problems.append(
                            f"parity: batch predictions differ from {model_uri} by up to {bdiff:.3g}"
                        )
        report["max_abs_diff"] = max(diffs) if diffs else None
        q = _quantile(latencies, latency_quantile)
        report["latency_ms"] = {
            "p50": _quantile(latencies, 0.5),
            f"p{round(latency_quantile * 100)}": q,
            "max": max(latencies),
            "requests": len(latencies),
        }
        if not q <= latency_budget_ms:
            problems.append(
                f"latency: p{round(latency_quantile * 100)} of single-row requests is {q:.1f} ms > budget "
                f"{latency_budget_ms:.1f} ms"
            )
    except DeploymentError as e:
        problems.append(f"readiness: {e}")
    except Exception as e:  # noqa: BLE001 - any failure to talk to the server is a validation failure
        problems.append(f"serving: {type(e).__name__}: {e}")
    finally:
        stop_server(proc.pid, timeout=15)
    report["checks"] = {
        kind: not any(p.startswith(f"{kind}:") for p in problems)
        for kind in ("readiness", "serving", "schema", "parity", "latency")
    }
    report["problems"] = problems
    report["passed"] = not problems
    report["finished_at"] = datetime.now(UTC).isoformat()
    if report_dir:
        out = objstore.join(report_dir, f"{safe_name(bento_tag.replace(':', '-'))}.json")
        (store or objstore.DEFAULT_STORE).write_bytes(out, json.dumps(report, indent=2, default=str))
        report["report_path"] = out
    if problems:
        shown = "\n  - ".join(problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise InfraValidationError(
            f"Bento {bento_tag} failed infra validation on {url} ({len(problems)} problem(s)); it is not deployed, "
            f"the current deployment keeps serving. Server log {log_file}.\n  - {shown}{more}",
            report=report,
        )
    log.info("Bento %s passed infra validation: %s", bento_tag, json.dumps(report["latency_ms"]))
    return report
