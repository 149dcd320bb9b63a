"""Probability calibration fitted on the validation split (runtime module).

After training, a classifier's probabilities are recalibrated on the validation split (the rows early
stopping already looked at; never the gate's evaluation split):

- binary: **Platt scaling** ``P = sigmoid(a * z + b)`` or **temperature scaling** ``P = sigmoid(z / T)`` of the
  network's logit ``z``;
- multiclass: **temperature scaling** ``P = softmax(z / T)`` (one parameter: it keeps the argmax, so
  accuracy and macro F1 do not change).

Which one, and whether any: each candidate is scored by its **cross-validated** log loss on the validation
rows (:data:`FOLDS` folds, seeded: fitted on k-1 folds, scored on the held-out one) against the uncalibrated
log loss of the same rows. The best candidate is kept only when it beats the uncalibrated model out of
sample (NannyML keeps its calibrator only when cross-validated ECE improves; the log loss is the strictly
proper score of the same property and is not binned). In-sample the comparison would be meaningless: the
identity is one of the fitted family, so a fitted calibrator never looks worse on its own rows. The kept map
is refitted on every validation row and stored in the model (``model_config``'s head), so the pyfunc's
``predict`` returns calibrated probabilities (serving needs no change). Below :data:`MIN_ROWS` validation
rows nothing is fitted.

The record (:func:`fit_calibration`) names the method, its parameters and the evidence: the cross-validated
log loss of every candidate, and the log loss / ECE of the validation split before and after.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mlops_provider.runtime.metrics import calibration_error, log_loss, multiclass_log_loss, top_label
from mlops_provider.tasks import ECE_BINS

#: cross-validation folds of the candidate scoring
FOLDS = 5
#: fewer validation rows than this: no calibration (too little evidence to choose)
MIN_ROWS = 100
_LOG_T_BOUNDS = (-5.0, 5.0)
CANDIDATES: dict[str, dict[str, tuple[str, ...]]] = {
    "binary": {"auto": ("platt", "temperature"), "platt": ("platt",), "temperature": ("temperature",)},
    "multiclass": {"auto": ("temperature",), "temperature": ("temperature",)},
}


# ---------------------------------------------------------------------------- the maps
def _sigmoid(u: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.clip(u, -500, 500))), dtype=np.float64)


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float64)


def apply(task: str, logits: np.ndarray, calibration: dict[str, Any] | None) -> np.ndarray:
    """Probabilities of ``logits`` under ``calibration`` (None or method ``none``: the plain sigmoid / softmax)."""
    z = np.asarray(logits, dtype=np.float64)
    method = (calibration or {}).get("method", "none")
    params = (calibration or {}).get("params") or {}
    if method == "platt":
        z = float(params["a"]) * z + float(params["b"])
    elif method == "temperature":
        z = z / float(params["temperature"])
    elif method != "none":
        raise ValueError(f"unknown calibration method {method!r}")
    return _sigmoid(z) if task == "binary" else _softmax(z)


def _nll(task: str, z: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log likelihood of logits (stable: softplus / logsumexp), the quantity fitted."""
    if task == "binary":
        return float(np.mean(np.logaddexp(0.0, z) - y * z))
    m = z.max(axis=1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True))).ravel()
    return float(np.mean(lse - z[np.arange(len(y)), y]))


def _fit(task: str, method: str, z: np.ndarray, y: np.ndarray) -> dict[str, float]:
    from scipy.optimize import minimize, minimize_scalar

    if method == "temperature":
        res = minimize_scalar(lambda s: _nll(task, z / math.exp(s), y), bounds=_LOG_T_BOUNDS, method="bounded")
        return {"temperature": float(math.exp(res.x))}
    # Platt: logistic regression of the label on the logit (2 parameters), gradient given
    def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
        u = theta[0] * z + theta[1]
        r = _sigmoid(u) - y
        return _nll(task, u, y), np.array([np.mean(r * z), np.mean(r)])

    res = minimize(fun, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B")
    return {"a": float(res.x[0]), "b": float(res.x[1])}


def _score(task: str, p: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(log loss, ECE) of probabilities as the metrics module computes them."""
    if task == "binary":
        return log_loss(y, p), calibration_error(p, y == 1, ECE_BINS)
    conf, correct = top_label(y, p)
    return multiclass_log_loss(y, p), calibration_error(conf, correct, ECE_BINS)


# ---------------------------------------------------------------------------- selection
def fit_calibration(task: str, logits: np.ndarray, y: np.ndarray, *, method: str, seed: int) -> dict[str, Any]:
    """Choose, fit and describe the calibration of a classifier from its validation logits (see the module doc).

    ``y``: 0/1 labels (binary) or class indices (multiclass); ``method``: ``training.calibration``
    (auto | none | platt | temperature). Returns ``{"method", "params", "reason", "cv_log_loss": {candidate:
    value}, "folds", "rows", "log_loss_before", "log_loss_after", "ece_before", "ece_after"}``; ``method`` is
    ``none`` when nothing was kept.
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64 if task == "binary" else np.int64)
    before = _score(task, apply(task, z, None), y.astype(np.int64) if task == "multiclass" else y)
    record: dict[str, Any] = {"method": "none", "params": {}, "rows": len(y), "folds": FOLDS,
                              "log_loss_before": before[0], "ece_before": before[1],
                              "log_loss_after": before[0], "ece_after": before[1]}
    if method == "none" or task not in CANDIDATES:
        return {**record, "reason": "calibration: none" if method == "none" else f"no calibration for {task}"}
    if len(y) < MIN_ROWS:
        return {**record, "reason": f"{len(y)} validation rows < {MIN_ROWS}: nothing fitted"}
    candidates = CANDIDATES[task][method]
    folds = np.random.default_rng(seed).permutation(len(y)) % FOLDS
    yi = y.astype(np.int64) if task == "multiclass" else y
    cv = {"none": before[0]}
    for name in candidates:
        p = np.empty((len(y),) + z.shape[1:], dtype=np.float64)
        for f in range(FOLDS):
            held = folds == f
            params = _fit(task, name, z[~held], yi[~held])
            p[held] = apply(task, z[held], {"method": name, "params": params})
        cv[name] = _score(task, p, yi)[0]
    record["cv_log_loss"] = cv
    best = min(candidates, key=lambda c: cv[c])
    if not cv[best] < cv["none"]:
        return {**record, "reason": f"no candidate beat the uncalibrated cross-validated log loss {cv['none']:.5f}"}
    params = _fit(task, best, z, yi)
    after = _score(task, apply(task, z, {"method": best, "params": params}), yi)
    return {**record, "method": best, "params": params, "log_loss_after": after[0], "ece_after": after[1],
            "reason": f"{best}: cross-validated log loss {cv[best]:.5f} < {cv['none']:.5f} uncalibrated"}


__all__ = ["CANDIDATES", "FOLDS", "MIN_ROWS", "apply", "fit_calibration"]
