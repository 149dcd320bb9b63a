"""Live metric functions of every task type (runtime module; plain numpy, the same values as scikit-learn's).

Binary (:func:`binary_live_metrics`: ROC AUC, log loss, Brier, accuracy at 0.5, ECE), multiclass
(:func:`multiclass_live_metrics`: log loss, accuracy, macro-F1, top-label ECE, per-class recall / precision;
:func:`expected_multiclass`: their CBPE estimates) and regression (:func:`regression_live_metrics`: RMSE, MAE,
R², bias, pinball loss and coverage per quantile). Definitions as scikit-learn's (tested): ``log_loss`` with
probabilities clipped to ``[1e-7, 1]``, ``f1_score(average="macro")`` over the labels present in truth or
prediction, ``r2_score``.

These functions belong in :mod:`mlops_provider.runtime.metrics` (the one home of the metric code) once the
per-task metrics of issue 13 land there; they are here so the monitor does not wait for that branch. The
binary ROC AUC and log loss already come from there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mlops_provider.runtime.metrics import log_loss as _binary_log_loss
from mlops_provider.runtime.metrics import roc_auc_or_none as _auc

EPS = 1e-7
ECE_BINS = 10


# ------------------------------------------------------------------------------------------- helpers
def class_text(v: Any) -> str | None:
    """One class label as text: integral numbers as ``"1"`` whether 1, 1.0, "1" or "1.0" (None for missing),
    so label partitions, logged predictions, probability keys and ``mlops.classes`` agree."""
    if v is None or (isinstance(v, (float, np.floating)) and np.isnan(v)):
        return None
    if isinstance(v, (bool, np.bool_)):
        return str(int(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return str(int(v)) if float(v).is_integer() else repr(float(v))
    text = str(v)
    try:
        f = float(text)
    except ValueError:
        return text
    return str(int(f)) if f.is_integer() and math.isfinite(f) else text


def class_texts(values: Any) -> pd.Series:
    """:func:`class_text` of every value (index kept for a Series)."""
    s = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    return pd.Series([class_text(v) for v in s.to_numpy(dtype=object)], index=s.index, dtype=object)


def _class_text(v: Any) -> str:
    return class_text(v) or ""


def _none(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


# ---------------------------------------------------------------------------------------- binary
def calibration_table(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> tuple[float, list[dict[str, Any]]]:
    """(expected calibration error, reliability bins) on equal-width probability bins."""
    idx = np.clip((p * bins).astype(int), 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        m = idx == b
        if not m.any():
            continue
        pred, obs = float(p[m].mean()), float(y[m].mean())
        ece += m.sum() / len(y) * abs(pred - obs)
        table.append({"bin": [b / bins, (b + 1) / bins], "n": int(m.sum()), "mean_predicted": pred, "observed": obs})
    return float(ece), table


def binary_live_metrics(y: Sequence[float] | np.ndarray, p: Sequence[float] | np.ndarray, *,
                        with_bins: bool = False) -> dict[str, Any]:
    """ROC AUC (None for one class), log loss, Brier, accuracy at 0.5, ECE, base rate and mean prediction."""
    ya, pa = np.asarray(y, dtype="float64"), np.asarray(p, dtype="float64")
    ok = np.isfinite(ya) & np.isfinite(pa)
    ya, pa = ya[ok], pa[ok]
    if len(ya) == 0:
        return {"n": 0, "positives": 0, "roc_auc": None, "log_loss": None, "brier": None, "accuracy": None,
                "ece": None}
    ece, table = calibration_table(ya, pa)
    out: dict[str, Any] = {
        "n": int(len(ya)),
        "positives": int(ya.sum()),
        "base_rate": float(ya.mean()),
        "mean_prediction": float(pa.mean()),
        "roc_auc": _auc(ya, pa),
        "log_loss": _binary_log_loss(ya, pa),
        "brier": float(np.mean((pa - ya) ** 2)),
        "accuracy": float(np.mean((pa >= 0.5) == (ya >= 0.5))),
        "ece": ece,
    }
    if out["roc_auc"] is None:
        out["note"] = "one class of label in this window: ROC AUC undefined"
    if with_bins:
        out["calibration"] = table
    return out


# ------------------------------------------------------------------------------------ multiclass
def macro_f1_codes(y: np.ndarray, pred: np.ndarray, n_codes: int) -> float | None:
    """Macro-F1 of integer codes over the labels present in ``y`` or ``pred`` (scikit-learn's default)."""
    if len(y) == 0:
        return None
    tp = np.bincount(y[y == pred], minlength=n_codes)
    denom = np.bincount(pred, minlength=n_codes) + np.bincount(y, minlength=n_codes)
    present = denom > 0
    return float(np.mean(2 * tp[present] / denom[present]))


def multiclass_log_loss_codes(y: np.ndarray, proba: np.ndarray) -> float | None:
    """Mean cross-entropy of the probability of the true class (codes ``< k``; clipped at ``EPS``)."""
    if len(y) == 0:
        return None
    p = np.clip(proba[np.arange(len(y)), y], EPS, 1.0)
    return float(-np.mean(np.log(p)))


def top_label_ece(y: np.ndarray, proba: np.ndarray, bins: int = ECE_BINS) -> float | None:
    """ECE of the top-label confidence: per equal-width bin of ``max p``, |mean confidence - accuracy|."""
    if len(y) == 0:
        return None
    conf = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y).astype("float64")
    idx = np.clip((conf * bins).astype(int), 0, bins - 1)
    n = np.bincount(idx, minlength=bins)
    gap = np.abs(np.bincount(idx, conf, bins) - np.bincount(idx, correct, bins))
    return float(gap.sum() / len(y)) if n.sum() else None


