"""Champion / challenger gate: the entry point and the scoring on the frozen evaluation split (runtime module).

:func:`evaluate_gate` scores the challenger version and the current ``@champion`` on the SAME frozen
evaluation set (the ``evaluation`` split of a snapshot: a time window after every row the challenger
trained or early-stopped on) and decides:

- absolute floors (``floor.<metric>``) and the tolerated regression against the champion
  (``regression.<metric>``, the primary metric always has one) (:mod:`.checks`);
- slice checks (``slice.<column>=<value>.<metric>``): no slice may regress more than its bound (:mod:`.slices`);
- behavioral tests (``behavioral.<name>``): invariance, directional, minimum functionality (:mod:`.behavioral`);
- calibration (``calibration.ece``) and latency per batch (``latency.median_ms`` / ``latency.ratio``),
  both models timed in the same process on the same hardware.

A first run (no champion) bootstraps: only the absolute checks apply. The verdict is always written —
JSON file, JSON artifact and model card on the challenger's MLflow run, ``gate.*`` tags on the version
(:mod:`.verdict`) — on pass or fail, with every check's value and bound; the return value is the full
verdict (the operator pushes only its small :func:`~.verdict.xcom_summary`). A reject is a normal outcome
(returned, never raised). Bad input raises a named error after writing a verdict whose decision is
``error`` (or ``manual`` when the signatures differ).

The alias moves that follow a verdict (promote, force-promote, rollback) are :mod:`.registry`.
"""

from __future__ import annotations

import logging
import math
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
    EvaluationLeakageError,
    MlopsError,
    ModelRegistryError,
    SignatureMismatchError,
    TrainingError,
)
from mlops_provider.runtime.gate import checks as gate_checks
from mlops_provider.runtime.gate import verdict as gate_verdict
from mlops_provider.runtime.gate.checks import HIGHER_IS_BETTER
from mlops_provider.runtime.gate.evaluation_set import (
    EVALUATION_SPLIT,
    evaluation_frame,
    iso_window,
    model_window,
    overlaps,
    utc,
)
from mlops_provider.runtime.gate.registry import CHAMPION, alias_version, model_version
from mlops_provider.runtime.gate.slices import slice_checks, slice_table
from mlops_provider.runtime.metrics import (
    all_metrics,
    bootstrap_intervals,
    expected_calibration_error,
    roc_points,
)
from mlops_provider.runtime.training.tracking import configure_tracking
from mlops_provider.tasks import GATE_METRICS

log = logging.getLogger(__name__)


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
# the gate
# ----------------------------------------------------------------------------------------------------


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
    gate_checks.validate_metric_keys(primary_metric, floors, max_regression)  # key check first
    boot = {"samples": 200, "confidence": 0.95, "seed": 0, **(bootstrap or {})}
    client = configure_tracking(tracking)
    challenger_version = str(challenger_version).strip()
    mv = model_version(client, model_name, challenger_version, "gate")
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
    run = _GateRun(
        client=client, verdict=verdict, model_name=model_name, challenger_version=challenger_version,
        snapshot_path=str(snapshot_path), primary_metric=primary_metric, boot=boot, tracking=tracking,
    )
    try:
        x, y, side, manifest = run.evaluation_set(categorical, numeric, label, evaluation_split, slices, behavioral)
        challenger, champion, champion_version = run.score(x)
        checks = run.compare(y, challenger, champion, champion_version, floors, max_regression)
        for spec in slices or []:
            table = slice_table(spec, side, x, y, challenger.p, champion.p if champion is not None else None)
            verdict["slices"].extend(table)
            checks.extend(slice_checks(spec, table, verdict["bootstrap"]))
        checks.extend(run.behavioral(list(behavioral or []), x, side, challenger))
        checks.extend(run.calibration(calibration, y, challenger, champion))
        checks.extend(run.latency(latency, x, challenger, champion))
        floors_only = verdict["bootstrap"] and first_run == "floors"
        gate_checks.decide(verdict, checks, floors_only=floors_only)
        verdict["evaluation_seconds"] = round(time.perf_counter() - run.t0, 3)
        if model_card:
            run.model_card(x, y, challenger, champion, manifest)
    except MlopsError as e:
        verdict["decision"] = "manual" if isinstance(e, SignatureMismatchError) else "error"
        verdict["error"] = f"{type(e).__name__}: {e}"
        gate_verdict.record(client, model_name, challenger_version, verdict, report_dir)
        raise
    verdict = gate_verdict.record(client, model_name, challenger_version, verdict, report_dir)
    if model_card:
        gate_verdict.log_verdict(client, verdict["challenger"]["run_id"], verdict)
    log.info(
        "gate %s v%s vs champion %s: %s %s",
        model_name,
        challenger_version,
        champion_version,
        verdict["decision"],
        f"(failed: {verdict['failed']})" if verdict["failed"] else "",
    )
    return verdict


