"""The gate's verdict: where it is written, and the small view of it that goes to XCom (runtime module).

The full verdict (every check with value and bound, the slice tables, behavioral results, calibration
tables, ROC points, feature importances, confidence intervals) is written, on pass or fail, to

- a JSON file ``<report_dir>/gate_<model>_v<version>.json`` (local: atomic write; or an ``s3://`` object,
  through the task's :class:`~mlops_provider.runtime.io.objstore.ObjectStore`);
- ``gate/verdict.json`` + the model card on the challenger's MLflow run (``verdict_uri``);
- ``gate.*`` tags on the model version (decision, failed checks, headline metrics, report path).

XCom gets only :func:`xcom_summary`: ids, the decision, the challenger / champion versions and headline
metrics, the failed checks (names first, then value and bound of the first ones) and where the full
verdict lies. It stays under :data:`XCOM_MAX_BYTES` whatever the number of slices and tests, so the
metadata database never stores plots or tables; promote and approval read what they need from it.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from mlflow import MlflowClient

from mlops_provider.runtime.io import objstore
from mlops_provider.runtime.io.objstore import ObjectStore

#: artifact directory of the model card and the verdict on the challenger's MLflow run
CARD_DIR = "gate"
VERDICT_ARTIFACT = "verdict.json"
#: upper bound of the gate's XCom value (JSON bytes)
XCOM_MAX_BYTES = 4096
#: failed checks listed with value and bound in the XCom (the rest by name, then only counted)
XCOM_FAILED_DETAILS = 10


def json_safe(obj: Any) -> Any:
    """NaN / inf -> None so the verdict is strict JSON (XCom, MLflow artifacts, the UI)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    return obj


def report_path(report_dir: str, model_name: str, version: str) -> str:
    """``<report_dir>/gate_<model>_v<version>.json`` (a local path or an ``s3://`` URL)."""
    return objstore.join(report_dir, f"gate_{model_name}_v{version}.json")


def record(
    client: MlflowClient, model_name: str, version: str, verdict: dict[str, Any], report_dir: str,
    *, store: ObjectStore | None = None,
) -> dict[str, Any]:
    """Write the verdict JSON file (through ``store`` when ``report_dir`` is ``s3://``) and tag the version;
    returns the verdict (with ``report_path``)."""
    path = report_path(report_dir, model_name, version)
    verdict["report_path"] = path
    verdict = json_safe(verdict)
    (store or objstore.DEFAULT_STORE).write_json(path, verdict)
    failed = [c["name"] for c in verdict.get("checks", []) if not c.get("passed") and c.get("enforced", True)]
    tags = {
        "gate.decision": verdict["decision"],
        "gate.champion_version": (verdict.get("champion") or {}).get("version") or "none",
        "gate.report_path": str(path),
        "gate.snapshot_hash": str((verdict.get("evaluation_set") or {}).get("snapshot_hash") or ""),
        "gate.checks": f"{len(verdict.get('checks', [])) - len(failed)}/{len(verdict.get('checks', []))} passed",
        "gate.failed": ", ".join(failed)[:4000] or "none",
        "gate.evaluated_at": verdict["evaluated_at"],
    }
    if verdict.get("advisory_failed"):
        tags["gate.advisory_failed"] = ", ".join(verdict["advisory_failed"])[:4000]
    if verdict.get("error"):
        tags["gate.error"] = str(verdict["error"])[:4000]
    for m, v in ((verdict.get("challenger") or {}).get("metrics") or {}).items():
        if v is not None:
            tags[f"gate.{m}"] = f"{v:.6f}"
    power = verdict.get("power") or {}
    if power.get("mde") is not None:
        tags["gate.detectable_difference"] = f"{power['metric']} {power['mde']:.6f}"
    card = verdict.get("model_card") or {}
    if card.get("url"):
        tags["gate.model_card"] = card["url"]
    for k, v in tags.items():
        client.set_model_version_tag(model_name, version, k, v)
    return verdict


def log_card(
    client: MlflowClient, run_id: str, files: dict[str, Path], tracking: dict[str, Any] | None
) -> dict[str, Any]:
    """Log the model card files on the run; returns ``{"markdown", "html", "url", "verdict"}`` (artifact URIs,
    ``url`` the web UI page when the store has one; ``verdict`` where :func:`log_verdict` puts the JSON)."""
    for path in files.values():
        client.log_artifact(run_id, str(path), CARD_DIR)
    run = client.get_run(run_id)
    artifact_uri = run.info.artifact_uri.rstrip("/")
    ui = (tracking or {}).get("ui_url")
    html = f"{artifact_uri}/{CARD_DIR}/{files['html'].name}"
    url = (
        (
            f"{ui.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run_id}/artifacts/{CARD_DIR}/"
            f"{files['html'].name}"
        )
        if ui
        else html
    )
    return {
        "markdown": f"{artifact_uri}/{CARD_DIR}/{files['markdown'].name}",
        "html": html,
        "url": url,
        "verdict": f"{artifact_uri}/{CARD_DIR}/{VERDICT_ARTIFACT}",
    }


def log_verdict(client: MlflowClient, run_id: str, verdict: dict[str, Any]) -> None:
    """The full verdict as ``gate/verdict.json`` on the challenger's run."""
    with tempfile.TemporaryDirectory(prefix="mlops-verdict-") as tmp:
        path = Path(tmp) / VERDICT_ARTIFACT
        path.write_text(json.dumps(verdict, indent=2, sort_keys=True, default=str))
        client.log_artifact(run_id, str(path), CARD_DIR)