def multiclass_live_metrics(
    y: Sequence[Any], pred: Sequence[Any], proba: np.ndarray | None, classes: Sequence[str], *,
    detail: bool = False,
) -> dict[str, Any]:
    """Log loss, accuracy, macro-F1 and top-label ECE of class labels ``y`` (text) against the predicted
    classes ``pred`` and the class probabilities ``proba`` (n x k, columns in ``classes`` order; None or a
    NaN row when not logged: log loss and ECE then use the rows that have them).

    ``detail``: also per class ``{recall, precision, support}`` and the label / prediction shares. Labels
    outside ``classes`` count for accuracy and F1 (as wrong predictions) and are counted in ``unknown_labels``.
    """
    ys = np.asarray(list(y), dtype=object)
    ps = np.asarray(list(pred), dtype=object)
    ok = np.array([a is not None and b is not None for a, b in zip(ys, ps, strict=True)], dtype=bool)
    ys, ps = ys[ok], ps[ok]
    pr = proba[ok] if proba is not None else None
    classes = [str(c) for c in classes]
    out: dict[str, Any] = {"n": int(len(ys)), "log_loss": None, "accuracy": None, "macro_f1": None, "ece": None}
    if len(ys) == 0:
        return out
    vocab = {c: i for i, c in enumerate(classes)}
    for v in sorted({*map(str, ys), *map(str, ps)} - set(vocab)):
        vocab[v] = len(vocab)
    yc = np.array([vocab[str(v)] for v in ys], dtype="int64")
    pc = np.array([vocab[str(v)] for v in ps], dtype="int64")
    known = yc < len(classes)
    out["accuracy"] = float(np.mean(yc == pc))
    out["macro_f1"] = macro_f1_codes(yc, pc, len(vocab))
    out["unknown_labels"] = int((~known).sum())
    if pr is not None and pr.shape[1] == len(classes):
        rows = known & np.all(np.isfinite(pr), axis=1)
        out["log_loss"] = multiclass_log_loss_codes(yc[rows], pr[rows])
        out["ece"] = top_label_ece(yc[rows], pr[rows])
        out["n_probabilities"] = int(rows.sum())
    if detail:
        tp = np.bincount(yc[yc == pc], minlength=len(vocab))
        n_true, n_pred = np.bincount(yc, minlength=len(vocab)), np.bincount(pc, minlength=len(vocab))
        names = sorted(vocab, key=vocab.__getitem__)
        out["per_class"] = {
            c: {"support": int(n_true[i]), "recall": _none(tp[i] / n_true[i]) if n_true[i] else None,
                "precision": _none(tp[i] / n_pred[i]) if n_pred[i] else None}
            for i, c in enumerate(names)
        }
        out["label_share"] = {c: float(n_true[i] / len(yc)) for i, c in enumerate(names) if n_true[i]}
        out["prediction_share"] = {c: float(n_pred[i] / len(pc)) for i, c in enumerate(names) if n_pred[i]}
    return out


