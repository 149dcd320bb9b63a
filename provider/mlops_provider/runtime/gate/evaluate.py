"""Champion / challenger gate: the entry point and the scoring on the frozen evaluation split (runtime module).

:func:`evaluate_gate` scores the challenger version and the current ``@champion`` on the SAME frozen
evaluation set (the ``evaluation`` split of a snapshot: a time window after every row the challenger
trained or early-stopped on) with the metrics of the model's task (``mlops_provider.tasks``) and decides:

- absolute floors (``floor.<metric>``) (:mod:`.checks`);
- against the champion, a paired bootstrap of challenger - champion for the primary metric
  (``regression.<metric>``) and every guard metric (``guard.<metric>``): rejected only when the whole
  confidence interval lies on the worse side of the tolerance (:func:`.checks.comparison_checks`); the
  verdict states the gate's power, the smallest difference of the primary metric this window resolves
  (:func:`.checks.power_statement`);
- slice checks (``slice.<column>=<value>.<metric>``): no slice may regress more than its bound (:mod:`.slices`);
- behavioral tests (``behavioral.<name>``): invariance, directional, minimum functionality (:mod:`.behavioral`);
- calibration (``calibration.ece``, classification) and latency per batch (``latency.median_ms`` /
  ``latency.ratio``), both models timed in the same process on the same hardware.

A first run (no champion) bootstraps: only the absolute checks apply. The verdict is always written —
JSON file, JSON artifact and model card on the challenger's MLflow run, ``gate.*`` tags on the version
(:mod:`.verdict`) — on pass or fail, with every check's value and bound; the return value is the full
verdict (the operator pushes only its small :func:`~.verdict.xcom_summary`). A reject is a normal outcome
(returned, never raised). Bad input raises a named error after writing a verdict whose decision is
``error`` (or ``manual`` when the signatures or tasks differ).

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

import numpy as np
import pandas as pd
from mlflow import MlflowClient

from mlops_provider.exceptions import (
    ConfigError,
    EvaluationLeakageError,
    MlopsError,
    SignatureMismatchError,
)
from mlops_provider.runtime.gate import checks as gate_checks
from mlops_provider.runtime.gate import verdict as gate_verdict
from mlops_provider.runtime.gate.evaluation_set import (
    EVALUATION_SPLIT,
    evaluation_frame,
    iso_window,
    model_window,
    overlaps,
    utc,
)
from mlops_provider.runtime.gate.registry import CHAMPION, alias_version, model_version
from mlops_provider.runtime.gate.scoring import (
    Scored,
    TaskInfo,
    encode_labels,
    permutation_importance,
    time_batches,
)
from mlops_provider.runtime.gate.slices import slice_checks, slice_table
from mlops_provider.runtime.metrics import (
    bootstrap_intervals,
    confusion_matrix,
    expected_calibration_error,
    roc_points,
    top_label,
)
from mlops_provider.runtime.training.tracking import configure_tracking
from mlops_provider.specs import GateSpec, TrainingSpec, as_dict
from mlops_provider.tasks import ECE_BINS

log = logging.getLogger(__name__)
#: residual points kept for the model card's plot (seeded sample)
RESIDUAL_POINTS = 400


def evaluate_version(
    model_name: str, version: str, x: pd.DataFrame, y: np.ndarray, *, role: str, info: TaskInfo | None = None
) -> dict[str, float]:
    """Every gate metric of ``models:/<name>/<version>`` on ``(x, y)`` (named error on bad output)."""
    info = info or TaskInfo()
    return info.metrics(y, Scored(model_name, version, role, info).score(x))


# ----------------------------------------------------------------------------------------------------
# the gate
# ----------------------------------------------------------------------------------------------------


def evaluate_gate(
    model_name: str,
    challenger_version: str,
    snapshot_path: str,
    gate: GateSpec,
    training: TrainingSpec,
    *,
    report_dir: str,
    tracking: dict[str, Any] | None = None,
    evaluation_split: str = EVALUATION_SPLIT,
    store: Any = None,
) -> dict[str, Any]:
    """Score challenger vs @champion on the snapshot's evaluation split; return the verdict (see module doc).

    ``gate``: the :class:`GateSpec` (its task defaults are filled in here, :meth:`GateSpec.for_task`);
    ``training``: the model's :class:`TrainingSpec` (task, label, features). ``store``: the
    :class:`~mlops_provider.runtime.io.objstore.ObjectStore` an ``s3://`` snapshot is read and an ``s3://``
    ``report_dir`` written through (None: the process default).
    """
    try:
        gate = gate.for_task(training)
    except ValueError as e:
        raise ConfigError(f"gate: {e}") from None
    assert gate.primary_metric is not None
    client = configure_tracking(tracking)
    challenger_version = str(challenger_version).strip()
    mv = model_version(client, model_name, challenger_version, "gate")
    verdict: dict[str, Any] = {
        "model": model_name,
        "task": training.task,
        "decision": "error",
        "primary_metric": gate.primary_metric,
        "guard_metrics": list(gate.guard_metrics or []),
        "challenger": {"version": challenger_version, "run_id": mv.run_id},
        "champion": None,
        "checks": [],
        "warnings": [],
        "evaluated_at": datetime.now(UTC).isoformat(),
    }
    run = _GateRun(client=client, verdict=verdict, model_name=model_name, challenger_version=challenger_version,
                   snapshot_path=str(snapshot_path), gate=gate, training=training, tracking=tracking,
                   store=store)
    champion_version = None
    try:
        x, labels, side, manifest = run.evaluation_set(evaluation_split)
        challenger, champion, champion_version = run.score(x)
        y = run.labels(labels, challenger.info)
        checks = run.compare(y, challenger, champion, champion_version)
        info = challenger.info
        for spec in gate.slices:
            table = slice_table(spec, side, x, y, challenger.p, champion.p if champion is not None else None,
                                metrics=info.metrics, primary=gate.primary_metric)
            verdict["slices"].extend(table)
            checks.extend(slice_checks(spec, table, verdict["bootstrap"], task=info.task, primary=gate.primary_metric))
        checks.extend(run.behavioral(x, challenger))
        checks.extend(run.calibration(y, challenger, champion))
        checks.extend(run.latency(x, challenger, champion))
        floors_only = verdict["bootstrap"] and gate.first_run == "floors"
        gate_checks.decide(verdict, checks, floors_only=floors_only)
        verdict["evaluation_seconds"] = round(time.perf_counter() - run.t0, 3)
        if gate.model_card:
            run.model_card(x, y, challenger, champion, manifest)
    except MlopsError as e:
        verdict["decision"] = "manual" if isinstance(e, SignatureMismatchError) else "error"
        verdict["error"] = f"{type(e).__name__}: {e}"
        gate_verdict.record(client, model_name, challenger_version, verdict, report_dir, store=store)
        raise
    verdict = gate_verdict.record(client, model_name, challenger_version, verdict, report_dir, store=store)
    if gate.model_card:
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
        gate: GateSpec,
        training: TrainingSpec,
        tracking: dict[str, Any] | None,
        store: Any = None,
    ) -> None:
        self.client, self.verdict, self.model_name = client, verdict, model_name
        self.store = store
        self.challenger_version, self.snapshot_path = challenger_version, snapshot_path
        self.gate, self.training, self.tracking = gate, training, tracking
        self.primary_metric = str(gate.primary_metric)
        self.boot = gate.bootstrap
        self.seed = int(gate.bootstrap.seed)
        self.t0 = time.perf_counter()
        self.eval_start: pd.Timestamp | None = None
        self.eval_end: pd.Timestamp | None = None
        self.preds: dict[str, np.ndarray] = {}

    def evaluation_set(self, split: str) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame, dict[str, Any]]:
        """Load the split; refuse it when it overlaps what the challenger trained / early-stopped on."""
        from mlops_provider.runtime.features.snapshot import load_snapshot

        verdict, t = self.verdict, self.training
        df, manifest = load_snapshot(self.snapshot_path, store=self.store)
        extra = [s.column for s in self.gate.slices]
        x, labels, side = evaluation_frame(df, t.features.categorical, t.features.numeric, t.label,
                                           self.snapshot_path, split=split, extra=extra)
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
            "window": {
                "start": None if self.eval_start is None else self.eval_start.isoformat(),
                "end": None if self.eval_end is None else self.eval_end.isoformat(),
            },
        }
        # leakage: the evaluation rows must come after everything the challenger trained / early-stopped on
        window = model_window(self.client, self.model_name, self.challenger_version, store=self.store)
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
        return x, labels, side, manifest

    def labels(self, labels: pd.Series, info: TaskInfo) -> np.ndarray:
        """The evaluation labels encoded for the model's task; the label summary goes into the verdict."""
        y = encode_labels(info, labels, self.snapshot_path)
        ev = self.verdict["evaluation_set"]
        if info.task == "binary":
            ev["positives"] = int(y.sum())
        elif info.task == "multiclass":
            counts = np.bincount(y, minlength=len(info.classes or []))
            ev["class_counts"] = {str(c): int(n) for c, n in zip(info.classes or [], counts, strict=True)}
        else:
            ev["label_mean"] = float(np.mean(y))
        return y

    def score(self, x: pd.DataFrame) -> tuple[Scored, Scored | None, str | None]:
        """The challenger, and the champion on the same rows (same inputs and task, or a manual decision)."""
        name, version = self.model_name, self.challenger_version
        info = TaskInfo.of_version(self.client, name, version)
        if info.task != self.training.task:
            raise ConfigError(
                f"gate: {name} v{version} is a {info.task} model but training.task is {self.training.task}; gate "
                "it with the config it was trained with, or retrain it."
            )
        challenger = Scored(name, version, "challenger", info)
        challenger.score(x)
        champion_version = alias_version(self.client, name, CHAMPION)
        champion: Scored | None = None
        if champion_version is not None and champion_version != version:
            champion_info = TaskInfo.of_version(self.client, name, champion_version)
            if champion_info != info:
                raise SignatureMismatchError(
                    f"gate: {name} v{version} predicts {info} but @champion v{champion_version} predicts "
                    f"{champion_info}: no automatic comparison. Decide by hand and, if it should serve, trigger the "
                    f"{name}__force_promote DAG with a reason."
                )
            champion = Scored(name, champion_version, "champion", champion_info)
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
            champion_window = model_window(self.client, name, champion_version, store=self.store)
            if self.eval_start is not None and overlaps(champion_window, self.eval_start, self.eval_end):
                self.verdict["warnings"].append(
                    f"the champion v{champion_version} trained on part of the evaluation window: its scores are "
                    "optimistic (the comparison favours the champion)"
                )
        self.verdict["bootstrap"] = champion_version is None
        self.preds = {"challenger": challenger.p, **({"champion": champion.p} if champion is not None else {})}
        return challenger, champion, champion_version

    def compare(
        self, y: np.ndarray, challenger: Scored, champion: Scored | None, champion_version: str | None
    ) -> list[dict[str, Any]]:
        """Metrics with bootstrap CIs of both models, their paired delta, the floors, the significance checks
        against the champion and the power statement."""
        verdict, boot, gate, info = self.verdict, self.boot, self.gate, challenger.info
        metrics = info.metrics(y, challenger.p)
        champ_metrics = info.metrics(y, champion.p) if champion is not None else None
        if champion_version is not None and champion is None:  # re-gating the champion itself
            champ_metrics = dict(metrics)
        ci = bootstrap_intervals(y, self.preds, samples=boot.samples, confidence=boot.confidence, seed=self.seed,
                                 metrics=info.metrics)
        verdict["challenger"].update(metrics=metrics, ci=ci["challenger"])
        checks = gate_checks.floor_checks(info.task, metrics, dict(gate.floors or {}))
        primary = self.primary_metric
        if champion_version is not None and champ_metrics is not None:
            champion_mv = self.client.get_model_version(self.model_name, champion_version)
            verdict["champion"] = {
                "version": champion_version,
                "run_id": champion_mv.run_id,
                "metrics": champ_metrics,
                "ci": ci.get("champion", ci["challenger"]),
            }
            delta_ci = ci.get("delta") or {m: [0.0, 0.0] for m in metrics}  # the champion against itself: 0
            verdict["delta"] = {"metrics": {m: metrics[m] - champ_metrics[m] for m in metrics}, "ci": delta_ci}
            comparisons = gate_checks.comparison_checks(
                info.task, metrics, champ_metrics, delta_ci, primary=primary, guards=list(gate.guard_metrics or []),
                max_regression=dict(gate.max_regression or {}), confidence=boot.confidence,
            )
            verdict["comparison"] = [
                {k: c[k] for k in ("name", "metric", "guard", "delta", "ci", "tolerance", "passed", "message")}
                for c in comparisons
            ]
            checks.extend(comparisons)
        if "delta_se" in ci:
            se, basis = ci["delta_se"].get(primary, math.nan), "paired"
        else:
            se, basis = math.sqrt(2) * ci["se"]["challenger"].get(primary, math.nan), "unpaired estimate"
        verdict["power"] = gate_checks.power_statement(se, metric=primary, rows=len(y), confidence=boot.confidence,
                                                       power=boot.power, basis=basis)
        verdict["slices"] = []
        return checks

    def behavioral(self, x: pd.DataFrame, challenger: Scored) -> list[dict[str, Any]]:
        if not self.gate.behavioral:
            return []
        from mlops_provider.runtime.gate import behavioral as behavioral_tests

        info = challenger.info
        results = behavioral_tests.run_tests(self.gate.behavioral, x, challenger.predict, seed=self.seed,
                                             task=info.task, classes=info.classes,
                                             inputs=self.training.features.all)
        self.verdict["behavioral"] = results
        return gate_checks.behavioral_checks(results)

    def _reliability(self, y: np.ndarray, p: np.ndarray, task: str, bins: int) -> tuple[float, list[dict[str, Any]]]:
        if task == "multiclass":
            conf, correct = top_label(y, p)
            return expected_calibration_error(correct.astype(np.float64), conf, bins)
        return expected_calibration_error(y, p, bins)

    def calibration(self, y: np.ndarray, challenger: Scored, champion: Scored | None) -> list[dict[str, Any]]:
        calibration = self.gate.calibration
        if calibration is None:
            return []
        verdict, task = self.verdict, challenger.info.task
        ece, table = self._reliability(y, challenger.p, task, calibration.bins)
        verdict["challenger"]["ece"] = ece
        verdict["calibration"] = {"challenger": table}
        champ_ece = None
        if champion is not None:
            champ_ece, champ_table = self._reliability(y, champion.p, task, calibration.bins)
            verdict["champion"]["ece"] = champ_ece
            verdict["calibration"]["champion"] = champ_table
        return gate_checks.calibration_checks(ece, champ_ece, as_dict(calibration))

    def latency(self, x: pd.DataFrame, challenger: Scored, champion: Scored | None) -> list[dict[str, Any]]:
        latency = self.gate.latency
        if latency is None:
            return []
        timed = time_batches([m for m in (challenger, champion) if m is not None], x, latency.batch_size,
                             latency.repeats)
        self.verdict["latency"] = {"batch_size": latency.batch_size, "median_ms": timed}
        return gate_checks.latency_checks(timed, as_dict(latency))

    def model_card(
        self, x: pd.DataFrame, y: np.ndarray, challenger: Scored, champion: Scored | None, manifest: dict[str, Any]
    ) -> None:
        """Importances and the task's plots data (ROC + reliability; confusion matrix + per-class recall;
        residuals), then the card logged on the challenger's run."""
        from mlops_provider.runtime.gate.model_card import write_model_card

        verdict, info = self.verdict, challenger.info
        verdict["importance"] = permutation_importance(challenger, x, y, self.primary_metric, seed=self.seed)
        if info.task == "binary":
            verdict["roc"] = {k: roc_points(y, p) for k, p in self.preds.items()}
        elif info.task == "multiclass":
            k = len(info.classes or [])
            verdict["confusion"] = {"classes": info.classes, **{r: confusion_matrix(y, p, k)
                                                                for r, p in self.preds.items()}}
        else:
            idx = np.random.default_rng(self.seed).permutation(len(y))[:RESIDUAL_POINTS]
            verdict["residuals"] = {
                role: {"predicted": info.point(p)[idx].round(6).tolist(),
                       "residual": (y[idx] - info.point(p)[idx]).round(6).tolist()}
                for role, p in self.preds.items()
            }
        if "calibration" not in verdict and info.task != "regression":
            verdict["calibration"] = {r: self._reliability(y, p, info.task, ECE_BINS)[1] for r, p in self.preds.items()}
        verdict["training_manifest"] = {
            k: manifest.get(k) for k in ("hash", "window", "split", "rows", "feature_service")
        }
        with tempfile.TemporaryDirectory(prefix="mlops-card-") as tmp:
            files = write_model_card(gate_verdict.json_safe(verdict), Path(tmp))
            verdict["model_card"] = gate_verdict.log_card(
                self.client, verdict["challenger"]["run_id"], files, self.tracking
            )


__all__ = ["EVALUATION_SPLIT", "Scored", "TaskInfo", "evaluate_gate", "evaluate_version", "permutation_importance",
           "time_batches"]