def _failed(verdict: dict[str, Any]) -> list[dict[str, Any]]:
    """The enforced failed checks of a full verdict, or the detailed ones of an XCom summary."""
    if "failed_checks" in verdict:
        return list(verdict["failed_checks"] or [])
    return [c for c in verdict.get("checks", []) if not c.get("passed") and c.get("enforced", True)]


def failed_checks_summary(verdict: dict[str, Any]) -> str:
    """``"name value vs bound bound; ..."`` of the enforced failed checks (full verdict or XCom summary)."""
    failed = _failed(verdict)

    def fmt(v: Any) -> str:
        return "nan" if v is None else f"{v:.4f}"

    parts = [f"{c['name']}: {c['message']}" if c.get("message")
             else f"{c['name']} {fmt(c.get('value'))} vs bound {fmt(c.get('bound'))}" for c in failed]
    shown = {c["name"] for c in failed}
    rest = [n for n in verdict.get("failed") or [] if n not in shown]
    rest_count = int((verdict.get("check_counts") or {}).get("failed", len(failed) + len(rest))) - len(failed)
    if rest_count > 0:
        parts.append(f"{rest_count} more ({', '.join(rest[:5])}{', ...' if rest_count > len(rest[:5]) else ''})")
    return "; ".join(parts) or "no failed check"


def _round(v: Any) -> Any:
    """Floats to 6 decimals (the XCom headline; the report keeps full precision)."""
    if isinstance(v, float):
        return round(v, 6)
    if isinstance(v, list):
        return [_round(x) for x in v]
    return v


def xcom_summary(verdict: dict[str, Any]) -> dict[str, Any]:
    """The gate's XCom value: small, bounded by :data:`XCOM_MAX_BYTES` (see the module doc).

    ``{"model", "task", "decision", "bootstrap", "primary_metric", "evaluated_at", "challenger": {"version",
    "run_id", "metrics"}, "champion": {...} | None, "evaluation_set": {"rows", "positives", "split",
    "snapshot_hash"}, "comparison": [{"metric", "guard", "delta", "ci", "tolerance", "passed"}] (the primary
    metric and every guard metric vs the champion, paired bootstrap), "power": {"metric", "mde", "se",
    "rows", "power"} (the smallest detectable difference of the primary metric), "check_counts": {"total", "passed",
    "failed", "advisory_failed"}, "failed": [names], "failed_checks": [{"name", "value", "bound", "direction",
    "message"}], "advisory_failed": [names], "warnings": n, "model_card": {"url"}, "report_path",
    "verdict_uri"}``. When the lists would break the bound, their tails are dropped (the counts stay exact;
    the report has everything).
    """
    verdict = json_safe(verdict)

    def model(role: dict[str, Any] | None) -> dict[str, Any] | None:
        if not role:
            return None
        return {"version": role.get("version"), "run_id": role.get("run_id"), "metrics": role.get("metrics") or {}}

    checks = verdict.get("checks") or []
    failed = _failed(verdict)
    advisory = list(verdict.get("advisory_failed") or [])
    ev = verdict.get("evaluation_set") or {}
    card = verdict.get("model_card") or {}
    power = verdict.get("power") or {}
    out: dict[str, Any] = {
        "model": verdict.get("model"),
        "task": verdict.get("task"),
        "decision": verdict.get("decision"),
        "bootstrap": verdict.get("bootstrap"),
        "primary_metric": verdict.get("primary_metric"),
        "evaluated_at": verdict.get("evaluated_at"),
        "challenger": model(verdict.get("challenger")),
        "champion": model(verdict.get("champion")),
        "evaluation_set": {k: ev.get(k) for k in ("rows", "positives", "split", "snapshot_hash")},
        "comparison": [{k: _round(c.get(k)) for k in ("metric", "guard", "delta", "ci", "tolerance", "passed")}
                       for c in verdict.get("comparison") or []],
        "power": {k: _round(power.get(k)) for k in ("metric", "mde", "se", "rows", "power")} if power else None,
        "check_counts": {
            "total": len(checks),
            "passed": sum(1 for c in checks if c.get("passed")),
            "failed": len(failed),
            "advisory_failed": len(advisory),
        },
        "failed": [c["name"] for c in failed],
        "failed_checks": [
            {k: c.get(k) for k in ("name", "value", "bound", "direction", "message") if k != "message" or c.get(k)}
            for c in failed[:XCOM_FAILED_DETAILS]
        ],
        "advisory_failed": advisory,
        "warnings": len(verdict.get("warnings") or []),
        "model_card": {"url": card.get("url")} if card.get("url") else None,
        "report_path": verdict.get("report_path"),
        "verdict_uri": card.get("verdict"),
    }
    # bounded: drop the names first (the first failures keep their detail in failed_checks), then the
    # advisory names, then detail (the counts, the comparison and the report keep the whole story)
    for key in ("failed", "advisory_failed", "failed_checks"):
        while out[key] and len(json.dumps(out, default=str)) > XCOM_MAX_BYTES:
            out[key].pop()
    return out


__all__ = [
    "CARD_DIR",
    "VERDICT_ARTIFACT",
    "XCOM_MAX_BYTES",
    "XCOM_FAILED_DETAILS",
    "failed_checks_summary",
    "json_safe",
    "log_card",
    "log_verdict",
    "record",
    "report_path",
    "xcom_summary",
]