def expected_multiclass(proba: np.ndarray) -> dict[str, Any]:
    """CBPE of a multiclass model whose class probabilities ``proba`` (n x k) are calibrated: the true class
    of a row is a draw from its row, the predicted class its argmax.

    accuracy ``mean(max p)``; log loss ``mean(entropy(p))``; macro-F1 from the expected confusion counts of
    each class c (TP: ``sum p_c`` over rows predicted c, FP: ``sum (1 - p_c)`` over them, FN: ``sum p_c`` over
    the others), over the classes predicted or expected at least once.
    """
    p = np.asarray(proba, dtype="float64")
    p = p[np.all(np.isfinite(p), axis=1)] if p.ndim == 2 else np.empty((0, 0))
    if p.size == 0:
        return {"n": 0, "log_loss": None, "accuracy": None, "macro_f1": None}
    k = p.shape[1]
    pred = p.argmax(axis=1)
    q = np.clip(p, EPS, 1.0)
    chosen = p[np.arange(len(p)), pred]
    tp = np.bincount(pred, chosen, k)
    fp = np.bincount(pred, 1 - chosen, k)
    fn = p.sum(axis=0) - tp
    used = (np.bincount(pred, minlength=k) > 0) | (p.sum(axis=0) >= 1.0)
    denom = 2 * tp + fp + fn
    f1 = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0)
    return {
        "n": int(len(p)),
        "log_loss": float(np.mean(-(p * np.log(q)).sum(axis=1))),
        "accuracy": float(chosen.mean()),
        "macro_f1": float(f1[used].mean()) if used.any() else None,
    }


# ------------------------------------------------------------------------------------ regression
def pinball(y: np.ndarray, q_pred: np.ndarray, q: float) -> float | None:
    """Mean pinball (quantile) loss of the predicted ``q`` quantile."""
    if len(y) == 0:
        return None
    d = y - q_pred
    return float(np.mean(np.maximum(q * d, (q - 1) * d)))


def regression_live_metrics(
    y: Sequence[float] | np.ndarray, yhat: Sequence[float] | np.ndarray,
    quantiles: Mapping[float, Sequence[float] | np.ndarray] | None = None,
) -> dict[str, Any]:
    """RMSE, MAE, R² (None for a constant label), bias (mean prediction - label) and ``pinball_<q>`` per
    logged quantile."""
    ya, pa = np.asarray(y, dtype="float64"), np.asarray(yhat, dtype="float64")
    ok = np.isfinite(ya) & np.isfinite(pa)
    ya, pa = ya[ok], pa[ok]
    out: dict[str, Any] = {"n": int(len(ya)), "rmse": None, "mae": None, "r2": None}
    if len(ya) == 0:
        return out
    err = pa - ya
    ss_tot = float(np.sum((ya - ya.mean()) ** 2))
    out.update(
        rmse=float(np.sqrt(np.mean(err**2))),
        mae=float(np.mean(np.abs(err))),
        r2=float(1 - np.sum(err**2) / ss_tot) if ss_tot > 0 and len(ya) > 1 else None,
        bias=float(err.mean()),
        mean_label=float(ya.mean()),
        mean_prediction=float(pa.mean()),
    )
    if out["r2"] is None:
        out["note"] = "constant label in this window: R² undefined"
    for q, values in (quantiles or {}).items():
        qa = np.asarray(values, dtype="float64")[ok]
        fin = np.isfinite(qa)
        if fin.any():
            out[f"pinball_{float(q):g}"] = pinball(ya[fin], qa[fin], float(q))
            out[f"coverage_{float(q):g}"] = float(np.mean(ya[fin] <= qa[fin]))
    return out


__all__ = [
    "ECE_BINS",
    "EPS",
    "binary_live_metrics",
    "calibration_table",
    "class_text",
    "class_texts",
    "expected_multiclass",
    "macro_f1_codes",
    "multiclass_live_metrics",
    "multiclass_log_loss_codes",
    "pinball",
    "regression_live_metrics",
    "top_label_ece",
]
