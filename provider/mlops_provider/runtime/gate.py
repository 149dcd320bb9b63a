"""Champion / challenger gate and alias promotion (runtime module: runs inside the task).

:func:`evaluate_gate` scores the challenger version and the current ``@champion`` on the SAME
frozen evaluation set (the validation split of a snapshot), checks absolute floors and the
tolerated regression against the champion, writes the verdict JSON and tags the challenger
version with ``gate.*``. A reject is a normal outcome (returned, never raised).

:func:`promote` moves ``@champion`` -> ``@previous`` and challenger -> ``@champion`` after
re-reading the registry, so a stale verdict or a concurrent promotion cannot win twice.
"""

from __future__ import annotations

import json
import logging
import math
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow import MlflowClient

from mlops_provider.exceptions import ConfigError, ModelRegistryError, TrainingError
from mlops_provider.runtime.training import binary_metrics, configure_tracking, load_snapshot_frame

log = logging.getLogger(__name__)

CHAMPION = "champion"
PREVIOUS = "previous"
HIGHER_IS_BETTER = {"roc_auc": True, "log_loss": False}


def alias_version(client: MlflowClient, model_name: str, alias: str) -> str | None:
    """Version number behind ``model_name@alias``, or None when the alias (or the model) is not set."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(model_name, alias).version)
    except MlflowException as e:
        if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def evaluation_frame(
    df: pd.DataFrame, categorical: list[str], numeric: list[str], label: str, where: str
) -> tuple[pd.DataFrame, np.ndarray]:
    """The validation split as the pyfunc's input (strings / doubles) and its labels."""
    missing = [c for c in [*categorical, *numeric, label, "split"] if c not in df.columns]
    if missing:
        raise ConfigError(f"gate: snapshot {where} lacks columns {missing}; check model.features in the YAML.")
    val = df[df["split"] == "validation"].reset_index(drop=True)
    if val.empty or val[label].nunique() < 2:
        raise TrainingError(
            f"gate: the validation split of {where} has {len(val)} rows and {val[label].nunique()} classes; "
            "it needs both classes to compute ROC AUC. Widen the validation window."
        )
    x = pd.DataFrame({c: val[c].astype(object).where(val[c].notna(), "").astype(str) for c in categorical})
    for c in numeric:
        x[c] = pd.to_numeric(val[c], errors="coerce").astype("float64")
    return x, pd.to_numeric(val[label]).to_numpy(dtype=np.int64)


def evaluate_version(
    model_name: str, version: str, x: pd.DataFrame, y: np.ndarray, *, role: str
) -> dict[str, float]:
    """roc_auc / log_loss of ``models:/<name>/<version>`` on ``(x, y)``.

    A model that cannot be loaded or predicts NaN / out-of-range values raises
    :class:`TrainingError` (challenger) or :class:`ModelRegistryError` (champion).
    """
    error = TrainingError if role == "challenger" else ModelRegistryError
    uri = f"models:/{model_name}/{version}"
    try:
        model = mlflow.pyfunc.load_model(uri)
    except Exception as e:
        raise ModelRegistryError(
            f"gate: cannot load the {role} {uri} from {mlflow.get_registry_uri()}: {e}. Check that the version "
            "exists and its artifacts are reachable."
        ) from e
    p = np.asarray(model.predict(x), dtype=np.float64).reshape(-1)
    if p.shape != (len(x),):
        raise error(f"gate: the {role} {uri} returned {p.shape[0]} predictions for {len(x)} rows.")
    bad = int((~np.isfinite(p)).sum() + ((p < 0) | (p > 1)).sum())
    if bad:
        raise error(
            f"gate: the {role} {uri} predicts {bad} NaN / out-of-range probabilities on the evaluation set; "
            f"the model is broken. {'Retrain it' if role == 'challenger' else 'Roll back the champion alias'}."
        )
    return binary_metrics(y, p)


def _check(name: str, value: float, bound: float, higher_is_better: bool) -> dict[str, Any]:
    passed = math.isfinite(value) and (value >= bound if higher_is_better else value <= bound)
    return {"name": name, "value": float(value), "bound": float(bound), "passed": bool(passed)}


