"""The output head of a task type: label check and encoding, loss, outputs, validation metrics (runtime module).

One :class:`Head` per trained model, stored in its ``model_config`` artifact (``"head"``), so training, the
gate and serving agree on what the network's outputs mean (``mlops_provider.tasks`` names the contract):

============  ===============  ===========================================  ==================================
task          network outputs  loss                                         pyfunc ``predict``
============  ===============  ===========================================  ==================================
binary        1 logit          BCE with logits                              P(label == 1), calibrated (1-D)
multiclass    k logits         cross-entropy                                n x k probabilities, calibrated,
                                                                            columns in the order of ``classes``
regression    1 (+ q)          MSE or Huber (delta 1) on the standardised   point (1-D), or n x (1 + q): point
                               target (+ mean pinball loss per quantile)    then the quantiles, ascending
============  ===============  ===========================================  ==================================

Labels: binary 0/1 (ints, floats 0.0/1.0 or bools); multiclass the declared ``training.classes`` or, when
none are declared, the sorted distinct labels of the train split (ints stay ints, anything else is compared
as its string), at least 3; regression finite numbers. A label that does not fit raises :class:`LabelError`
naming the values and the fix. The regression target is standardised with the train split's mean and
standard deviation (stored here, undone in :meth:`Head.outputs`); quantile columns are sorted per row
(a monotone rearrangement: crossing quantiles cannot be served).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from mlops_provider.exceptions import LabelError
from mlops_provider.runtime import metrics as m
from mlops_provider.runtime.training import calibration as cal

if TYPE_CHECKING:  # loading a model (the pyfunc) needs no specs: a lighter import in the serving process
    from mlops_provider.specs import TrainingSpec

HEAD_FORMAT = 1


class RegressionLoss(nn.Module):
    """Point loss (MSE or Huber, delta 1 on the standardised target) + mean pinball loss of the quantile
    columns. ``out``: ``[n]`` (no quantiles) or ``[n, 1 + q]``."""

    def __init__(self, point: str, quantiles: list[float]) -> None:
        super().__init__()
        self.point = nn.HuberLoss(delta=1.0) if point == "huber" else nn.MSELoss()
        self.q: torch.Tensor
        self.register_buffer("q", torch.tensor(quantiles, dtype=torch.float32))

    def forward(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if out.dim() == 1:
            return self.point(out, y)  # type: ignore[no-any-return]
        loss = self.point(out[:, 0], y)
        d = y.unsqueeze(1) - out[:, 1:]
        q = self.q.to(out.dtype)
        return loss + torch.maximum(q * d, (q - 1) * d).mean()


def _label_examples(values: pd.Series, limit: int = 5) -> list[Any]:
    return [v.item() if hasattr(v, "item") else v for v in pd.unique(values)[:limit]]


def _class_values(labels: pd.Series) -> pd.Series:
    """Labels as class values: integral numbers as ints, anything else as strings."""
    if pd.api.types.is_bool_dtype(labels):
        return labels.astype("int64")
    if pd.api.types.is_numeric_dtype(labels):
        num = pd.to_numeric(labels)
        if np.all(np.isfinite(num)) and np.all(num == np.round(num)):
            return num.astype("int64")
    return labels.astype(str)


@dataclass
class Head:
    """What the network's outputs mean for one task (see the module doc). ``Head()`` is a binary head."""

    task: str = "binary"
    label: str = ""
    classes: list[Any] | None = None
    quantiles: list[float] = field(default_factory=list)
    loss: str = "mse"
    target_mean: float = 0.0
    target_std: float = 1.0
    calibration: dict[str, Any] | None = None

    # ------------------------------------------------------------------ building
    @classmethod
    def fit(cls, spec: TrainingSpec, train_labels: pd.Series, where: str) -> Head:
        """The head of ``spec``'s task, with what the train split's labels decide (classes, target scale)."""
        head = cls(task=spec.task, label=spec.label, quantiles=[float(q) for q in spec.quantiles or []],
                   loss=spec.regression_loss)
        if spec.task == "multiclass":
            head.classes = head._learn_classes(train_labels, spec.classes, where)
        elif spec.task == "regression":
            y = head._numbers(train_labels, where, "train")
            std = float(np.std(y))
            head.target_mean = float(np.mean(y))
            head.target_std = std if math.isfinite(std) and std > 1e-12 else 1.0
        else:
            head._binary(train_labels, where, "train")
        return head

    def _learn_classes(self, labels: pd.Series, declared: list[Any] | None, where: str) -> list[Any]:
        self._no_missing(labels, where, "train")
        values = _class_values(labels)
        if declared is not None:
            classes = list(declared)
        else:
            seen = pd.unique(values)
            classes = sorted(int(v) for v in seen) if pd.api.types.is_integer_dtype(values) else sorted(map(str, seen))
        if len(classes) < 3:
            raise LabelError(
                f"label {self.label!r} of {where} has {len(classes)} class(es) {classes}; a multiclass task needs at "
                "least 3. With two classes use training.task: binary (label 0/1)."
            )
        return classes

    # ------------------------------------------------------------------ labels
    def _no_missing(self, labels: pd.Series, where: str, split: str) -> None:
        if labels.isna().any():
            raise LabelError(
                f"label {self.label!r} of the {split} split of {where} has {int(labels.isna().sum())} missing "
                "value(s); every training row needs a label. Fix the labels or drop those rows upstream."
            )

    def _binary(self, labels: pd.Series, where: str, split: str) -> np.ndarray:
        self._no_missing(labels, where, split)
        y = labels.astype("int64") if pd.api.types.is_bool_dtype(labels) else pd.to_numeric(labels, errors="coerce")
        bad = ~np.isin(np.asarray(y, dtype=np.float64), (0.0, 1.0))
        if bad.any():
            raise LabelError(
                f"label {self.label!r} of the {split} split of {where} must be 0/1 or bool for task binary; found "
                f"{_label_examples(labels[bad])}. For more than two classes set training.task: multiclass; for a "
                "number, training.task: regression."
            )
        return np.asarray(y, dtype=np.float32)

    def _numbers(self, labels: pd.Series, where: str, split: str) -> np.ndarray:
        y = pd.to_numeric(labels, errors="coerce").astype("float64").to_numpy()
        bad = ~np.isfinite(y)
        if bad.any():
            raise LabelError(
                f"label {self.label!r} of the {split} split of {where} must be finite numbers for task regression; "
                f"{int(bad.sum())} row(s) are not (e.g. {_label_examples(labels[bad])}). Fix or drop them upstream."
            )
        return y

    def _indices(self, labels: pd.Series, where: str, split: str) -> np.ndarray:
        assert self.classes is not None
        self._no_missing(labels, where, split)
        keys = _class_values(labels).astype(str)
        index = pd.Index([str(c) for c in self.classes])
        codes = index.get_indexer(keys.to_numpy(dtype=object))
        if (codes < 0).any():
            unknown = _label_examples(labels[codes < 0])
            raise LabelError(
                f"label {self.label!r} of the {split} split of {where} has values {unknown} outside the classes "
                f"{self.classes}. Declare every class in training.classes (or fix the labels)."
            )
        return codes.astype(np.int64)

    def encode(self, labels: pd.Series, where: str, split: str) -> np.ndarray:
        """Training targets: binary float32 0/1, multiclass int64 class indices, regression float32 standardised."""
        if self.task == "multiclass":
            return self._indices(labels, where, split)
        if self.task == "regression":
            return ((self._numbers(labels, where, split) - self.target_mean) / self.target_std).astype(np.float32)
        return self._binary(labels, where, split)

    def truth(self, labels: pd.Series, where: str, split: str) -> np.ndarray:
        """Labels as the metrics take them: binary int 0/1, multiclass class indices, regression float64."""
        if self.task == "multiclass":
            return self._indices(labels, where, split)
        if self.task == "regression":
            return self._numbers(labels, where, split)
        return self._binary(labels, where, split).astype(np.int64)

    # ------------------------------------------------------------------ outputs
    @property
    def n_outputs(self) -> int:
        if self.task == "multiclass":
            return len(self.classes or [])
        if self.task == "regression":
            return 1 + len(self.quantiles)
        return 1

    def loss_fn(self) -> nn.Module:
        if self.task == "multiclass":
            return nn.CrossEntropyLoss()
        if self.task == "regression":
            return RegressionLoss(self.loss, self.quantiles)
        return nn.BCEWithLogitsLoss()

    def outputs(self, logits: np.ndarray, *, calibrated: bool = True) -> np.ndarray:
        """The pyfunc's output for raw network outputs (see the module doc's table), float64."""
        z = np.asarray(logits, dtype=np.float64)
        if self.task == "regression":
            y = z * self.target_std + self.target_mean
            if y.ndim == 2:
                if y.shape[1] == 1:
                    return np.asarray(y[:, 0])
                y[:, 1:] = np.sort(y[:, 1:], axis=1)
            return np.asarray(y)
        return cal.apply(self.task, z, self.calibration if calibrated else None)

    def metrics(self, truth: np.ndarray, outputs: np.ndarray) -> dict[str, float]:
        """The task's training metrics (``tasks.training_metrics``) of pyfunc outputs."""
        from mlops_provider.tasks import task_type

        full = m.task_metrics(self.task, truth, outputs, classes=self.classes, quantiles=self.quantiles)
        return {k: full[k] for k in task_type(self.task).training}

    def validate(self, truth: np.ndarray, logits: np.ndarray) -> tuple[float, dict[str, float]]:
        """(validation loss for early stopping, the per-epoch validation metric) of uncalibrated outputs.

        binary: (log loss, ``val_roc_auc``); multiclass: (log loss, ``val_accuracy``); regression: (the
        training loss on the standardised target, ``val_rmse`` in the label's units).
        """
        if self.task == "binary":
            b = m.binary_metrics(truth, cal.apply("binary", logits, None))
            return b["log_loss"], {"val_roc_auc": b["roc_auc"]}
        if self.task == "multiclass":
            p = cal.apply("multiclass", logits, None)
            return m.multiclass_log_loss(truth, p), {"val_accuracy": float(np.mean(p.argmax(axis=1) == truth))}
        with torch.no_grad():
            zt = torch.as_tensor(np.asarray(logits, dtype=np.float32))
            yt = torch.as_tensor(((truth - self.target_mean) / self.target_std).astype(np.float32))
            loss = float(self.loss_fn()(zt, yt))
        out = self.outputs(logits)
        point = out[:, 0] if out.ndim == 2 else out
        return loss, {"val_rmse": float(np.sqrt(np.mean((point - truth) ** 2)))}

    def calibrate(self, truth: np.ndarray, logits: np.ndarray, method: str, seed: int) -> dict[str, Any] | None:
        """Fit the calibration on validation logits (classification; see :mod:`.calibration`), store and return it."""
        if self.task == "regression":
            self.calibration = None
            return None
        self.calibration = cal.fit_calibration(self.task, logits, truth, method=method, seed=seed)
        return self.calibration

    # ------------------------------------------------------------------ record
    def tags(self) -> dict[str, str]:
        """The model version's task tags (``mlops.task``, ``mlops.label``, ``mlops.classes``,
        ``mlops.quantiles``, ``mlops.calibration``): what serving and monitoring read."""
        import json

        out = {"mlops.task": self.task, "mlops.label": self.label}
        if self.task == "multiclass":
            out["mlops.classes"] = json.dumps(self.classes)
        if self.task == "regression":
            out["mlops.quantiles"] = json.dumps(self.quantiles)
        if self.task != "regression":
            c = self.calibration or {"method": "none", "params": {}}
            out["mlops.calibration"] = json.dumps({"method": c.get("method", "none"), "params": c.get("params", {})},
                                                  sort_keys=True)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"format": HEAD_FORMAT, "task": self.task, "label": self.label, "classes": self.classes,
                "quantiles": self.quantiles, "loss": self.loss, "target_mean": self.target_mean,
                "target_std": self.target_std, "calibration": self.calibration}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Head:
        """A head from ``model_config``; a model logged before task types existed is binary, uncalibrated."""
        if not d:
            return cls()
        if d.get("format") != HEAD_FORMAT:
            raise ValueError(f"unsupported head format {d.get('format')!r}")
        return cls(task=str(d["task"]), label=str(d.get("label", "")), classes=d.get("classes"),
                   quantiles=[float(q) for q in d.get("quantiles") or []], loss=str(d.get("loss", "mse")),
                   target_mean=float(d.get("target_mean", 0.0)), target_std=float(d.get("target_std", 1.0)),
                   calibration=d.get("calibration"))


__all__ = ["HEAD_FORMAT", "Head", "RegressionLoss"]
