"""Performance estimated before labels land: confidence-based performance estimation (runtime module).

CBPE (NannyML, FIELD-NOTES): when the served probability ``p`` is calibrated, the label of a request is a
Bernoulli(``p``) draw, so the expected value of every metric follows from the probabilities alone:

* accuracy at 0.5:  ``mean(max(p, 1 - p))`` (the chance the predicted class is right);
* log loss:         ``mean(H(p))``, the binary entropy;
* Brier score:      ``mean(p (1 - p))``;
* ROC AUC:          expected concordant (positive, negative) pairs over expected pairs: request ``i`` is the
  positive and ``j`` the negative of a pair with probability ``p_i (1 - p_j)``; pairs are ranked by the
  scores themselves (ties count a half).

It holds only while the probabilities are calibrated and the relation between features and outcome has
not changed (no concept drift); it cannot see a drop the model is confidently wrong about. That is why
realized performance (once labels land) is the primary signal and the estimate an early one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

EPS = 1e-7


def expected_roc_auc(p: np.ndarray) -> float | None:
    """Expected ROC AUC of calibrated probabilities ``p`` (None when fewer than two rows)."""
    p = np.asarray(p, dtype="float64")
    p = p[np.isfinite(p)]
    if p.size < 2:
        return None
    uniq, inv = np.unique(p, return_inverse=True)
    pos = np.bincount(inv, weights=p, minlength=len(uniq))
    neg = np.bincount(inv, weights=1 - p, minlength=len(uniq))
    self_pairs = np.bincount(inv, weights=p * (1 - p), minlength=len(uniq))  # i == j is no pair
    neg_below = np.cumsum(neg) - neg
    concordant = float(np.sum(pos * neg_below) + 0.5 * np.sum(pos * neg - self_pairs))
    pairs = float(pos.sum() * neg.sum() - self_pairs.sum())
    return concordant / pairs if pairs > 0 else None


def expected_metrics(p: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """``{"n", "roc_auc", "log_loss", "accuracy", "brier", "expected_positive_rate"}`` of probabilities ``p``."""
    arr = np.asarray(p, dtype="float64")
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return {"n": 0, "roc_auc": None, "log_loss": None, "accuracy": None, "brier": None,
                "expected_positive_rate": None}
    q = np.clip(arr, EPS, 1 - EPS)
    return {
        "n": int(arr.size),
        "roc_auc": expected_roc_auc(arr),
        "log_loss": float(np.mean(-(q * np.log(q) + (1 - q) * np.log(1 - q)))),
        "accuracy": float(np.mean(np.maximum(arr, 1 - arr))),
        "brier": float(np.mean(arr * (1 - arr))),
        "expected_positive_rate": float(arr.mean()),
    }


__all__ = ["expected_metrics", "expected_roc_auc"]