class _GateRun:
    """The steps of one :func:`evaluate_gate` call; each writes its part of ``verdict``."""

    def __init__(
        self,
        *,
        client: MlflowClient,
        verdict: dict[str, Any],
        model_name: str,
        challenger_version: str,
        snapshot_path: str,
        primary_metric: str,
        boot: dict[str, Any],
        tracking: dict[str, Any] | None,
    ) -> None:
        self.client, self.verdict, self.model_name = client, verdict, model_name
        self.challenger_version, self.snapshot_path = challenger_version, snapshot_path
        self.primary_metric, self.boot, self.tracking = primary_metric, boot, tracking
        self.seed = int(boot["seed"])
        self.t0 = time.perf_counter()
        self.eval_start: pd.Timestamp | None = None
        self.eval_end: pd.Timestamp | None = None
        self.preds: dict[str, np.ndarray] = {}

    def evaluation_set(
        self,
        categorical: list[str],
        numeric: list[str],
        label: str,
        split: str,
        slices: list[dict[str, Any]] | None,
        behavioral: list[dict[str, Any]] | None,
    ) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame, dict[str, Any]]:
        """Load the split; refuse it when it overlaps what the challenger trained / early-stopped on."""
        from mlops_provider.runtime.features.snapshot import load_snapshot

        verdict = self.verdict
        df, manifest = load_snapshot(self.snapshot_path)
        extra = [s["column"] for s in slices or []] + [t["column"] for t in behavioral or [] if t.get("column")]
        x, y, side = evaluation_frame(df, categorical, numeric, label, self.snapshot_path, split=split, extra=extra)
        del df
        ts = pd.to_datetime(side["event_timestamp"], utc=True) if "event_timestamp" in side else None
        split_fields = manifest.get("split") or {}
        self.eval_start = ts.min() if ts is not None else utc(split_fields.get("evaluation_start"))
        self.eval_end = ts.max() if ts is not None else utc(split_fields.get("evaluation_end"))
        verdict["evaluation_set"] = {
            "snapshot_path": self.snapshot_path,
            "snapshot_hash": manifest.get("hash"),
            "split": split,
            "rows": len(x),
            "positives": int(y.sum()),
            "window": {
                "start": None if self.eval_start is None else self.eval_start.isoformat(),
                "end": None if self.eval_end is None else self.eval_end.isoformat(),
            },
        }
        # leakage: the evaluation rows must come after everything the challenger trained / early-stopped on
        window = model_window(self.client, self.model_name, self.challenger_version)
        verdict["challenger"]["training_window"] = iso_window(window)
        if window is None:
            verdict["warnings"].append("challenger training window unknown (no readable snapshot_path tag)")
        elif self.eval_start is not None and overlaps(window, self.eval_start, self.eval_end):
            raise EvaluationLeakageError(
                f"gate: the evaluation window {self.eval_start} .. {self.eval_end} of {self.snapshot_path} overlaps "
                f"the training window {window['start']} .. {window['end']} of {self.model_name} "
                f"v{self.challenger_version} (snapshot {window['snapshot_path']}): its scores would be inflated. "
                "Score it on a snapshot whose evaluation split is later than its training data "
                "(training.evaluation_days)."
            )
        return x, y, side, manifest

    def score(self, x: pd.DataFrame) -> tuple[Scored, Scored | None, str | None]:
        """The challenger, and the champion on the same rows (same inputs, or a manual decision)."""
        name, version = self.model_name, self.challenger_version
        challenger = Scored(name, version, "challenger")
        challenger.score(x)
        champion_version = alias_version(self.client, name, CHAMPION)
        champion: Scored | None = None
        if champion_version is not None and champion_version != version:
            champion = Scored(name, champion_version, "champion")
            a, b = challenger.inputs(), champion.inputs()
            if a is not None and b is not None and a != b:
                diff = sorted(set(a) ^ set(b))
                raise SignatureMismatchError(
                    f"gate: {name} v{version} takes different inputs than @champion v{champion_version} "
                    f"(differing columns: {diff[:10]}); the serving path and the drift reference change with it. "
                    f"No automatic comparison: decide by hand and, if it should serve, trigger the "
                    f"{name}__force_promote DAG with a reason."
                )
            champion.score(x)
            champion_window = model_window(self.client, name, champion_version)
            if self.eval_start is not None and overlaps(champion_window, self.eval_start, self.eval_end):
                self.verdict["warnings"].append(
                    f"the champion v{champion_version} trained on part of the evaluation window: its scores are "
                    "optimistic (the comparison favours the champion)"
                )
        self.verdict["bootstrap"] = champion_version is None
        self.preds = {"challenger": challenger.p, **({"champion": champion.p} if champion is not None else {})}
        return challenger, champion, champion_version

    def compare(
        self,
        y: np.ndarray,
        challenger: Scored,
        champion: Scored | None,
        champion_version: str | None,
        floors: dict[str, float],
        max_regression: dict[str, float],
    ) -> list[dict[str, Any]]:
        """Metrics with bootstrap CIs of both models, their paired delta, and the floor / regression checks."""
        verdict, boot = self.verdict, self.boot
        metrics = all_metrics(y, challenger.p)
        champ_metrics = all_metrics(y, champion.p) if champion is not None else None
        if champion_version is not None and champion is None:  # re-gating the champion itself
            champ_metrics = dict(metrics)
        ci = bootstrap_intervals(
            y, self.preds, samples=int(boot["samples"]), confidence=float(boot["confidence"]), seed=self.seed
        )
        verdict["challenger"].update(metrics=metrics, ci=ci["challenger"])
        if champion_version is not None:
            champion_mv = self.client.get_model_version(self.model_name, champion_version)
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
        verdict["slices"] = []
        return gate_checks.build_checks(
            metrics, None if verdict["bootstrap"] else champ_metrics, self.primary_metric, floors, max_regression
        )

    def behavioral(
        self, tests: list[dict[str, Any]], x: pd.DataFrame, side: pd.DataFrame, challenger: Scored
    ) -> list[dict[str, Any]]:
        if not tests:
            return []
        from mlops_provider.runtime.gate import behavioral as behavioral_tests

        bx = pd.concat([x, side.drop(columns=["event_timestamp"], errors="ignore")], axis=1)
        bx = bx.loc[:, ~bx.columns.duplicated()]
        results = behavioral_tests.run_tests(tests, bx, challenger.predict, seed=self.seed)
        self.verdict["behavioral"] = results
        return gate_checks.behavioral_checks(results)

    def calibration(
        self, calibration: dict[str, Any] | None, y: np.ndarray, challenger: Scored, champion: Scored | None
    ) -> list[dict[str, Any]]:
        if not calibration:
            return []
        verdict = self.verdict
        bins = int(calibration.get("bins", 10))
        ece, table = expected_calibration_error(y, challenger.p, bins)
        verdict["challenger"]["ece"] = ece
        verdict["calibration"] = {"challenger": table}
        champ_ece = None
        if champion is not None:
            champ_ece, champ_table = expected_calibration_error(y, champion.p, bins)
            verdict["champion"]["ece"] = champ_ece
            verdict["calibration"]["champion"] = champ_table
        return gate_checks.calibration_checks(ece, champ_ece, calibration)

    def latency(
        self, latency: dict[str, Any] | None, x: pd.DataFrame, challenger: Scored, champion: Scored | None
    ) -> list[dict[str, Any]]:
        if not latency:
            return []
        batch_size = int(latency.get("batch_size", 1024))
        timed = time_batches(
            [m for m in (challenger, champion) if m is not None], x, batch_size, int(latency.get("repeats", 5))
        )
        self.verdict["latency"] = {"batch_size": batch_size, "median_ms": timed}
        return gate_checks.latency_checks(timed, latency)

    def model_card(
        self, x: pd.DataFrame, y: np.ndarray, challenger: Scored, champion: Scored | None, manifest: dict[str, Any]
    ) -> None:
        """Importances, ROC points and reliability tables, then the card logged on the challenger's run."""
        from mlops_provider.runtime.gate.model_card import write_model_card

        verdict = self.verdict
        verdict["importance"] = permutation_importance(challenger, x, y, self.primary_metric, seed=self.seed)
        verdict["roc"] = {k: roc_points(y, p) for k, p in self.preds.items()}
        if "calibration" not in verdict:
            verdict["calibration"] = {k: expected_calibration_error(y, p)[1] for k, p in self.preds.items()}
        verdict["training_manifest"] = {
            k: manifest.get(k) for k in ("hash", "window", "split", "rows", "feature_service")
        }
        with tempfile.TemporaryDirectory(prefix="mlops-card-") as tmp:
            files = write_model_card(gate_verdict.json_safe(verdict), Path(tmp))
            verdict["model_card"] = gate_verdict.log_card(
                self.client, verdict["challenger"]["run_id"], files, self.tracking
            )


__all__ = ["EVALUATION_SPLIT", "Scored", "evaluate_gate", "evaluate_version", "permutation_importance", "time_batches"]
