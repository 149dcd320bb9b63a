"""Task types and their metrics: shared by the config (parse time) and the runtime (light module, stdlib only).

``training.task`` is one of :data:`TASKS`. Per task this registry names the metrics the gate computes and
their directions (``higher_is_better``; floors of lower-is-better metrics are ceilings), the primary metric
(the gate's default ``primary_metric`` and the default HPO selection metric), the guard metrics (the default
``gate.guard_metrics``: no significant regression allowed) and the validation metrics every training run
reports. Two families of names depend on the model:

- multiclass ``recall_<class>`` per class (``training.classes``, or the classes the model learned);
- regression ``pinball_<q>`` per configured quantile (``training.quantiles``, formatted by :func:`pinball_name`).

Metric definitions that are not settings live here too: ``ece`` uses :data:`ECE_BINS` equal-width bins of
the predicted probability (multiclass: of the top-label probability, "confidence"); ``top_k_accuracy`` uses
``k =`` :data:`TOP_K` (capped at the number of classes).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

#: the task types of ``training.task``; the first is the default
TASKS = ("binary", "multiclass", "regression")
DEFAULT_TASK = "binary"
#: equal-width probability bins of the ``ece`` metric (a definition, like the log loss's clipping)
ECE_BINS = 10
#: ``top_k_accuracy``: the true class is among the k most probable
TOP_K = 2


@dataclass(frozen=True)
class TaskType:
    """One task: its fixed metrics (name -> higher is better), primary, guards and training metrics."""

    name: str
    metrics: dict[str, bool]
    primary: str
    guards: tuple[str, ...]
    training: tuple[str, ...]
    per_class: bool = False
    per_quantile: bool = False


BINARY = TaskType(
    "binary",
    {"roc_auc": True, "pr_auc": True, "log_loss": False, "brier": False, "ece": False},
    primary="roc_auc",
    guards=("log_loss", "brier", "ece"),
    training=("roc_auc", "log_loss"),
)
MULTICLASS = TaskType(
    "multiclass",
    {"log_loss": False, "macro_f1": True, "accuracy": True, "top_k_accuracy": True, "ece": False},
    primary="log_loss",
    guards=("log_loss", "ece"),
    training=("log_loss", "accuracy", "macro_f1"),
    per_class=True,
)
REGRESSION = TaskType(
    "regression",
    {"rmse": False, "mae": False, "r2": True},
    primary="rmse",
    guards=("mae",),
    training=("rmse", "mae", "r2"),
    per_quantile=True,
)
REGISTRY: dict[str, TaskType] = {t.name: t for t in (BINARY, MULTICLASS, REGRESSION)}

RECALL_PREFIX = "recall_"
PINBALL_PREFIX = "pinball_"


def task_type(task: str) -> TaskType:
    try:
        return REGISTRY[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; expected one of {list(TASKS)}") from None


def recall_name(cls: Any) -> str:
    return f"{RECALL_PREFIX}{cls}"


def pinball_name(q: float) -> str:
    """``pinball_0.1`` for q = 0.1 (shortest exact form: ``:g``)."""
    return f"{PINBALL_PREFIX}{float(q):g}"


def metric_directions(
    task: str, classes: Sequence[Any] | None = None, quantiles: Sequence[float] | None = None
) -> dict[str, bool]:
    """Every metric of ``task`` (per-class / per-quantile names included when known) -> higher is better."""
    t = task_type(task)
    out = dict(t.metrics)
    if t.per_class and classes:
        out.update({recall_name(c): True for c in classes})
    if t.per_quantile and quantiles:
        out.update({pinball_name(q): False for q in quantiles})
    return out


def higher_is_better(task: str, metric: str) -> bool:
    """Direction of one metric of ``task`` (``recall_*`` up, ``pinball_*`` down); ValueError when unknown."""
    t = task_type(task)
    if metric in t.metrics:
        return t.metrics[metric]
    if t.per_class and metric.startswith(RECALL_PREFIX):
        return True
    if t.per_quantile and metric.startswith(PINBALL_PREFIX):
        return False
    raise ValueError(f"{metric!r} is not a {task} metric")


def check_metrics(
    task: str,
    names: Iterable[str],
    key: str,
    *,
    classes: Sequence[Any] | None = None,
    quantiles: Sequence[float] | None = None,
    allowed: Iterable[str] | None = None,
) -> None:
    """ValueError naming ``key`` and the valid names when one of ``names`` is not a metric of ``task``.

    ``recall_<class>`` is checked against ``classes`` when they are declared (any class name otherwise:
    the classes are learned from the data); ``pinball_<q>`` against ``quantiles``. ``allowed`` restricts the
    valid names further (e.g. the training metrics for an HPO selection metric).
    """
    valid = metric_directions(task, classes, quantiles)
    if allowed is not None:
        keep = set(allowed)
        valid = {k: v for k, v in valid.items() if k in keep}
    t = task_type(task)
    for name in names:
        if name in valid:
            continue
        per_class = name.startswith(RECALL_PREFIX) and len(name) > len(RECALL_PREFIX)
        if allowed is None and t.per_class and not classes and per_class:
            continue
        open_classes = allowed is None and t.per_class and not classes
        shown = sorted(valid) + ([f"{RECALL_PREFIX}<class>"] if open_classes else [])
        what = f"a {task} training metric" if allowed is not None else f"a metric of task {task}"
        raise ValueError(f"{key}: {name!r} is not {what}; valid: {shown}")


def training_metrics(task: str) -> dict[str, bool]:
    """The validation metrics a training run of ``task`` reports (name -> higher is better)."""
    t = task_type(task)
    return {m: t.metrics[m] for m in t.training}


#: Back-compatible names: the binary task's metrics.
BINARY_METRICS: dict[str, bool] = dict(BINARY.metrics)
GATE_METRICS = BINARY_METRICS
#: Validation metrics of a binary training run (``runtime.metrics.binary_metrics``).
TRAINING_METRICS: dict[str, bool] = training_metrics("binary")
#: Every training metric name of every task (reading a run's metrics back without knowing its task).
ALL_TRAINING_METRICS: tuple[str, ...] = tuple(dict.fromkeys(m for t in REGISTRY.values() for m in t.training))

__all__ = [
    "ALL_TRAINING_METRICS",
    "BINARY",
    "BINARY_METRICS",
    "DEFAULT_TASK",
    "ECE_BINS",
    "GATE_METRICS",
    "MULTICLASS",
    "REGISTRY",
    "REGRESSION",
    "TASKS",
    "TOP_K",
    "TRAINING_METRICS",
    "TaskType",
    "check_metrics",
    "higher_is_better",
    "metric_directions",
    "pinball_name",
    "recall_name",
    "task_type",
    "training_metrics",
]
