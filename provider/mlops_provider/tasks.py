"""Metric names per task type: shared by the config (parse time) and the runtime (light module).

``higher_is_better`` per metric decides the direction of floors (ceilings for lower-is-better
metrics), regression bounds and paired comparisons.
"""

from __future__ import annotations

#: Metrics the gate computes for a binary classifier: name -> True when higher is better.
BINARY_METRICS: dict[str, bool] = {"roc_auc": True, "pr_auc": True, "log_loss": False, "brier": False}

#: Back-compatible name: the binary task's metrics.
GATE_METRICS = BINARY_METRICS

#: Validation metrics every training run reports (``runtime.metrics.binary_metrics``); hyperparameter
#: searches select by one of them.
TRAINING_METRICS: dict[str, bool] = {k: BINARY_METRICS[k] for k in ("roc_auc", "log_loss")}

__all__ = ["BINARY_METRICS", "GATE_METRICS", "TRAINING_METRICS"]
