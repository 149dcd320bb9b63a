"""Champion vs challenger on the same live traffic, per task type (runtime module).

The inference log of an online experiment carries ``variant`` (which model answered the request) and, per
TASK-CONTRACT's serving, ``champion_prediction`` / ``challenger_prediction``: each model's primary output
(binary the probability, multiclass the class, regression the value; null for the model that did not score
the row). Older logs carry ``challenger_prediction`` beside the served ``prediction``.

* **shadow** (both models scored the same rows): paired bootstrap over those rows;
* **split** (each request answered by one model): independent bootstrap per arm, each arm judged on its served
  prediction (multiclass: with its class probabilities, so its log loss too).

The winner is named on one metric (:meth:`~mlops_provider.runtime.monitoring.task_metrics.MonitorTask.decision_metric`:
binary ROC AUC; multiclass log loss when both arms have probabilities, else accuracy; regression RMSE) when the
bootstrap probability that the challenger is better reaches ``confidence`` (champion: at most ``1 - confidence``);
every compared metric gets its delta interval and that probability.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from mlops_provider.runtime.monitoring.live_metrics import binary_live_metrics
from mlops_provider.runtime.monitoring.task_metrics import BINARY, Arm, MonitorTask

PREDICTION = "prediction"
CHAMPION_PREDICTION = "champion_prediction"
CHALLENGER_PREDICTION = "challenger_prediction"
VARIANT = "variant"
#: what the metric is called in a reason / a "why" line
METRIC_TEXT = {"roc_auc": "ROC AUC", "log_loss": "log loss"}


def with_scores(task: MonitorTask, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the task's score columns (computed from the logged prediction columns when absent)."""
    cols = task.score_columns()
    if all(c in frame.columns for c in cols) and (task.name != "multiclass" or len(cols) > 1):
        return frame
    scores = task.scores(frame)
    return pd.concat([frame.drop(columns=[c for c in scores.columns if c in frame.columns]), scores], axis=1)


def _label_ok(task: MonitorTask, y: np.ndarray) -> np.ndarray:
    if y.dtype == object:
        return np.array([v is not None for v in y], dtype=bool)
    return np.isfinite(y)


def _primary_ok(task: MonitorTask, values: pd.Series) -> pd.Series:
    if task.experiment_type() == "float":
        return pd.to_numeric(values, errors="coerce").notna()
    return values.notna()


def _full_metrics(task: MonitorTask, arm: Arm) -> dict[str, Any]:
    if task.name == BINARY:
        assert arm.score is not None
        return binary_live_metrics(arm.y, arm.score)
    return {"n": int(len(arm)), **task.arm_metrics(arm)}


def _bootstrap(task: MonitorTask, a: Arm, b: Arm, *, paired: bool, n_boot: int, seed: int) -> dict[str, Any]:
    """Bootstrap deltas (challenger - champion) of every compared metric, with P(challenger better)."""
    rng = np.random.default_rng(seed)
    deltas: dict[str, list[float]] = {}
    for _ in range(n_boot):
        ia = rng.integers(0, len(a), len(a))
        ib = ia if paired else rng.integers(0, len(b), len(b))
        ma, mb = task.arm_metrics(a.take(ia)), task.arm_metrics(b.take(ib))
        for m, va in ma.items():
            vb = mb.get(m)
            if va is not None and vb is not None and np.isfinite(va) and np.isfinite(vb):
                deltas.setdefault(m, []).append(vb - va)
    out: dict[str, Any] = {"resamples": n_boot, "deltas": {}}
    for m, d in deltas.items():
        arr = np.asarray(d)
        better = arr > 0 if task.higher_is_better(m) else arr < 0
        out["deltas"][m] = {"ci95": [float(np.quantile(arr, 0.025)), float(np.quantile(arr, 0.975))],
                            "p_challenger_better": float(better.mean() + 0.5 * (arr == 0).mean())}
    if task.name == BINARY:  # the binary keys of before
        for m, key, p_key in (("roc_auc", "delta_roc_auc_ci95", "p_challenger_better_auc"),
                              ("log_loss", "delta_log_loss_ci95", "p_challenger_better_log_loss")):
            if m in out["deltas"]:
                out[key] = out["deltas"][m]["ci95"]
                out[p_key] = out["deltas"][m]["p_challenger_better"]
    return out