def build_checks(
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    primary_metric: str,
    floors: dict[str, float],
    max_regression: dict[str, float],
) -> list[dict[str, Any]]:
    """Floor checks (absolute) always; regression checks against the champion when there is one.

    For lower-is-better metrics (log_loss) a "floor" is a ceiling. The primary metric always gets
    a regression check (tolerance 0 unless ``max_regression`` names it).
    """
    for metric in [primary_metric, *floors, *max_regression]:
        if metric not in HIGHER_IS_BETTER:
            raise ConfigError(f"gate: unknown metric {metric!r}; supported: {sorted(HIGHER_IS_BETTER)}.")
    checks = [
        _check(f"floor.{m}", challenger[m], bound, HIGHER_IS_BETTER[m]) for m, bound in sorted(floors.items())
    ]
    if champion is not None:
        tolerances = {primary_metric: 0.0, **max_regression}
        for m, tol in sorted(tolerances.items()):
            hib = HIGHER_IS_BETTER[m]
            bound = champion[m] - tol if hib else champion[m] + tol
            checks.append(_check(f"regression.{m}", challenger[m], bound, hib))
    return checks


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def evaluate_gate(
    model_name: str,
    challenger_version: str,
    snapshot_path: str,
    categorical: list[str],
    numeric: list[str],
    label: str,
    *,
    primary_metric: str = "roc_auc",
    floors: dict[str, float] | None = None,
    max_regression: dict[str, float] | None = None,
    report_dir: str,
    tracking: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score challenger vs @champion on the snapshot's validation split; return the verdict."""
    floors = {"roc_auc": 0.55} if floors is None else dict(floors)
    max_regression = {"roc_auc": 0.005} if max_regression is None else dict(max_regression)
    client = configure_tracking(tracking)
    challenger_version = str(challenger_version).strip()
    try:
        client.get_model_version(model_name, challenger_version)
    except Exception as e:
        raise ModelRegistryError(
            f"gate: challenger {model_name} v{challenger_version} is not in the registry at "
            f"{mlflow.get_registry_uri()} ({e}). Check the training task's XCom 'model_version'."
        ) from e
    df, manifest = load_snapshot_frame(snapshot_path)
    x, y = evaluation_frame(df, categorical, numeric, label, str(snapshot_path))

    challenger_metrics = evaluate_version(model_name, challenger_version, x, y, role="challenger")
    champion_version = alias_version(client, model_name, CHAMPION)
    champion_metrics = None
    if champion_version is not None:
        champion_metrics = (
            dict(challenger_metrics)
            if champion_version == challenger_version
            else evaluate_version(model_name, champion_version, x, y, role="champion")
        )
    checks = build_checks(challenger_metrics, champion_metrics, primary_metric, floors, max_regression)
    decision = "promote" if all(c["passed"] for c in checks) else "reject"
    report_path = Path(report_dir) / f"gate_{model_name}_v{challenger_version}.json"
    verdict: dict[str, Any] = {
        "model": model_name,
        "decision": decision,
        "bootstrap": champion_version is None,
        "primary_metric": primary_metric,
        "challenger": {"version": challenger_version, "metrics": challenger_metrics},
        "champion": None if champion_version is None else {"version": champion_version, "metrics": champion_metrics},
        "checks": checks,
        "evaluation_set": {"snapshot_path": str(snapshot_path), "snapshot_hash": manifest.get("hash"),
                           "split": "validation", "rows": len(x)},
        "report_path": str(report_path),
        "evaluated_at": datetime.now(UTC).isoformat(),
    }
    _write_json_atomic(report_path, verdict)
    tags = {
        "gate.decision": decision,
        "gate.champion_version": champion_version or "none",
        "gate.report_path": str(report_path),
        "gate.snapshot_hash": str(manifest.get("hash", "")),
        **{f"gate.{m}": f"{v:.6f}" for m, v in challenger_metrics.items()},
    }
    for k, v in tags.items():
        client.set_model_version_tag(model_name, challenger_version, k, v)
    failed = [c["name"] for c in checks if not c["passed"]]
    log.info("gate %s v%s vs champion %s: %s %s", model_name, challenger_version, champion_version, decision,
             f"(failed: {failed})" if failed else "")
    return verdict


def failed_checks_summary(verdict: dict[str, Any]) -> str:
    failed = [c for c in verdict.get("checks", []) if not c.get("passed")]
    return "; ".join(f"{c['name']} {c['value']:.4f} vs bound {c['bound']:.4f}" for c in failed) or "no failed check"


def promote(model_name: str, verdict: dict[str, Any], tracking: dict[str, Any] | None = None) -> dict[str, Any]:
    """Move @champion -> @previous and the verdict's challenger -> @champion.

    Re-reads the registry first: if @champion already is the challenger this is a no-op; if
    @champion moved since the gate ran (the verdict is stale) it raises ModelRegistryError.
    Returns ``{"champion", "previous", "changed"}``.
    """
    if verdict.get("decision") != "promote":
        raise ModelRegistryError(f"promote: verdict for {model_name} is {verdict.get('decision')!r}, not 'promote'.")
    client = configure_tracking(tracking)
    challenger = str(verdict["challenger"]["version"])
    try:
        client.get_model_version(model_name, challenger)
    except Exception as e:
        raise ModelRegistryError(f"promote: {model_name} v{challenger} is not in the registry ({e}).") from e
    current = alias_version(client, model_name, CHAMPION)
    if current == challenger:
        log.info("%s@champion already is v%s; nothing to do", model_name, challenger)
        return {"champion": challenger, "previous": alias_version(client, model_name, PREVIOUS), "changed": False}
    expected = (verdict.get("champion") or {}).get("version")
    expected = None if expected is None else str(expected)
    if current != expected:
        raise ModelRegistryError(
            f"promote: {model_name}@champion is v{current} but the gate compared against v{expected}; another "
            "promotion happened meanwhile. Re-run the gate task so the challenger is judged against the new champion."
        )
    if current is not None:
        client.set_registered_model_alias(model_name, PREVIOUS, current)
    client.set_registered_model_alias(model_name, CHAMPION, challenger)
    after = alias_version(client, model_name, CHAMPION)
    if after != challenger:
        raise ModelRegistryError(
            f"promote: {model_name}@champion is v{after} right after setting it to v{challenger}: a concurrent "
            "promotion won. Inspect the aliases in MLflow."
        )
    client.set_model_version_tag(model_name, challenger, "gate.promoted_at", datetime.now(UTC).isoformat())
    log.info("%s@champion: v%s -> v%s (@previous = v%s)", model_name, current, challenger, current)
    return {"champion": challenger, "previous": current, "changed": True}
