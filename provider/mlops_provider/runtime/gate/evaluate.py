"""Champion / challenger gate and alias promotion (runtime module: runs inside the task).

:func:`evaluate_gate` scores the challenger version and the current ``@champion`` on the SAME frozen
evaluation set (the ``evaluation`` split of a snapshot: a time window after every row the challenger
trained or early-stopped on) and decides:

- absolute floors (``floor.<metric>``) and the tolerated regression against the champion
  (``regression.<metric>``, the primary metric always has one);
- slice checks (``slice.<column>=<value>.<metric>``): no slice may regress more than its bound;
- behavioral tests (``behavioral.<name>``): invariance, directional, minimum functionality;
- calibration (``calibration.ece``) and latency per batch (``latency.median_ms`` / ``latency.ratio``),
  both models timed in the same process on the same hardware.

A first run (no champion) bootstraps: only the absolute checks apply. The verdict is always written —
JSON file, JSON artifact and model card on the challenger's MLflow run, ``gate.*`` tags on the version,
the return value (XCom) — on pass or fail, with every check's value and bound. A reject is a normal
outcome (returned, never raised). Bad input raises a named error after writing a verdict whose decision
is ``error`` (or ``manual`` when the signatures differ).

:func:`promote` moves ``@champion`` -> ``@previous`` and challenger -> ``@champion`` after re-reading the
registry, so a stale verdict or a concurrent promotion cannot win twice. :func:`set_champion` is the
manual path (force-promote, rollback) and records the reason on the version.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow import MlflowClient

from mlops_provider.exceptions import (
    ConfigError,
    EvaluationLeakageError,
    GateInputError,
    ManualActionError,
    MlopsError,
    ModelRegistryError,
    PromotionConflictError,
    SignatureMismatchError,
    TrainingError,
)
from mlops_provider.runtime.training.loop import binary_metrics, configure_tracking, load_snapshot_frame
from mlops_provider.tasks import GATE_METRICS

log = logging.getLogger(__name__)

CHAMPION = "champion"
PREVIOUS = "previous"
EVALUATION_SPLIT = "evaluation"
HIGHER_IS_BETTER = dict(GATE_METRICS)
CARD_DIR = "gate"


# ----------------------------------------------------------------------------------------------------
# registry helpers
# ----------------------------------------------------------------------------------------------------


def alias_version(client: MlflowClient, model_name: str, alias: str) -> str | None:
    """Version number behind ``model_name@alias``, or None when the alias (or the model) is not set."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(model_name, alias).version)
    except MlflowException as e:
        if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def _version(client: MlflowClient, model_name: str, version: str, what: str) -> Any:
    try:
        return client.get_model_version(model_name, str(version))
    except Exception as e:
        raise ModelRegistryError(
            f"{what}: {model_name} v{version} is not in the registry at {mlflow.get_registry_uri()} ({e}). "
            "Check the version number (training task's XCom 'model_version' / the DAG run form)."
        ) from e


# ----------------------------------------------------------------------------------------------------
# metrics
# ----------------------------------------------------------------------------------------------------