def _sample(frame: pd.DataFrame, max_rows: int, rng: np.random.Generator) -> pd.DataFrame:
    if len(frame) > max_rows:
        return frame.iloc[np.sort(rng.choice(len(frame), max_rows, replace=False))]
    return frame


def compare_variants(
    joined: pd.DataFrame,
    *,
    label: str,
    task: MonitorTask | None = None,
    n_boot: int = 500,
    confidence: float = 0.95,
    seed: int = 0,
    max_rows: int = 20_000,
) -> dict[str, Any] | None:
    """Champion vs challenger on the joined (request, outcome) rows; ``None`` when the log has no experiment
    columns. See the module docstring."""
    task = task or MonitorTask()
    rng = np.random.default_rng(seed)
    frame = with_scores(task, joined)
    frame = frame[_label_ok(task, task.labels(frame[label]))] if len(frame) else frame
    chall = frame[CHALLENGER_PREDICTION] if CHALLENGER_PREDICTION in frame.columns else None
    champ = frame[CHAMPION_PREDICTION] if CHAMPION_PREDICTION in frame.columns and _primary_ok(
        task, frame[CHAMPION_PREDICTION]).any() else None
    paired = pd.Series(False, index=frame.index)
    if chall is not None:
        paired = _primary_ok(task, chall) & (_primary_ok(task, champ) if champ is not None else task.valid(frame))
    out: dict[str, Any]
    if int(paired.sum()) >= 2:
        df = _sample(frame[paired], max_rows, rng)
        y = task.labels(df[label])
        a = task.arm(y, primary=df[CHAMPION_PREDICTION]) if champ is not None else task.arm(y, df)
        b = task.arm(y, primary=df[CHALLENGER_PREDICTION])
        if a.proba is not None and b.proba is None:  # compare like with like: the challenger has its class only
            a = Arm(a.y, a.score, a.pred, None)
        out = {"mode": "shadow (paired)", "n": int(len(df)), "champion": _full_metrics(task, a),
               "challenger": _full_metrics(task, b)}
        out.update(_bootstrap(task, a, b, paired=True, n_boot=n_boot, seed=seed))
        arms = [a, b]
    elif VARIANT in frame.columns and frame[VARIANT].nunique(dropna=True) >= 2:
        values = sorted(map(str, frame[VARIANT].dropna().unique()))
        base = "champion" if "champion" in values else values[0]
        other = "challenger" if base == "champion" and "challenger" in values else next(v for v in values if v != base)
        built = {}
        for v in (base, other):
            part = frame[(frame[VARIANT].astype(str) == v) & task.valid(frame)]
            part = _sample(part, max_rows, rng)
            built[v] = task.arm(task.labels(part[label]), part)
        a, b = built[base], built[other]
        out = {"mode": "split (unpaired)", "variants": {base: "champion", other: "challenger"},
               "n": {base: int(len(a)), other: int(len(b))}, "champion": _full_metrics(task, a),
               "challenger": _full_metrics(task, b)}
        if len(a) >= 2 and len(b) >= 2:
            out.update(_bootstrap(task, a, b, paired=False, n_boot=n_boot, seed=seed))
        arms = [a, b]
    else:
        return None
    metric = task.decision_metric(arms)
    p_better = ((out.get("deltas") or {}).get(metric) or {}).get("p_challenger_better")
    out["decided_by"] = metric
    if p_better is None:
        out["winner"] = "inconclusive"
        out["why"] = (f"{METRIC_TEXT.get(metric, metric)} undefined "
                      f"({'one class of label or ' if metric == 'roc_auc' else ''}too few rows)")
    elif p_better >= confidence:
        out["winner"] = "challenger"
    elif p_better <= 1 - confidence:
        out["winner"] = "champion"
    else:
        out["winner"] = "inconclusive"
    out["confidence"] = confidence
    delta = {}
    for m in out["champion"]:
        va, vb = out["champion"].get(m), out["challenger"].get(m)
        if m in task.metrics and isinstance(va, float) and isinstance(vb, float):
            delta[m] = vb - va
    out["delta"] = delta
    if task.name == BINARY:
        out["delta_roc_auc"] = delta.get("roc_auc")
    return out


__all__ = ["CHALLENGER_PREDICTION", "CHAMPION_PREDICTION", "VARIANT", "compare_variants", "with_scores"]
