"""Infra validation of a bento before it is deployed: serve it on a free loopback port and check it.

:func:`infra_validate` starts ``bentoml serve <bento>`` on ``127.0.0.1:<free port>``, waits for
``/readyz``, then replays

- the MLflow **input example** of the model version the bento packages, and
- a deterministic **sample of the evaluation snapshot** (the validation split of the snapshot the
  version was trained on: model version tag ``snapshot_path``),

one row per request (latency) and once as a single batch (the batch path). It checks

1. ``schema``: every answer is a list of ``{request_id: str (echoed), model_version: str (the
   bento's, or its experiment challenger's), probability: finite float in [0, 1], delayed: bool (= probability >= threshold)}``;
2. ``parity``: each probability equals the **registered model's own prediction** (``mlflow.pyfunc``
   of ``models:/<name>/<version>``) on the same features, within ``tolerance``; the features are
   looked up in the bento's Feast feature service exactly as the service does (online store, the
   request's entity keys and request-time fields);
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
from mlops_provider.runtime.io.atomic import atomic_write_json
from mlops_provider.runtime.io.objstore import ObjectStore
from mlops_provider.runtime.serving.package import bento_config, safe_name
from mlops_provider.runtime.serving.process import free_port, start_server, stop_server, wait_ready

log = logging.getLogger(__name__)

#: Entity keys every request carries (the service passes them to Feast); a row without one gets a
#: placeholder that is unknown to the online store (the service's defined fallback: NaN features).
ENTITY_KEYS = ("origin", "carrier", "tailnum")
PLACEHOLDER = {"origin": "UNK", "carrier": "UN", "tailnum": "UNKNOWN"}
REQUEST_ID_PREFIX = "infra-"


def _jsonable(v: Any) -> Any:
    import numpy as np

    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def requests_from_frame(frame: Any, cfg: Mapping[str, Any], prefix: str) -> list[dict[str, Any]]:
    """Service requests (entity keys + request-time fields) from rows of raw feature columns."""
    import pandas as pd

    fields = [*ENTITY_KEYS, *[f for f in cfg.get("request_fields", []) if f not in ENTITY_KEYS]]
    out: list[dict[str, Any]] = []
    for i, row in enumerate(frame.to_dict(orient="records")):
        req: dict[str, Any] = {}
        for f in fields:
            v = row.get(f)
            if (
                v is None
                or (isinstance(v, float) and math.isnan(v))
                or v is pd.NaT
                or str(v) in ("", "nan", "None")
            ):
                if f in PLACEHOLDER:
                    req[f] = PLACEHOLDER[f]
                continue
            req[f] = _jsonable(v) if f not in ENTITY_KEYS else str(v)
        req["request_id"] = f"{prefix}{i}"
        out.append(req)
    return out


def expected_frame(requests: Sequence[Mapping[str, Any]], cfg: Mapping[str, Any]) -> Any:
    """The model input the service builds for ``requests``: Feast online features + request fields."""
    import feast
    import numpy as np
    import pandas as pd

    store = feast.FeatureStore(repo_path=str(cfg["feature_repo"]))
    service = store.get_feature_service(str(cfg["feature_service"]))
    rows = [{k: v for k, v in r.items() if k != "request_id"} for r in requests]
    request_fields = list(cfg.get("request_fields", []))
    entity_rows = [{k: row[k] for k in (*ENTITY_KEYS, *request_fields) if k in row} for row in rows]
    online = store.get_online_features(
        features=service, entity_rows=entity_rows, full_feature_names=False
    ).to_df()
    req = pd.DataFrame(rows)
    categorical, numeric = list(cfg.get("categorical", [])), list(cfg.get("numeric", []))
    raw = [*categorical, *numeric]
    full = pd.DataFrame(index=range(len(rows)))
    for col in raw:
        if col in online.columns:
            full[col] = online[col].to_numpy()
        elif col in req.columns:
            full[col] = req[col].to_numpy()
        else:
            full[col] = np.nan
    for col in numeric:
        full[col] = pd.to_numeric(full[col], errors="coerce").astype("float64")
    for col in categorical:
        full[col] = full[col].astype("object")
    return full[raw]


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


def _snapshot_sample(path: str, rows: int, store: ObjectStore | None) -> Any | None:
    from mlops_provider.runtime.features.snapshot import load_snapshot

    df, _ = load_snapshot(path, verify=False, store=store)
    if "split" in df.columns and (df["split"] == "validation").any():
        df = df[df["split"] == "validation"]
    if df.empty:
        return None
    return df.sample(n=min(rows, len(df)), random_state=0).reset_index(drop=True)


def served_versions(cfg: Mapping[str, Any]) -> list[str]:
    """MLflow versions the bento may answer with: the champion, plus the challenger of an experiment."""
    versions = [str(cfg["model_version"])]
    exp = cfg.get("experiment") or {}
    if isinstance(exp, Mapping) and exp.get("challenger_version"):
        versions.append(str(exp["challenger_version"]))
    return versions


def _check_items(body: Any, reqs: list[dict[str, Any]], cfg: Mapping[str, Any], where: str) -> list[str]:
    """Schema problems of one answer (empty = fine)."""
    problems: list[str] = []
    if not isinstance(body, list) or len(body) != len(reqs):
        return [f"{where}: expected a list of {len(reqs)} predictions, got {str(body)[:200]}"]
    threshold = float(cfg.get("threshold", 0.5))
    for req, item in zip(reqs, body, strict=True):
        if not isinstance(item, dict):
            problems.append(f"{where}: item {item!r} is not an object")
            continue
        p = item.get("probability")
        if item.get("request_id") != req["request_id"]:
            problems.append(f"{where}: request_id {item.get('request_id')!r} != sent {req['request_id']!r}")
        if str(item.get("model_version")) not in served_versions(cfg):
            problems.append(
                f"{where}: model_version {item.get('model_version')!r} not one of {served_versions(cfg)}"
            )
        if (
            not isinstance(p, int | float)
            or isinstance(p, bool)
            or not math.isfinite(p)
            or not 0.0 <= p <= 1.0
        ):
            problems.append(f"{where}: probability {p!r} is not a finite number in [0, 1]")
        elif not isinstance(item.get("delayed"), bool) or item["delayed"] != (p >= threshold):
            problems.append(
                f"{where}: delayed {item.get('delayed')!r} inconsistent with probability {p} >= {threshold}"
            )
    return problems


def _quantile(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    idx = min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))
    return s[idx]


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

    ``store`` reads an ``s3://`` snapshot (None: the process's default store).
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
        sample = _snapshot_sample(str(snap), sample_rows, store)
        if sample is not None:
            frames["snapshot_sample"] = sample
    if not frames:
        raise InfraValidationError(
            f"Nothing to replay against {bento_tag}: {model_uri} has no input example and no evaluation snapshot "
            "(model version tag 'snapshot_path'). Log the model with an input_example or pass snapshot=...",
            report={"bento_tag": bento_tag, "model_uri": model_uri},
        )
    reqs: list[dict[str, Any]] = []
    sources: list[str] = []
    for name, frame in frames.items():
        part = requests_from_frame(frame, cfg, f"{REQUEST_ID_PREFIX}{name}-")
        reqs.extend(part)
        sources.extend([name] * len(part))

    # ---- the registered model's own predictions on the features the service will look up
    x = expected_frame(reqs, cfg)
    expected: dict[str, Any] = {}
    for v in served_versions(cfg):
        model = mlflow.pyfunc.load_model(f"models:/{model_name}/{v}")
        expected[v] = np.asarray(model.predict(x), dtype="float64").reshape(-1)

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
        "replayed": {k: len(v) for k, v in frames.items()},
        "snapshot": str(snap) if snap else None,
        "tolerance": tolerance,
        "latency_budget_ms": latency_budget_ms,
        "latency_quantile": latency_quantile,
        "started_at": datetime.now(UTC).isoformat(),
    }
    problems: list[str] = []
    t_start = time.monotonic()
    proc, offset = start_server(bento_tag, host, port, log_file, bentoml_home_dir=bentoml_home_dir)
    report["pid"] = proc.pid
    try:
        wait_ready(
            proc, url, log_file, offset, ready_timeout, bento_tag, consequence="nothing was deployed"
        )
        report["ready_after_s"] = round(time.monotonic() - t_start, 2)
        latencies: list[float] = []
        got = np.full(len(reqs), np.nan)
        want = np.full(len(reqs), np.nan)  # the registered model's prediction for the version that answered
        with httpx.Client(base_url=url, timeout=60) as http:
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
                bad = _check_items(body, [req], cfg, f"{sources[i]} row {i}")
                problems.extend(f"schema: {b}" for b in bad)
                if not bad:
                    got[i] = float(body[0]["probability"])
                    want[i] = expected[str(body[0]["model_version"])][i]
            batch = http.post("/predict", json={"requests": reqs})
            if batch.status_code != 200:
                problems.append(
                    f"schema: batch of {len(reqs)} got HTTP {batch.status_code}: {batch.text[:200]}"
                )
            else:
                bad = _check_items(batch.json(), reqs, cfg, "batch")
                problems.extend(f"schema: {b}" for b in bad)
                if not bad:
                    items = batch.json()
                    batch_p = np.array([float(b["probability"]) for b in items])
                    batch_w = np.array([expected[str(b["model_version"])][i] for i, b in enumerate(items)])
                    diff = np.abs(batch_p - batch_w)
                    report["batch_max_abs_diff"] = float(diff.max())
                    if float(diff.max()) > tolerance:
                        problems.append(
                            f"parity: batch predictions differ from {model_uri} by up to {diff.max():.3g}"
                        )
        ok = np.isfinite(got)
        diffs = np.abs(got[ok] - want[ok])
        report["max_abs_diff"] = float(diffs.max()) if diffs.size else None
        for i in (int(j) for j in np.flatnonzero(ok)):
            if abs(got[i] - want[i]) > tolerance:
                problems.append(
                    f"parity: {sources[i]} row {i} served {got[i]:.6f} but the registered model predicts {want[i]:.6f} "
                    f"(tolerance {tolerance})"
                )
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
        out = Path(report_dir) / f"{safe_name(bento_tag.replace(':', '-'))}.json"
        atomic_write_json(out, report, sort_keys=False)
        report["report_path"] = str(out)
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