def average_precision(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the precision-recall curve (step-wise average precision, as scikit-learn)."""
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == len(y):
        return float("nan")
    order = np.argsort(-p, kind="mergesort")
    ys, ps = y[order], p[order]
    last = np.r_[np.flatnonzero(ps[1:] != ps[:-1]), len(ps) - 1]  # end of each run of tied scores
    tp = np.cumsum(ys)[last]
    fp = (last + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def all_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    out = binary_metrics(y, p)
    out["pr_auc"] = average_precision(y, p)
    out["brier"] = float(np.mean((p - y) ** 2)) if len(y) else float("nan")
    return {k: out[k] for k in GATE_METRICS}


def expected_calibration_error(
    y: np.ndarray, p: np.ndarray, bins: int = 10
) -> tuple[float, list[dict[str, Any]]]:
    """ECE over ``bins`` equal-width probability bins, and the reliability table ``[{lo, hi, n, p, y}]``."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1], right=False), 0, bins - 1)
    table = []
    ece = 0.0
    for b in range(bins):
        m = idx == b
        n = int(m.sum())
        if n:
            mp, my = float(p[m].mean()), float(y[m].mean())
            ece += n / len(p) * abs(mp - my)
            table.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": n, "p": mp, "y": my})
    return float(ece), table


def roc_points(y: np.ndarray, p: np.ndarray, max_points: int = 200) -> dict[str, list[float]]:
    order = np.argsort(-p, kind="mergesort")
    ys = y[order]
    tpr = np.r_[0.0, np.cumsum(ys) / max(int(ys.sum()), 1)]
    fpr = np.r_[0.0, np.cumsum(1 - ys) / max(int((1 - ys).sum()), 1)]
    keep = np.unique(np.linspace(0, len(tpr) - 1, min(max_points, len(tpr))).round().astype(int))
    return {"fpr": fpr[keep].round(5).tolist(), "tpr": tpr[keep].round(5).tolist()}


def bootstrap_intervals(
    y: np.ndarray, preds: dict[str, np.ndarray], *, samples: int, confidence: float, seed: int
) -> dict[str, dict[str, list[float]]]:
    """Percentile bootstrap CIs of every metric per model, plus paired CIs of challenger - champion.

    ``preds`` maps "challenger" (and "champion") to probabilities on the same rows; the same resampled
    rows serve both models (paired), so the delta's interval is much narrower than the two intervals.
    """
    rng = np.random.default_rng(seed)
    n = len(y)
    draws: dict[str, dict[str, list[float]]] = {k: {m: [] for m in GATE_METRICS} for k in preds}
    deltas: dict[str, list[float]] = {m: [] for m in GATE_METRICS}
    for _ in range(samples):
        idx = rng.integers(0, n, n)
        yy = y[idx]
        scored = {k: all_metrics(yy, p[idx]) for k, p in preds.items()}
        for k, met in scored.items():
            for m, v in met.items():
                draws[k][m].append(v)
        if "champion" in scored:
            for m in GATE_METRICS:
                deltas[m].append(scored["challenger"][m] - scored["champion"][m])
    lo, hi = (1 - confidence) / 2 * 100, (1 + confidence) / 2 * 100

    def ci(values: list[float]) -> list[float]:
        a = np.asarray(values, dtype=np.float64)
        a = a[np.isfinite(a)]
        return [float(np.percentile(a, lo)), float(np.percentile(a, hi))] if len(a) else [math.nan, math.nan]

    out = {k: {m: ci(v) for m, v in d.items()} for k, d in draws.items()}
    if "champion" in preds:
        out["delta"] = {m: ci(v) for m, v in deltas.items()}
    return out


# ----------------------------------------------------------------------------------------------------
# evaluation set
# ----------------------------------------------------------------------------------------------------


def evaluation_frame(
    df: pd.DataFrame,
    categorical: list[str],
    numeric: list[str],
    label: str,
    where: str,
    *,
    split: str = EVALUATION_SPLIT,
    extra: list[str] | None = None,
) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    """The evaluation split as the pyfunc's input (strings / doubles), its labels, and its extra columns
    (slice / behavioral columns that are no model input, plus ``event_timestamp``)."""
    missing = [c for c in [*categorical, *numeric, label, "split"] if c not in df.columns]
    if missing:
        raise ConfigError(
            f"gate: snapshot {where} lacks columns {missing}; check model.features in the YAML."
        )
    if split not in set(df["split"].unique()):
        raise GateInputError(
            f"gate: snapshot {where} has no {split!r} split (splits: {sorted(df['split'].unique())}). The gate "
            "scores on a frozen later window: set training.evaluation_days >= 1 so the training_dataset task "
            "writes one."
        )
    ev = df[df["split"] == split].reset_index(drop=True)
    if ev[label].nunique() < 2:
        raise GateInputError(
            f"gate: the {split!r} split of {where} has {len(ev)} rows and {ev[label].nunique()} class(es); ROC AUC "
            "needs both. Widen training.evaluation_days."
        )
    x = pd.DataFrame({c: ev[c].astype(object).where(ev[c].notna(), "").astype(str) for c in categorical})
    for c in numeric:
        x[c] = pd.to_numeric(ev[c], errors="coerce").astype("float64")
    others = [
        c
        for c in dict.fromkeys([*(extra or []), "event_timestamp"])
        if c in ev.columns and c not in x.columns
    ]
    side = ev[others].copy()
    for c in others:
        if c != "event_timestamp" and not pd.api.types.is_numeric_dtype(side[c]):
            side[c] = side[c].astype(object).where(side[c].notna(), "").astype(str)
    return x, pd.to_numeric(ev[label]).to_numpy(dtype=np.int64), side


def _utc(value: Any) -> pd.Timestamp | None:
    if value is None or value == "":
        return None
    t = pd.Timestamp(value)
    return t.tz_convert("UTC") if t.tzinfo else t.tz_localize("UTC")


def _model_window(client: MlflowClient, model_name: str, version: str) -> dict[str, Any] | None:
    """The training window of a version, from the manifest of the snapshot its ``snapshot_path`` tag names."""
    from mlops_provider.runtime.features.snapshot import read_manifest, training_window

    mv = client.get_model_version(model_name, version)
    path = (mv.tags or {}).get("snapshot_path")
    if not path:
        return None
    try:
        manifest = read_manifest(path)
    except MlopsError as e:
        log.warning(
            "cannot read the snapshot manifest of %s v%s (%s): training window unknown",
            model_name,
            version,
            e,
        )
        return None
    start, end, inclusive = training_window(manifest)
    return {
        "start": start,
        "end": end,
        "end_inclusive": inclusive,
        "snapshot_hash": manifest.get("hash"),
        "snapshot_path": path,
    }


def _overlaps(window: dict[str, Any] | None, eval_start: pd.Timestamp, eval_end: pd.Timestamp) -> bool:
    if not window or window.get("end") is None:
        return False
    end = window["end"]
    before_end = eval_start <= end if window["end_inclusive"] else eval_start < end
    after_start = window.get("start") is None or eval_end >= window["start"]
    return bool(before_end and after_start)


def _iso(window: dict[str, Any] | None) -> dict[str, Any] | None:
    if window is None:
        return None
    return {k: (v.isoformat() if isinstance(v, pd.Timestamp) else v) for k, v in window.items()}


# ----------------------------------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------------------------------


class Scored:
    """One loaded version: the pyfunc, its probabilities on the evaluation set, its metrics."""

    def __init__(self, model_name: str, version: str, role: str) -> None:
        self.version = version
        self.role = role
        self.uri = f"models:/{model_name}/{version}"
        try:
            self.model = mlflow.pyfunc.load_model(self.uri)
        except Exception as e:
            raise ModelRegistryError(
                f"gate: cannot load the {role} {self.uri} from {mlflow.get_registry_uri()}: {e}. Check that the "
                "version exists and its artifacts are reachable."
            ) from e
        self.p = np.empty(0)

    def inputs(self) -> list[tuple[str, str]] | None:
        schema = self.model.metadata.get_input_schema()
        if schema is None:
            return None
        return [(str(c.get("name")), str(c.get("type"))) for c in schema.to_dict()]

    def predict(self, x: pd.DataFrame) -> np.ndarray:
        p = np.asarray(self.model.predict(x), dtype=np.float64).reshape(-1)
        if p.shape != (len(x),):
            raise self.error(
                f"gate: the {self.role} {self.uri} returned {p.shape[0]} predictions for {len(x)} rows."
            )
        return p

    def error(self, message: str) -> MlopsError:
        return TrainingError(message) if self.role == "challenger" else ModelRegistryError(message)

    def score(self, x: pd.DataFrame) -> np.ndarray:
        p = self.predict(x)
        bad = int((~np.isfinite(p)).sum() + ((p < 0) | (p > 1)).sum())
        if bad:
            raise self.error(
                f"gate: the {self.role} {self.uri} predicts {bad} NaN / out-of-range probabilities on the evaluation "
                f"set; the model is broken. {'Retrain it' if self.role == 'challenger' else 'Roll back the champion'}."
            )
        self.p = p
        return p


def evaluate_version(
    model_name: str, version: str, x: pd.DataFrame, y: np.ndarray, *, role: str
) -> dict[str, float]:
    """Every gate metric of ``models:/<name>/<version>`` on ``(x, y)`` (named error on NaN output)."""
    return all_metrics(y, Scored(model_name, version, role).score(x))


def time_batches(models: list[Scored], x: pd.DataFrame, batch_size: int, repeats: int) -> dict[str, float]:
    """Median ms of ``predict`` on one batch, per model, interleaved so both see the same machine state."""
    reps = int(math.ceil(batch_size / len(x)))
    batch = pd.concat([x] * reps, ignore_index=True).iloc[:batch_size] if reps > 1 else x.iloc[:batch_size]
    times: dict[str, list[float]] = {m.role: [] for m in models}
    for m in models:
        m.predict(batch)  # warm-up
    for _ in range(repeats):
        for m in models:
            t0 = time.perf_counter()
            m.predict(batch)
            times[m.role].append((time.perf_counter() - t0) * 1000)
    return {k: float(np.median(v)) for k, v in times.items()}


def permutation_importance(
    scored: Scored, x: pd.DataFrame, y: np.ndarray, metric: str, *, rows: int = 2000, seed: int = 0
) -> list[dict[str, Any]]:
    """Drop of ``metric`` when each feature column is shuffled (one seeded permutation, <= ``rows`` rows)."""
    rng = np.random.default_rng(seed)
    if len(x) > rows:
        idx = np.sort(rng.choice(len(x), rows, replace=False))
        x, y = x.iloc[idx].reset_index(drop=True), y[idx]
    base = all_metrics(y, scored.predict(x))[metric]
    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    out = []
    for c in x.columns:
        xp = x.copy()
        xp[c] = xp[c].to_numpy()[rng.permutation(len(xp))]
        out.append(
            {"feature": c, "importance": float(sign * (base - all_metrics(y, scored.predict(xp))[metric]))}
        )
    return sorted(out, key=lambda r: -r["importance"])


# ----------------------------------------------------------------------------------------------------
# checks
# ----------------------------------------------------------------------------------------------------


def _check(
    name: str, value: float, bound: float, higher_is_better: bool, kind: str, **extra: Any
) -> dict[str, Any]:
    passed = math.isfinite(value) and (value >= bound if higher_is_better else value <= bound)
    return {
        "name": name,
        "kind": kind,
        "value": float(value),
        "bound": float(bound),
        "passed": bool(passed),
        "direction": ">=" if higher_is_better else "<=",
        **extra,
    }


def build_checks(
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    primary_metric: str,
    floors: dict[str, float],
    max_regression: dict[str, float],
) -> list[dict[str, Any]]:
    """Floor checks (absolute) always; regression checks against the champion when there is one.

    For lower-is-better metrics (log_loss, brier) a "floor" is a ceiling. The primary metric always gets
    a regression check (tolerance 0 unless ``max_regression`` names it).
    """
    for key, metrics in (
        ("gate.primary_metric", [primary_metric]),
        ("gate.floors", list(floors)),
        ("gate.max_regression", list(max_regression)),
    ):
        for metric in metrics:
            if metric not in HIGHER_IS_BETTER:
                raise ConfigError(
                    f"gate: key {key!r}: unknown metric {metric!r}; supported: {sorted(HIGHER_IS_BETTER)}."
                )
    checks = [
        _check(f"floor.{m}", challenger[m], bound, HIGHER_IS_BETTER[m], "floor")
        for m, bound in sorted(floors.items())
    ]
    if champion is not None:
        tolerances = {primary_metric: 0.0, **max_regression}
        for m, tol in sorted(tolerances.items()):
            hib = HIGHER_IS_BETTER[m]
            bound = champion[m] - tol if hib else champion[m] + tol
            checks.append(
                _check(f"regression.{m}", challenger[m], bound, hib, "regression", champion=champion[m])
            )
    return checks


def slice_table(
    spec: dict[str, Any],
    side: pd.DataFrame,
    x: pd.DataFrame,
    y: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray | None,
) -> list[dict[str, Any]]:
    """Per-slice metric of both models: ``[{column, value, rows, challenger, champion, judged, reason}]``."""
    column, metric = spec["column"], spec.get("metric", "roc_auc")
    if column in x.columns:
        keys = x[column]
    elif column in side.columns:
        keys = side[column]
    else:
        raise ConfigError(
            f"gate.slices: column {column!r} is not in the evaluation set (columns: "
            f"{sorted([*x.columns, *side.columns])}). Fix the slice column in the YAML."
        )
    keys = keys.astype(str)
    present = keys.value_counts()
    wanted = [str(v) for v in spec["values"]] if spec.get("values") else sorted(present.index)
    empty = [v for v in wanted if int(present.get(v, 0)) == 0]
    if empty:
        raise GateInputError(
            f"gate.slices: slice {column}={empty} has no rows in the evaluation set ({len(keys)} rows; values "
            f"present: {sorted(present.index)[:20]}). Remove it from gate.slices[].values or widen "
            "training.evaluation_days."
        )
    rows = []
    for v in wanted:
        m = (keys == v).to_numpy()
        n = int(m.sum())
        row: dict[str, Any] = {
            "column": column,
            "value": v,
            "rows": n,
            "metric": metric,
            "judged": True,
            "reason": "",
        }
        ys = y[m]
        if n < int(spec.get("min_rows", 100)):
            row.update(judged=False, reason=f"{n} rows < min_rows {spec.get('min_rows', 100)}")
        elif ys.min() == ys.max():
            row.update(judged=False, reason="a single class: the metric is undefined")
        row["challenger"] = all_metrics(ys, challenger[m])[metric] if n else math.nan
        row["champion"] = all_metrics(ys, champion[m])[metric] if (n and champion is not None) else None
        rows.append(row)
    return rows


def slice_checks(spec: dict[str, Any], table: list[dict[str, Any]], bootstrap: bool) -> list[dict[str, Any]]:
    metric = spec.get("metric", "roc_auc")
    hib = HIGHER_IS_BETTER[metric]
    checks = []
    for row in table:
        if not row["judged"]:
            continue
        name = f"slice.{row['column']}={row['value']}.{metric}"
        if spec.get("floor") is not None:
            checks.append(
                _check(
                    f"{name}.floor", row["challenger"], float(spec["floor"]), hib, "slice", rows=row["rows"]
                )
            )
        tol = spec.get("max_regression")
        if (
            not bootstrap
            and tol is not None
            and row["champion"] is not None
            and math.isfinite(row["champion"])
        ):
            bound = row["champion"] - tol if hib else row["champion"] + tol
            checks.append(
                _check(
                    name, row["challenger"], bound, hib, "slice", rows=row["rows"], champion=row["champion"]
                )
            )
    return checks


# ----------------------------------------------------------------------------------------------------
# the gate
# ----------------------------------------------------------------------------------------------------


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def _json_safe(obj: Any) -> Any:
    """NaN / inf -> None so the verdict is strict JSON (XCom, MLflow artifacts, the UI)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    return obj


def _record(
    client: MlflowClient, model_name: str, version: str, verdict: dict[str, Any], report_dir: str
) -> dict[str, Any]:
    """Write the verdict JSON file and tag the version; returns the verdict (with report_path)."""
    report_path = Path(report_dir) / f"gate_{model_name}_v{version}.json"
    verdict["report_path"] = str(report_path)
    verdict = _json_safe(verdict)
    _write_json_atomic(report_path, verdict)
    failed = [c["name"] for c in verdict.get("checks", []) if not c.get("passed") and c.get("enforced", True)]
    tags = {
        "gate.decision": verdict["decision"],
        "gate.champion_version": (verdict.get("champion") or {}).get("version") or "none",
        "gate.report_path": str(report_path),
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
    card = verdict.get("model_card") or {}
    if card.get("url"):
        tags["gate.model_card"] = card["url"]
    for k, v in tags.items():
        client.set_model_version_tag(model_name, version, k, v)
    return verdict


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
    slices: list[dict[str, Any]] | None = None,
    behavioral: list[dict[str, Any]] | None = None,
    calibration: dict[str, Any] | None = None,
    latency: dict[str, Any] | None = None,
    bootstrap: dict[str, Any] | None = None,
    model_card: bool = True,
    report_dir: str,
    tracking: dict[str, Any] | None = None,
    evaluation_split: str = EVALUATION_SPLIT,
    first_run: str = "floors",
) -> dict[str, Any]:
    """Score challenger vs @champion on the snapshot's evaluation split; return the verdict (see module doc)."""
    floors = {"roc_auc": 0.55} if floors is None else dict(floors)
    max_regression = {"roc_auc": 0.005} if max_regression is None else dict(max_regression)
    build_checks(
        {m: 0.0 for m in GATE_METRICS}, None, primary_metric, floors, max_regression
    )  # key check first
    slices, behavioral = list(slices or []), list(behavioral or [])
    boot = {"samples": 200, "confidence": 0.95, "seed": 0, **(bootstrap or {}), "first_run": first_run}
    client = configure_tracking(tracking)
    challenger_version = str(challenger_version).strip()
    mv = _version(client, model_name, challenger_version, "gate")
    verdict: dict[str, Any] = {
        "model": model_name,
        "decision": "error",
        "primary_metric": primary_metric,
        "challenger": {"version": challenger_version, "run_id": mv.run_id},
        "champion": None,
        "checks": [],
        "warnings": [],
        "evaluated_at": datetime.now(UTC).isoformat(),
    }
    try:
        return _evaluate(
            client,
            verdict,
            model_name,
            challenger_version,
            snapshot_path,
            categorical,
            numeric,
            label,
            primary_metric,
            floors,
            max_regression,
            slices,
            behavioral,
            calibration,
            latency,
            boot,
            model_card,
            report_dir,
            tracking,
            evaluation_split,
        )
    except MlopsError as e:
        verdict["decision"] = "manual" if isinstance(e, SignatureMismatchError) else "error"
        verdict["error"] = f"{type(e).__name__}: {e}"
        _record(client, model_name, challenger_version, verdict, report_dir)
        raise


def _evaluate(
    client: MlflowClient,
    verdict: dict[str, Any],
    model_name: str,
    challenger_version: str,
    snapshot_path: str,
    categorical: list[str],
    numeric: list[str],
    label: str,
    primary_metric: str,
    floors: dict[str, float],
    max_regression: dict[str, float],
    slices: list[dict[str, Any]],
    behavioral: list[dict[str, Any]],
    calibration: dict[str, Any] | None,
    latency: dict[str, Any] | None,
    boot: dict[str, Any],
    model_card: bool,
    report_dir: str,
    tracking: dict[str, Any] | None,
    evaluation_split: str,
) -> dict[str, Any]:
    from mlops_provider.runtime.gate import behavioral as behavioral_tests

    t0 = time.perf_counter()
    df, manifest = load_snapshot_frame(snapshot_path)
    extra = [s["column"] for s in slices] + [t["column"] for t in behavioral if t.get("column")]
    x, y, side = evaluation_frame(
        df, categorical, numeric, label, str(snapshot_path), split=evaluation_split, extra=extra
    )
    del df
    ts = pd.to_datetime(side["event_timestamp"], utc=True) if "event_timestamp" in side else None
    eval_start = ts.min() if ts is not None else _utc((manifest.get("split") or {}).get("evaluation_start"))
    eval_end = ts.max() if ts is not None else _utc((manifest.get("split") or {}).get("evaluation_end"))
    verdict["evaluation_set"] = {
        "snapshot_path": str(snapshot_path),
        "snapshot_hash": manifest.get("hash"),
        "split": evaluation_split,
        "rows": len(x),
        "positives": int(y.sum()),
        "window": {
            "start": None if eval_start is None else eval_start.isoformat(),
            "end": None if eval_end is None else eval_end.isoformat(),
        },
    }

    # 1. leakage: the evaluation rows must come after everything the challenger trained / early-stopped on
    window = _model_window(client, model_name, challenger_version)
    verdict["challenger"]["training_window"] = _iso(window)
    if window is None:
        verdict["warnings"].append("challenger training window unknown (no readable snapshot_path tag)")
    elif eval_start is not None and _overlaps(window, eval_start, eval_end):
        raise EvaluationLeakageError(
            f"gate: the evaluation window {eval_start} .. {eval_end} of {snapshot_path} overlaps the training "
            f"window {window['start']} .. {window['end']} of {model_name} v{challenger_version} (snapshot "
            f"{window['snapshot_path']}): its scores would be inflated. Score it on a snapshot whose evaluation "
            "split is later than its training data (training.evaluation_days)."
        )

    # 2. challenger, and the champion on the same rows
    challenger = Scored(model_name, challenger_version, "challenger")
    challenger.score(x)
    champion_version = alias_version(client, model_name, CHAMPION)
    champion: Scored | None = None
    if champion_version is not None and champion_version != challenger_version:
        champion = Scored(model_name, champion_version, "champion")
        a, b = challenger.inputs(), champion.inputs()
        if a is not None and b is not None and a != b:
            diff = sorted(set(a) ^ set(b))
            raise SignatureMismatchError(
                f"gate: {model_name} v{challenger_version} takes different inputs than @champion "
                f"v{champion_version} (differing columns: {diff[:10]}); the serving path and the drift "
                f"reference change with it. No automatic comparison: decide by hand and, if it should serve, "
                f"trigger the {model_name}__force_promote DAG with a reason."
            )
        champion.score(x)
        champion_window = _model_window(client, model_name, champion_version)
        if eval_start is not None and _overlaps(champion_window, eval_start, eval_end):
            verdict["warnings"].append(
                f"the champion v{champion_version} trained on part of the evaluation window: its scores are "
                "optimistic (the comparison favours the champion)"
            )
    bootstrap_run = champion_version is None
    verdict["bootstrap"] = bootstrap_run

    metrics = all_metrics(y, challenger.p)
    champ_metrics = all_metrics(y, champion.p) if champion is not None else None
    if champion_version is not None and champion is None:  # re-gating the champion itself
        champ_metrics = dict(metrics)
    preds = {"challenger": challenger.p, **({"champion": champion.p} if champion is not None else {})}
    ci = bootstrap_intervals(
        y, preds, samples=int(boot["samples"]), confidence=float(boot["confidence"]), seed=int(boot["seed"])
    )
    verdict["challenger"].update(metrics=metrics, ci=ci["challenger"])
    if champion_version is not None:
        champion_mv = client.get_model_version(model_name, champion_version)
        verdict["champion"] = {
            "version": champion_version,
            "run_id": champion_mv.run_id,
            "metrics": champ_metrics,
            "ci": ci.get("champion", ci["challenger"]),
        }
        if "delta" in ci:
            verdict["delta"] = {
                "metrics": {m: metrics[m] - champ_metrics[m] for m in GATE_METRICS},  # type: ignore[index]
                "ci": ci["delta"],
            }

    # 3. checks
    checks = build_checks(
        metrics, None if bootstrap_run else champ_metrics, primary_metric, floors, max_regression
    )
    verdict["slices"] = []
    for spec in slices:
        table = slice_table(spec, side, x, y, challenger.p, champion.p if champion is not None else None)
        verdict["slices"].extend(table)
        checks.extend(slice_checks(spec, table, bootstrap_run))
    if behavioral:
        bx = pd.concat([x, side.drop(columns=["event_timestamp"], errors="ignore")], axis=1)
        bx = bx.loc[:, ~bx.columns.duplicated()]
        results = behavioral_tests.run_tests(behavioral, bx, challenger.predict, seed=int(boot["seed"]))
        verdict["behavioral"] = results
        checks.extend(
            {k: v for k, v in r.items() if k not in ("cases",)} | {"direction": ">="} for r in results
        )
    if calibration:
        bins = int(calibration.get("bins", 10))
        ece, table = expected_calibration_error(y, challenger.p, bins)
        verdict["challenger"]["ece"] = ece
        verdict["calibration"] = {"challenger": table}
        checks.append(
            _check("calibration.ece", ece, float(calibration.get("max_ece", 0.1)), False, "calibration")
        )
        if champion is not None:
            champ_ece, champ_table = expected_calibration_error(y, champion.p, bins)
            verdict["champion"]["ece"] = champ_ece
            verdict["calibration"]["champion"] = champ_table
            if calibration.get("max_regression") is not None:
                checks.append(
                    _check(
                        "calibration.ece_regression",
                        ece,
                        champ_ece + float(calibration["max_regression"]),
                        False,
                        "calibration",
                        champion=champ_ece,
                    )
                )
    if latency:
        timed = time_batches(
            [m for m in (challenger, champion) if m is not None],
            x,
            int(latency.get("batch_size", 1024)),
            int(latency.get("repeats", 5)),
        )
        verdict["latency"] = {"batch_size": int(latency.get("batch_size", 1024)), "median_ms": timed}
        if latency.get("max_ms") is not None:
            checks.append(
                _check("latency.median_ms", timed["challenger"], float(latency["max_ms"]), False, "latency")
            )
        if latency.get("max_ratio") is not None and "champion" in timed:
            checks.append(
                _check(
                    "latency.ratio",
                    timed["challenger"] / timed["champion"],
                    float(latency["max_ratio"]),
                    False,
                    "latency",
                    champion_ms=timed["champion"],
                )
            )
    # a first run (no champion) is decided by the floors only (gate.first_run: floors); the other absolute
    # checks are computed and reported as advisory
    floors_only = bootstrap_run and boot.get("first_run", "floors") == "floors"
    for c in checks:
        c["enforced"] = not floors_only or c["kind"] == "floor" or c["name"].endswith(".floor")
    verdict["checks"] = checks
    verdict["decision"] = "promote" if all(c["passed"] for c in checks if c["enforced"]) else "reject"
    verdict["failed"] = [c["name"] for c in checks if c["enforced"] and not c["passed"]]
    verdict["advisory_failed"] = [c["name"] for c in checks if not c["enforced"] and not c["passed"]]
    verdict["evaluation_seconds"] = round(time.perf_counter() - t0, 3)

    # 4. model card + verdict artifact on the challenger's run
    if model_card:
        from mlops_provider.runtime.gate.model_card import write_model_card

        verdict["importance"] = permutation_importance(
            challenger, x, y, primary_metric, seed=int(boot["seed"])
        )
        verdict["roc"] = {k: roc_points(y, p) for k, p in preds.items()}
        if "calibration" not in verdict:
            verdict["calibration"] = {k: expected_calibration_error(y, p)[1] for k, p in preds.items()}
        verdict["training_manifest"] = {
            k: manifest.get(k) for k in ("hash", "window", "split", "rows", "feature_service")
        }
        with tempfile.TemporaryDirectory(prefix="mlops-card-") as tmp:
            files = write_model_card(_json_safe(verdict), Path(tmp))
            verdict["model_card"] = _log_card(client, verdict["challenger"]["run_id"], files, tracking)
    verdict = _record(client, model_name, challenger_version, verdict, report_dir)
    if model_card:
        with tempfile.TemporaryDirectory(prefix="mlops-verdict-") as tmp:
            path = Path(tmp) / "verdict.json"
            path.write_text(json.dumps(verdict, indent=2, sort_keys=True, default=str))
            client.log_artifact(verdict["challenger"]["run_id"], str(path), CARD_DIR)
    log.info(
        "gate %s v%s vs champion %s: %s %s",
        model_name,
        challenger_version,
        champion_version,
        verdict["decision"],
        f"(failed: {verdict['failed']})" if verdict["failed"] else "",
    )
    return verdict


def _log_card(
    client: MlflowClient, run_id: str, files: dict[str, Path], tracking: dict[str, Any] | None
) -> dict[str, Any]:
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
    return {"markdown": f"{artifact_uri}/{CARD_DIR}/{files['markdown'].name}", "html": html, "url": url}


def failed_checks_summary(verdict: dict[str, Any]) -> str:
    failed = [c for c in verdict.get("checks", []) if not c.get("passed") and c.get("enforced", True)]

    def fmt(v: Any) -> str:
        return "nan" if v is None else f"{v:.4f}"

    return "; ".join(f"{c['name']} {fmt(c.get('value'))} vs bound {fmt(c.get('bound'))}" for c in failed) or (
        "no failed check"
    )


# ----------------------------------------------------------------------------------------------------
# promotion
# ----------------------------------------------------------------------------------------------------


def _move(client: MlflowClient, model_name: str, current: str | None, target: str) -> None:
    """@champion -> @previous, target -> @champion, then read back (a concurrent move shows up here)."""
    if current is not None:
        client.set_registered_model_alias(model_name, PREVIOUS, current)
    client.set_registered_model_alias(model_name, CHAMPION, target)
    after = alias_version(client, model_name, CHAMPION)
    if after != target:
        raise PromotionConflictError(
            f"promote: {model_name}@champion is v{after} right after setting it to v{target}: a concurrent "
            "promotion won. Inspect the aliases in MLflow; promotions should run in the promote pool."
        )


def promote(
    model_name: str, verdict: dict[str, Any], tracking: dict[str, Any] | None = None, *, by: str | None = None
) -> dict[str, Any]:
    """Move @champion -> @previous and the verdict's challenger -> @champion.

    Re-reads the registry first: if @champion already is the challenger this is a no-op; if @champion
    moved since the gate ran (the verdict is stale) it raises :class:`PromotionConflictError`.
    Returns ``{"champion", "previous", "changed", "promoted_by"}``.
    """
    if verdict.get("decision") != "promote":
        raise ModelRegistryError(
            f"promote: verdict for {model_name} is {verdict.get('decision')!r}, not 'promote'."
        )
    client = configure_tracking(tracking)
    challenger = str(verdict["challenger"]["version"])
    mv = _version(client, model_name, challenger, "promote")
    current = alias_version(client, model_name, CHAMPION)
    if current == challenger:
        log.info("%s@champion already is v%s; nothing to do", model_name, challenger)
        return {
            "champion": challenger,
            "previous": alias_version(client, model_name, PREVIOUS),
            "changed": False,
            "promoted_by": (mv.tags or {}).get("gate.promoted_by"),
        }
    expected = (verdict.get("champion") or {}).get("version")
    expected = None if expected is None else str(expected)
    if current != expected:
        raise PromotionConflictError(
            f"promote: {model_name}@champion is v{current} but the gate compared against v{expected}; another "
            "promotion happened meanwhile. Re-run the gate task so the challenger is judged against the new champion."
        )
    _move(client, model_name, current, challenger)
    now = datetime.now(UTC).isoformat()
    client.set_model_version_tag(model_name, challenger, "gate.promoted_at", now)
    if by:
        client.set_model_version_tag(model_name, challenger, "gate.promoted_by", by)
    if current is not None:
        client.set_model_version_tag(model_name, current, "gate.demoted_at", now)
    log.info("%s@champion: v%s -> v%s (@previous = v%s)", model_name, current, challenger, current)
    return {"champion": challenger, "previous": current, "changed": True, "promoted_by": by}


def set_champion(
    model_name: str,
    version: str | int | None,
    *,
    action: str,
    reason: str,
    actor: str | None = None,
    by: str | None = None,
    tracking: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manual path: ``force_promote`` (any version, gate or not) or ``rollback`` (default: @previous).

    The reason (required), actor and run are recorded as ``mlops.<action>.*`` tags on the version.
    Returns ``{"champion", "previous", "changed"}``; ``changed`` is False when it already serves.
    """
    if action not in ("force_promote", "rollback"):
        raise ManualActionError(f"{action!r} is not a manual action; use 'force_promote' or 'rollback'.")
    reason = (reason or "").strip()
    if len(reason) < 3:
        raise ManualActionError(
            f"{action} of {model_name}: a reason is required (got {reason!r}); fill in the 'reason' field of the "
            "trigger form. It is recorded on the model version."
        )
    client = configure_tracking(tracking)
    current = alias_version(client, model_name, CHAMPION)
    target = str(version).strip() if version not in (None, "") else ""
    if not target:
        if action != "rollback":
            raise ManualActionError(f"force_promote of {model_name}: give the version number to promote.")
        target = alias_version(client, model_name, PREVIOUS) or ""
        if not target:
            raise ManualActionError(
                f"rollback of {model_name}: no version given and no @previous alias to roll back to. Give the "
                "version number in the trigger form."
            )
    _version(client, model_name, target, action)
    if current == target:
        log.info(
            "%s: %s@champion already is v%s; nothing to do (reason: %s)", action, model_name, target, reason
        )
        return {"champion": target, "previous": alias_version(client, model_name, PREVIOUS), "changed": False}
    _move(client, model_name, current, target)
    now = datetime.now(UTC).isoformat()
    tags = {
        f"mlops.{action}.reason": reason[:4000],
        f"mlops.{action}.at": now,
        f"mlops.{action}.from_version": current or "none",
    }
    if actor:
        tags[f"mlops.{action}.actor"] = actor
    if by:
        tags[f"mlops.{action}.by"] = by
    for k, v in tags.items():
        client.set_model_version_tag(model_name, target, k, v)
    if current is not None:
        client.set_model_version_tag(model_name, current, "gate.demoted_at", now)
    log.warning(
        "%s: %s@champion v%s -> v%s by %s; reason: %s",
        action,
        model_name,
        current,
        target,
        actor or "unknown",
        reason,
    )
    return {"champion": target, "previous": current, "changed": True}
