"""The gate's models and labels per task: load a version, check its output, encode the labels (runtime module).

A version's task comes from its registry tags (``mlops.task``, ``mlops.classes``, ``mlops.quantiles``; a
version registered before task types existed is binary). :class:`Scored` loads the pyfunc and checks its
predictions against the task's output contract (``mlops_provider.tasks``): binary probabilities in [0, 1]
(1-D), multiclass n x k probabilities summing to 1, regression finite values (1-D, or n x (1 + q)). Bad
output is a named error on the challenger (retrain it) or the champion (roll it back).
:func:`encode_labels` turns the evaluation split's labels into what the metrics take. Also here: batch
latency and permutation importance (both call the pyfunc).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow import MlflowClient

from mlops_provider.exceptions import GateInputError, MlopsError, ModelRegistryError, TrainingError
from mlops_provider.runtime.metrics import task_metrics
from mlops_provider.tasks import higher_is_better


@dataclass(frozen=True)
class TaskInfo:
    """What a registered version predicts (from its ``mlops.*`` tags)."""

    task: str = "binary"
    classes: list[Any] | None = None
    quantiles: list[float] | None = None

    @classmethod
    def of_version(cls, client: MlflowClient, model_name: str, version: str) -> TaskInfo:
        tags = client.get_model_version(model_name, version).tags or {}
        classes = json.loads(tags["mlops.classes"]) if tags.get("mlops.classes") else None
        quantiles = json.loads(tags["mlops.quantiles"]) if tags.get("mlops.quantiles") else None
        return cls(tags.get("mlops.task", "binary"), classes, [float(q) for q in quantiles or []] or None)

    @property
    def width(self) -> int | None:
        """Columns of the pyfunc output (None: 1-D)."""
        if self.task == "multiclass":
            return len(self.classes or [])
        if self.task == "regression" and self.quantiles:
            return 1 + len(self.quantiles)
        return None

    def metrics(self, y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
        return task_metrics(self.task, y, pred, classes=self.classes, quantiles=self.quantiles)

    def point(self, pred: np.ndarray) -> np.ndarray:
        """The compared prediction of a behavioral test / residual: P(1), the point value, or the class
        probabilities (multiclass, n x k)."""
        return pred[:, 0] if self.task == "regression" and pred.ndim == 2 else pred


def encode_labels(info: TaskInfo, labels: pd.Series, where: str) -> np.ndarray:
    """The evaluation labels as the metrics take them; :class:`GateInputError` when they do not fit the model."""
    if labels.isna().any():
        raise GateInputError(f"gate: {int(labels.isna().sum())} evaluation rows of {where} have no label.")
    if info.task == "regression":
        y = pd.to_numeric(labels, errors="coerce").to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(y)):
            raise GateInputError(f"gate: the evaluation labels of {where} are not all finite numbers (regression).")
        return y
    if info.task == "multiclass":
        num = pd.to_numeric(labels, errors="coerce") if pd.api.types.is_numeric_dtype(labels) else None
        keys = (num.astype("int64").astype(str) if num is not None and np.all(num == np.round(num))
                else labels.astype(str))
        codes = pd.Index([str(c) for c in info.classes or []]).get_indexer(keys.to_numpy(dtype=object))
        if (codes < 0).any():
            raise GateInputError(
                f"gate: evaluation labels {sorted(set(keys[codes < 0]))[:5]} of {where} are not classes of the "
                f"challenger ({info.classes}); it cannot be judged on them. Retrain with training.classes listing them."
            )
        return codes.astype(np.int64)
    y = labels.astype("int64") if pd.api.types.is_bool_dtype(labels) else pd.to_numeric(labels, errors="coerce")
    if not np.isin(np.asarray(y, dtype=np.float64), (0.0, 1.0)).all():
        raise GateInputError(f"gate: the evaluation labels of {where} are not 0/1 (binary task).")
    if len(pd.unique(y)) < 2:
        raise GateInputError(
            f"gate: the evaluation split of {where} has {len(y)} rows and a single class; ROC AUC needs both. "
            "Widen training.evaluation_days."
        )
    return np.asarray(y, dtype=np.int64)


class Scored:
    """One loaded version: the pyfunc, its predictions on the evaluation set (``p``), its task."""

    def __init__(self, model_name: str, version: str, role: str, info: TaskInfo) -> None:
        self.version = version
        self.role = role
        self.info = info
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
        p = np.asarray(self.model.predict(x), dtype=np.float64)
        width = self.info.width
        expected = (len(x),) if width is None else (len(x), width)
        if width is None and p.ndim == 2 and p.shape[1] == 1:
            p = p[:, 0]
        if p.shape != expected:
            raise self.error(
                f"gate: the {self.role} {self.uri} returned shape {p.shape} for {len(x)} rows; a {self.info.task} "
                f"model must return {expected}."
            )
        return p

    def error(self, message: str) -> MlopsError:
        return TrainingError(message) if self.role == "challenger" else ModelRegistryError(message)

    def score(self, x: pd.DataFrame) -> np.ndarray:
        p = self.predict(x)
        bad = int((~np.isfinite(p)).sum())
        if self.info.task != "regression":
            bad += int(((p < 0) | (p > 1)).sum())
        if self.info.task == "multiclass" and not bad:
            bad += int((np.abs(p.sum(axis=1) - 1.0) > 1e-4).sum())
        if bad:
            raise self.error(
                f"gate: the {self.role} {self.uri} predicts {bad} NaN / out-of-range values on the evaluation "
                f"set; the model is broken. {'Retrain it' if self.role == 'challenger' else 'Roll back the champion'}."
            )
        self.p = p
        return p


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
    base = scored.info.metrics(y, scored.predict(x))[metric]
    sign = 1.0 if higher_is_better(scored.info.task, metric) else -1.0
    out = []
    for c in x.columns:
        xp = x.copy()
        xp[c] = xp[c].to_numpy()[rng.permutation(len(xp))]
        out.append({"feature": c, "importance": float(sign * (base - scored.info.metrics(y, scored.predict(xp))[metric]))})
    return sorted(out, key=lambda r: -r["importance"])


__all__ = ["Scored", "TaskInfo", "encode_labels", "permutation_importance", "time_batches"]
