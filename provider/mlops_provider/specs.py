"""One typed spec per stage: the per-model YAML, as frozen stdlib dataclasses. Every default lives here.

``PipelineSpec`` is the whole YAML; its sections are the stage specs the factory hands to operators:
``FeaturesSpec``, ``TrainingSpec``, ``GateSpec``, ``ServingSpec``, ``MonitoringSpec`` (plus
``Connections``). Operators receive a stage spec as ONE templated argument (a plain dict, see
:func:`as_dict`), and turn it back into the dataclass with :func:`from_dict` inside ``execute``; runtime
functions take the dataclass. So a default (say the learning rate) is written once, here.

Why stdlib dataclasses and not pydantic models: building ~30 pydantic model classes costs ~50 ms at every
import, and the DAG processor imports this module on every parse. Dataclass classes cost ~0.5 ms each;
pydantic validates them all the same (``TypeAdapter(PipelineSpec)``: constraints come from the
``Annotated[..., Field(...)]`` annotations, ``__post_init__`` holds the cross-field rules, extra keys are
refused) — but only when a YAML changes (see ``config.load_config``'s content-hash cache).

Light module: stdlib plus pydantic's ``Field`` (already imported by Airflow in every process that parses).

Longer than 500 lines on purpose: it is the YAML reference (~30 small section classes, each field with its
default, bounds and description). One file keeps the whole schema readable top to bottom, in YAML order.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from mlops_provider.paths import ModelPaths

_FORBID = {"extra": "forbid"}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def _d(factory: Any) -> Any:
    return field(default_factory=factory)


class _Spec:
    """Behaviour shared by every spec: plain-dict views (``model_dump`` kept for old callers)."""

    __pydantic_config__ = _FORBID

    def model_dump(self, *, include: set[str] | None = None, exclude: set[str] | None = None) -> dict[str, Any]:
        data = as_dict(self)
        if include is not None:
            data = {k: v for k, v in data.items() if k in include}
        if exclude:
            data = {k: v for k, v in data.items() if k not in exclude}
        return data

    def replace(self, **changes: Any) -> Any:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def model_copy(self, *, update: dict[str, Any] | None = None) -> Any:
        return self.replace(**(update or {}))

    @classmethod
    def parse(cls, data: Any = None, /, **kwargs: Any) -> Any:
        """Validate plain values (nested dicts included) into this spec, as the YAML loader does."""
        from pydantic import TypeAdapter

        return TypeAdapter(cls).validate_python({**(data or {}), **kwargs})


# ---------------------------------------------------------------------------------------------------
# features
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArrivalSpec(_Spec):
    """Data arrival: an AssetWatcher on the landing zone (a directory or an ``s3://`` prefix)."""

    path: Annotated[str | None, Field(description="Landing zone: a directory or s3://bucket/prefix/; default "
                                                  "<storage root>/landing/<model>.")] = None
    pattern: Annotated[str, Field(description="Glob of the files that count as arrivals.")] = "*.parquet"
    poll_interval: Annotated[float, Field(gt=0, description="Seconds between two scans.")] = 5.0
    settle_seconds: Annotated[float, Field(ge=0, description="A file must be unchanged this long to count.")] = 2.0
    batch_files: Annotated[int, Field(ge=1, description="Emit once this many new files are pending ...")] = 1
    batch_seconds: Annotated[float, Field(ge=0, description="... or the oldest pending file waited this long.")] = 10.0


@dataclass(frozen=True)
class TableContract(_Spec):
    """Data contract of one landed table: row count, uniqueness, no future timestamps, per-column rules."""

    min_rows: int = 1
    columns: Annotated[dict[str, dict[str, Any]], Field(description="column -> {dtype, nullable, min, max, "
                                                                    "allowed, ...}")] = _d(dict)
    unique: list[str] = _d(list)
    no_future: str | None = None


@dataclass(frozen=True)
class MaterializeSpec(_Spec):
    chunk_hours: Annotated[int, Field(ge=1, description="Time chunk of one read: bounds peak memory, not the "
                                                        "window.")] = 168
    overlap: Annotated[str | None, Field(description="Re-materialize this much before the window (late data), "
                                                     "e.g. PT6H.")] = None


@dataclass(frozen=True)
class FeaturesSpec(_Spec):
    """``features``: the Feast repo, the model's FeatureService, the transform and the data contract."""

    repo: Annotated[str, Field(description="Feast repo directory, relative to the YAML file.")]
    feature_service: Annotated[str, Field(description="FeatureService the model trains and serves on.")]
    transform: Annotated[str, Field(description="'path/to/file.py:function' building offline partitions.")]
    feature_views: Annotated[list[str] | None, Field(description="Views to materialize; default all.")] = None
    arrival: ArrivalSpec = _d(ArrivalSpec)
    materialize: MaterializeSpec = _d(MaterializeSpec)
    schedule: Annotated[str | None, Field(description="Cron alternative to data arrival (e.g. '@daily').")] = None
    contract: Annotated[dict[str, TableContract], Field(description="Data contract per table.")] = _d(dict)


# ---------------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureColumns(_Spec):
    categorical: list[str] = _d(list)
    numeric: list[str] = _d(list)

    def __post_init__(self) -> None:
        if not self.categorical and not self.numeric:
            raise ValueError("declare at least one feature under 'categorical' or 'numeric'")
        dup = set(self.categorical) & set(self.numeric)
        if dup:
            raise ValueError(f"columns listed as both categorical and numeric: {sorted(dup)}")

    @property
    def all(self) -> list[str]:
        return [*self.categorical, *self.numeric]


@dataclass(frozen=True)
class SearchSpec(_Spec):
    """Hyperparameter search: a discrete space, one mapped Airflow task (and MLflow child run) per trial."""

    params: Annotated[dict[str, list[Any]], Field(
        min_length=1,
        description="key -> candidate values: learning_rate, batch_size, epochs, patience, seed, or an "
        "architecture key (hidden, dropout, ... / 'architecture.<key>')",
    )]
    max_trials: Annotated[int, Field(ge=1, le=1000)] = 8
    metric: Annotated[str | None, Field(description="Validation metric selecting the best trial (one of the "
                                                    "task's training metrics); default the task's primary "
                                                    "metric.")] = None
    seed: Annotated[int | None, Field(description="Sampling seed when the grid exceeds max_trials; default "
                                                  "training.seed.")] = None
    max_active_trials: Annotated[int | None, Field(ge=1, description="Concurrent trials per DAG run (e.g. GPU "
                                                                     "count).")] = None

    def __post_init__(self) -> None:
        from mlops_provider.exceptions import ConfigError
        from mlops_provider.search_space import expand_search_space

        try:
            expand_search_space(self.params, self.max_trials, self.seed or 0)
        except ConfigError as e:  # pydantic turns only ValueError into a validation error
            raise ValueError(str(e)) from None


#: Settings of the built-in networks when the architecture block leaves them out (``runtime/training/architectures``).
ARCHITECTURE_DEFAULTS: dict[str, dict[str, Any]] = {
    "mlp": {"hidden": [64, 32], "dropout": 0.1},
    "resmlp": {"width": 64, "blocks": 2, "dropout": 0.1},
    "linear": {},
}

RetrainTrigger = Literal["features", "drift"]
Task = Literal["binary", "multiclass", "regression"]
ClassLabel = int | str


@dataclass(frozen=True)
class TrainingSpec(_Spec):
    """``training``: what the model learns from and how the loop runs (one spec for train / HPO / DDP).

    ``task`` selects the output head, the loss, the label check, the metrics and the pyfunc output
    (``mlops_provider.tasks``): binary (one logit, BCE-with-logits, P(label == 1)), multiclass (k logits,
    cross-entropy, k class probabilities), regression (a point output, MSE or Huber on the standardised
    target, plus one pinball-loss output per configured quantile).
    """

    label: Annotated[str, Field(description="Label column.")]
    features: FeatureColumns
    task: Annotated[Task, Field(description="binary (0/1 or bool label) | multiclass (k >= 3 classes) | "
                                            "regression (finite numbers).")] = "binary"
    classes: Annotated[list[ClassLabel] | None, Field(description="multiclass: the classes, in the order of the "
                                                                  "probability columns; a label outside them is "
                                                                  "an error. Default: the sorted distinct labels "
                                                                  "of the training split.")] = None
    quantiles: Annotated[list[float] | None, Field(description="regression: quantiles predicted besides the "
                                                               "point value (pinball loss), ascending in (0, "
                                                               "1).")] = None
    regression_loss: Annotated[Literal["mse", "huber"], Field(
        description="regression: loss of the point output (Huber with delta 1 standard deviation of the "
                    "target).")] = "mse"
    calibration: Annotated[Literal["auto", "none", "platt", "temperature"], Field(
        description="Classification: fit probability calibration on the validation split (auto: Platt or "
                    "temperature for binary, temperature for multiclass), kept only when it lowers the "
                    "cross-validated log loss; none: off.")] = "auto"
    validation_days: Annotated[int, Field(ge=1, description="Days before the evaluation window that validate "
                                                            "(early stopping, calibration).")] = 21
    evaluation_days: Annotated[int, Field(ge=0, description="Last N days: the gate's frozen evaluation split "
                                                            "(cut at the data's last event minus N days); 0: "
                                                            "none.")] = 7
    max_rows: Annotated[int | None, Field(ge=1000, description="Deterministic sample cap of the dataset.")] = None
    architecture: Annotated[dict[str, Any], Field(description="Built-in network (type: mlp | resmlp | linear, "
                                                              "hidden, dropout, ...) or entry_point: "
                                                              "module:function.")] = _d(
        lambda: {k: list(v) if isinstance(v, list) else v for k, v in ARCHITECTURE_DEFAULTS["mlp"].items()})
    epochs: Annotated[int, Field(ge=1)] = 10
    batch_size: Annotated[int, Field(ge=1)] = 1024
    learning_rate: Annotated[float, Field(gt=0)] = 1e-3
    seed: int = 42
    patience: Annotated[int, Field(ge=1, description="Early stopping patience on the validation loss.")] = 3
    checkpoint_every: Annotated[int, Field(ge=1, description="Checkpoint every N epochs (retries resume).")] = 1
    compile: Annotated[bool, Field(description="torch.compile the network (CUDA workers).")] = False
    system_metrics_interval: Annotated[float | None, Field(gt=0, description="MLflow system-metrics sampling, "
                                                                             "s.")] = 5.0
    search: Annotated[SearchSpec | None, Field(description="Hyperparameter search (mapped trials).")] = None
    queue: Annotated[str, Field(description="Celery queue of the GPU workers.")] = "gpu"
    pool: Annotated[str | None, Field(description="Airflow pool (slots = GPUs).")] = None
    retries: Annotated[int, Field(ge=0, description="Airflow retries of the training tasks (a trial, the "
                                                    "single run): a lost worker's attempt is retried and "
                                                    "resumes from its last checkpoint in the same MLflow run.")] = 2
    retry_delay_seconds: Annotated[float, Field(ge=0, description="Seconds between a failed training attempt "
                                                                  "and its retry.")] = 60.0
    retrain_on: Annotated[list[RetrainTrigger], Field(description="Asset events that retrain once a champion "
                                                                  "exists (the first model always trains).")] = _d(
        lambda: ["drift"])
    schedule: Annotated[str | None, Field(description="Optional cron retraining in addition to the assets.")] = None

    def __post_init__(self) -> None:
        from mlops_provider.tasks import check_metrics, task_type

        if self.classes is not None:
            if self.task != "multiclass":
                raise ValueError(f"classes: only a multiclass task declares classes (task is {self.task})")
            keys = [str(c) for c in self.classes]
            if len(set(keys)) != len(keys):
                raise ValueError(f"classes: repeated class in {self.classes}")
            if len(keys) < 3:
                raise ValueError(f"classes: a multiclass task needs at least 3 classes, got {len(keys)}; with two "
                                 "classes use task: binary (label 0/1)")
        if self.quantiles is not None:
            if self.task != "regression":
                raise ValueError(f"quantiles: only a regression task predicts quantiles (task is {self.task})")
            qs = [float(q) for q in self.quantiles]
            if not qs or any(not 0.0 < q < 1.0 for q in qs) or any(b <= a for a, b in zip(qs, qs[1:], strict=False)):
                raise ValueError(f"quantiles: give distinct levels in (0, 1) in ascending order, got {self.quantiles}")
        if self.regression_loss != "mse" and self.task != "regression":
            raise ValueError(f"regression_loss: only a regression task has a point loss to choose (task is "
                             f"{self.task})")
        if self.task == "regression" and self.calibration in ("platt", "temperature"):
            raise ValueError("calibration: a regression model has no probabilities to calibrate; use auto or none")
        if self.task == "multiclass" and self.calibration == "platt":
            raise ValueError("calibration: Platt scaling is binary; a multiclass model uses temperature (or auto)")
        if self.search is not None and self.search.metric is not None:
            check_metrics(self.task, [self.search.metric], "search: metric",
                          allowed=task_type(self.task).training)

    @property
    def search_metric(self) -> str:
        """The HPO selection metric: ``search.metric`` or the task's primary metric."""
        from mlops_provider.tasks import task_type

        return (self.search.metric if self.search is not None else None) or task_type(self.task).primary

    def model_config(self) -> dict[str, Any]:
        """What defines the trained model (its idempotency key): the snapshot's hash covers the data."""
        return {
            "label": self.label, "features": as_dict(self.features), "task": self.task,
            "classes": list(self.classes) if self.classes is not None else None,
            "quantiles": list(self.quantiles) if self.quantiles is not None else None,
            "regression_loss": self.regression_loss, "calibration": self.calibration,
            "architecture": dict(self.architecture), "epochs": self.epochs, "batch_size": self.batch_size,
            "learning_rate": self.learning_rate, "seed": self.seed, "patience": self.patience,
            "compile": self.compile,
        }

    def loop_config(self) -> dict[str, Any]:
        """The loop's hyperparameters (what an HPO trial overrides)."""
        return {"architecture": dict(self.architecture), "epochs": self.epochs, "batch_size": self.batch_size,
                "learning_rate": self.learning_rate, "seed": self.seed, "patience": self.patience}


# ---------------------------------------------------------------------------------------------------
# gate
# ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SliceCheck(_Spec):
    """Per-slice check, e.g. every value of a segment column: no slice may regress more than ``max_regression``."""

    column: Annotated[str, Field(description="Column whose values define the slices (a model input or another "
                                             "snapshot column).")]
    metric: Annotated[str | None, Field(description="A metric of the task; default the gate's primary "
                                                    "metric.")] = None
    max_regression: Annotated[float | None, Field(ge=0, description="Tolerated drop vs the champion on the "
                                                                    "slice.")] = 0.02
    floor: Annotated[float | None, Field(description="Absolute bound of the metric on every slice.")] = None
    min_rows: Annotated[int, Field(ge=1, description="Smaller slices are reported, not judged.")] = 100
    values: Annotated[list[str] | None, Field(description="Judge only these slices; a listed slice with no rows "
                                                          "is an error.")] = None


@dataclass(frozen=True)
class MinimumCase(_Spec):
    """A fixed input and what the model must predict for it (unlisted features: typical values).

    binary: ``min_probability`` / ``max_probability`` of P(label == 1); multiclass: ``expect_class`` (the
    most probable class; with ``min_probability``: and at least this probability); regression:
    ``min_value`` / ``max_value`` of the point prediction.
    """

    name: str
    input: Annotated[dict[str, Any], Field(min_length=1)]
    min_probability: Annotated[float | None, Field(ge=0, le=1)] = None
    max_probability: Annotated[float | None, Field(ge=0, le=1)] = None
    min_value: Annotated[float | None, Field(description="regression: lower bound of the prediction.")] = None
    max_value: Annotated[float | None, Field(description="regression: upper bound of the prediction.")] = None
    expect_class: Annotated[ClassLabel | None, Field(description="multiclass: the expected most probable "
                                                                 "class.")] = None

    def check_task(self, task: str, where: str) -> None:
        """ValueError unless the case states an expectation of ``task``'s kind, and only that."""
        given = {k for k in ("min_probability", "max_probability", "min_value", "max_value", "expect_class")
                 if getattr(self, k) is not None}
        allowed = {"binary": {"min_probability", "max_probability"},
                   "multiclass": {"expect_class", "min_probability"},
                   "regression": {"min_value", "max_value"}}[task]
        wrong = sorted(given - allowed)
        if wrong:
            raise ValueError(f"{where}: case {self.name!r} sets {wrong}, which a {task} model does not predict; "
                             f"use {sorted(allowed)}")
        if task == "multiclass" and self.expect_class is None:
            raise ValueError(f"{where}: case {self.name!r} needs expect_class (multiclass)")
        if not given:
            raise ValueError(f"{where}: case {self.name!r} states no expectation; set {sorted(allowed)}")


@dataclass(frozen=True)
class BehavioralTest(_Spec):
    """invariance: changing ``column`` must not move the prediction (more than ``tolerance``);
    directional: changing it must move the prediction the ``expect`` way; minimum_functionality: ``cases``.

    The prediction compared is P(label == 1) (binary), the point prediction in target units (regression:
    ``tolerance`` is in target units too), or the class probabilities (multiclass: invariance bounds the
    largest change of any class probability; directional compares the probability of ``target_class``).
    A directional test whose change leaves every prediction exactly unchanged FAILS with "model insensitive
    to <column>": a test that cannot fail proves nothing.
    """

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")]
    kind: Literal["invariance", "directional", "minimum_functionality"]
    column: Annotated[str | None, Field(description="A model input (training.features).")] = None
    set: Annotated[Any, Field(description="Replace the column by this value ...")] = None
    add: Annotated[float | None, Field(description="... or add this amount (numeric columns).")] = None
    values: Annotated[list[Any] | None, Field(description="invariance: every one of these values in turn.")] = None
    expect: Annotated[Literal["not_lower", "not_higher"] | None, Field(description="directional: direction.")] = None
    target_class: Annotated[ClassLabel | None, Field(description="multiclass directional: the class whose "
                                                                 "probability is compared.")] = None
    tolerance: Annotated[float, Field(ge=0, description="Prediction change still counted as 'unchanged'.")] = 0.01
    min_pass_rate: Annotated[float, Field(ge=0, le=1, description="Share of rows (cases) that must pass.")] = 0.95
    rows: Annotated[int, Field(ge=1, description="Evaluation rows the perturbation is applied to (seeded "
                                                 "sample).")] = 1000
    cases: list[MinimumCase] = _d(list)

    def __post_init__(self) -> None:
        if self.kind == "minimum_functionality":
            if not self.cases:
                raise ValueError(f"behavioral test {self.name!r}: minimum_functionality needs 'cases'")
            return
        if not self.column:
            raise ValueError(f"behavioral test {self.name!r}: {self.kind} needs 'column'")
        changes = sum(x is not None for x in (self.set, self.add, self.values))
        if changes != 1:
            raise ValueError(f"behavioral test {self.name!r}: give exactly one of 'set', 'add', 'values'")
        if self.kind == "directional" and self.expect is None:
            raise ValueError(f"behavioral test {self.name!r}: directional needs expect: not_lower | not_higher")

    def check_task(self, training: TrainingSpec) -> None:
        """ValueError when the test cannot apply to the model: a column that is no model input (the prediction
        can never change), a case for another task, a multiclass directional test without its class."""
        where = f"behavioral test {self.name!r}"
        inputs = training.features.all
        if self.column is not None and self.column not in inputs:
            raise ValueError(f"{where}: column {self.column!r} is not a model input, so changing it can never "
                             f"change the prediction; use one of training.features {inputs}")
        for case in self.cases:
            unknown = sorted(set(case.input) - set(inputs))
            if unknown:
                raise ValueError(f"{where}: case {case.name!r} sets {unknown}, which are not model inputs "
                                 f"(training.features {inputs})")
            case.check_task(training.task, where)
        classes = [str(c) for c in training.classes or []]
        if self.kind == "directional" and training.task == "multiclass":
            if self.target_class is None:
                raise ValueError(f"{where}: a multiclass directional test needs target_class (the class whose "
                                 "probability must not move the wrong way)")
            if classes and str(self.target_class) not in classes:
                raise ValueError(f"{where}: target_class {self.target_class!r} is not one of training.classes "
                                 f"{training.classes}")
        elif self.target_class is not None:
            raise ValueError(f"{where}: target_class applies to multiclass directional tests only")
        for case in self.cases:
            if classes and case.expect_class is not None and str(case.expect_class) not in classes:
                raise ValueError(f"{where}: case {case.name!r} expects class {case.expect_class!r}, not one of "
                                 f"training.classes {training.classes}")


@dataclass(frozen=True)
class CalibrationCheck(_Spec):
    """Classification only: the expected calibration error (binary: of P(1); multiclass: top-label)."""

    max_ece: Annotated[float, Field(gt=0, le=1, description="Expected calibration error bound (equal-width "
                                                            "bins).")] = 0.1
    bins: Annotated[int, Field(ge=2, le=100)] = 10
    max_regression: Annotated[float | None, Field(ge=0, description="Tolerated ECE increase vs the "
                                                                    "champion.")] = None


@dataclass(frozen=True)
class LatencyCheck(_Spec):
    batch_size: Annotated[int, Field(ge=1)] = 1024
    repeats: Annotated[int, Field(ge=1, le=100, description="Timed batches; the median counts.")] = 5
    max_ms: Annotated[float | None, Field(gt=0, description="Bound of the median batch latency, ms.")] = None
    max_ratio: Annotated[float | None, Field(gt=0, description="Bound of challenger / champion latency (same "
                                                               "host).")] = None


@dataclass(frozen=True)
class BootstrapSpec(_Spec):
    """Paired bootstrap of challenger vs champion on the evaluation rows (CIs, significance, power)."""

    samples: Annotated[int, Field(ge=10, le=10_000)] = 200
    confidence: Annotated[float, Field(gt=0.5, lt=1, description="Two-sided confidence of every interval.")] = 0.95
    seed: int = 0
    power: Annotated[float, Field(gt=0.5, lt=1, description="Power at which the verdict states the smallest "
                                                            "detectable difference of the primary "
                                                            "metric.")] = 0.8


#: ``gate.floors`` / ``gate.max_regression`` when the YAML leaves them out, per task. The regression task has
#: none: its metrics are in the label's units, so only the user can say what is good enough.
GATE_DEFAULTS: dict[str, dict[str, dict[str, float]]] = {
    "binary": {"floors": {"roc_auc": 0.55}, "max_regression": {"roc_auc": 0.005}},
    "multiclass": {"floors": {}, "max_regression": {"log_loss": 0.005}},
    "regression": {"floors": {}, "max_regression": {}},
}


@dataclass(frozen=True)
class GateSpec(_Spec):
    """``gate``: champion / challenger gate. See README 'Validation gate'.

    Every metric name is one of the task's (``mlops_provider.tasks``; checked with the task when the whole
    YAML is validated: :meth:`for_task`). ``None`` means the task's default: ``primary_metric`` (binary
    roc_auc, multiclass log_loss, regression rmse), ``guard_metrics`` (binary log_loss, brier, ece;
    multiclass log_loss, ece; regression mae), ``floors`` / ``max_regression`` (:data:`GATE_DEFAULTS`).

    Against a champion, the primary metric and every guard metric are compared by a paired bootstrap of
    challenger - champion on the evaluation rows: the challenger is rejected when the whole confidence
    interval of the difference lies on the worse side of ``-max_regression[metric]`` (tolerance 0 when not
    listed), i.e. only for a significant regression.
    """

    primary_metric: Annotated[str | None, Field(description="Metric the comparison is about; default the task's "
                                                            "primary metric.")] = None
    floors: Annotated[dict[str, float] | None, Field(description="Absolute bounds (ceilings for lower-is-better "
                                                                 "metrics); default per task.")] = None
    max_regression: Annotated[dict[str, float] | None, Field(description="Tolerated significant change vs the "
                                                                         "champion, per metric (default 0); "
                                                                         "default per task.")] = None
    guard_metrics: Annotated[list[str] | None, Field(description="Metrics that must not regress significantly "
                                                                 "either; default per task.")] = None
    slices: list[SliceCheck] = _d(list)
    behavioral: list[BehavioralTest] = _d(list)
    calibration: CalibrationCheck | None = None
    latency: LatencyCheck | None = None
    bootstrap: BootstrapSpec = _d(BootstrapSpec)
    model_card: Annotated[bool, Field(description="Write the model card (Markdown + HTML) to MLflow.")] = True
    first_run: Annotated[Literal["floors", "absolute"], Field(
        description="No champion yet: only floors decide (others advisory), or every absolute check.")] = "floors"
    approval: Annotated[bool, Field(description="A human approves every promotion (Airflow HITL "
                                                "ApprovalOperator).")] = False
    approval_timeout_hours: Annotated[float | None, Field(gt=0, description="Unanswered approval -> "
                                                                            "rejected.")] = None
    fail_on_reject: Annotated[bool, Field(description="A rejected challenger fails the DAG run instead of "
                                                      "skipping.")] = False
    promote_pool: Annotated[str | None, Field(description="Airflow pool serializing promotions ({model} is "
                                                          "replaced); null: none.")] = "mlops_promote_{model}"

    def __post_init__(self) -> None:
        names = [t.name for t in self.behavioral]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"behavioral test names must be unique; repeated: {dup}")

    def for_task(self, training: TrainingSpec) -> GateSpec:
        """This gate with the task's defaults filled in, validated against the task (ValueError naming the key
        and the valid metrics). Idempotent; the YAML loader and the gate runtime both call it."""
        from mlops_provider.tasks import check_metrics, task_type

        task = training.task
        t = task_type(task)
        kw: dict[str, Any] = {"classes": training.classes, "quantiles": training.quantiles}
        defaults = GATE_DEFAULTS[task]
        primary = self.primary_metric or t.primary
        floors = dict(defaults["floors"] if self.floors is None else self.floors)
        max_regression = dict(defaults["max_regression"] if self.max_regression is None else self.max_regression)
        guards = list(t.guards if self.guard_metrics is None else self.guard_metrics)
        check_metrics(task, [primary], "primary_metric", **kw)
        check_metrics(task, floors, "floors", **kw)
        check_metrics(task, max_regression, "max_regression", **kw)
        check_metrics(task, guards, "guard_metrics", **kw)
        slices = []
        for i, s in enumerate(self.slices):
            if s.metric is not None:
                check_metrics(task, [s.metric], f"slices: {i}: metric", **kw)
            slices.append(s if s.metric is not None else s.replace(metric=primary))
        for i, b in enumerate(self.behavioral):
            try:
                b.check_task(training)
            except ValueError as e:
                raise ValueError(f"behavioral: {i}: {e}") from None
        if self.calibration is not None and task == "regression":
            raise ValueError("calibration: a regression model has no probabilities; remove the calibration check")
        return self.replace(primary_metric=primary, floors=floors, max_regression=max_regression,
                            guard_metrics=guards, slices=slices)


# ---------------------------------------------------------------------------------------------------
# serving
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KubernetesTargetSpec(_Spec):
    """``serving.kubernetes``: manifests rendered for the bento image; applied when ``conn_id`` exists."""

    namespace: Annotated[str, Field(description="Namespace of the Deployment / Service / HPA.")] = "default"
    name: Annotated[str | None, Field(description="Object name; default '<model>-serving'.")] = None
    replicas: Annotated[int, Field(ge=1, description="Replicas (the HPA's minReplicas).")] = 2
    max_replicas: Annotated[int | None, Field(ge=1, description="HPA maxReplicas; default 2 x replicas.")] = None
    target_cpu_utilization: Annotated[int, Field(ge=1, le=100, description="HPA CPU target, percent.")] = 70
    resources: Annotated[dict[str, Any], Field(description="Container resources (requests / limits).")] = _d(
        lambda: {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}})
    image: Annotated[str | None, Field(description="Full image; default '<registry>/<bento tag>' (bentoml "
                                                   "containerize).")] = None
    image_registry: Annotated[str | None, Field(description="Registry prefix of the default image.")] = None
    env: Annotated[dict[str, str], Field(description="Container env (e.g. MLOPS_FEATURE_REPO).")] = _d(dict)
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    conn_id: Annotated[str, Field(description="cncf.kubernetes connection; render-only when "
                                              "absent.")] = "kubernetes_default"
    wait: Annotated[bool, Field(description="Wait for the rollout when applied.")] = True
    url: Annotated[str | None, Field(description="Endpoint URL to verify the live version at after the "
                                                 "rollout.")] = None


@dataclass(frozen=True)
class BentoCloudTargetSpec(_Spec):
    """``serving.bentocloud``: a BentoCloud deployment via BentoML's deployment API."""

    name: Annotated[str | None, Field(description="Deployment name; default '<model>-serving' (dashes).")] = None
    conn_id: Annotated[str, Field(description="Connection: password/extra api_token = API key, host = endpoint. "
                                              "Else $BENTO_CLOUD_API_KEY or `bentoml cloud login`.")] = (
        "bentocloud_default")
    cluster: str | None = None
    scaling_min: Annotated[int, Field(ge=0)] = 1
    scaling_max: Annotated[int, Field(ge=1)] = 2
    instance_type: str | None = None
    access_authorization: bool = True
    envs: dict[str, str] = _d(dict)
    wait_timeout: Annotated[int, Field(ge=0, description="Seconds to wait for the deployment to run; 0: do not "
                                                         "wait.")] = 900


@dataclass(frozen=True)
class InfraValidateSpec(_Spec):
    """``serving.infra_validate``: the bento is served on a free loopback port and checked before deploy."""

    enabled: bool = True
    sample_rows: Annotated[int, Field(ge=0, description="Rows of the evaluation snapshot replayed (plus the input "
                                                        "example).")] = 20
    tolerance: Annotated[float, Field(ge=0, description="Max |served - registered model| prediction "
                                                        "difference.")] = 1e-5
    latency_budget_ms: Annotated[float, Field(gt=0, description="Budget of the single-row latency "
                                                                "quantile.")] = 1000.0
    latency_quantile: Annotated[float, Field(gt=0, le=1)] = 0.95


@dataclass(frozen=True)
class BatchSpec(_Spec):
    """``serving.batch``: an offline scoring DAG ``<model>__batch_predict`` (batch inference pipeline)."""

    source: Annotated[str, Field(description="Parquet file/dir or snapshot dir (local or s3://) to score.")]
    output: Annotated[str, Field(description="Output root (local or s3://): "
                                             "<output>/<model>/v<version>/<window>.parquet.")]
    schedule: Annotated[str, Field(description="Cron of the scoring runs.")] = "@daily"
    window_hours: Annotated[int, Field(ge=1, description="Each run scores [run time - window_hours, run "
                                                         "time).")] = 24
    timestamp_column: str = "event_timestamp"
    alias: str = "champion"


@dataclass(frozen=True)
class ServiceLimitsSpec(_Spec):
    """Request limits of the bento service (``serving.limits``)."""

    max_batch_rows: Annotated[int, Field(ge=1, le=10_000, description="Rows per /predict request (400 "
                                                                      "above).")] = 256
    max_scoring_rows: Annotated[int, Field(ge=1, le=1_000_000, description="Rows per /score_batch "
                                                                           "request.")] = 10_000
    max_body_bytes: Annotated[int, Field(ge=1_024, description="Request body limit in bytes (413 above).")] = (
        2_000_000)
    max_batch_size: Annotated[int, Field(ge=1, description="Adaptive batching: most rows per model call.")] = 512
    max_latency_ms: Annotated[int, Field(ge=1, description="Adaptive batching: longest queueing before a "
                                                           "503 'overloaded'.")] = 3_000
    retry_after_s: Annotated[int, Field(ge=0, le=3600, description="Retry-After (seconds) of a 503 "
                                                                   "'overloaded' answer.")] = 1


@dataclass(frozen=True)
class ExperimentSpec(_Spec):
    """Online experiment (``serving.experiment``): champion + ``@challenger`` in one service."""

    enabled: bool = False
    challenger_alias: str = "challenger"
    mode: Annotated[Literal["split", "shadow"], Field(description="split: the challenger answers `share` of the "
                                                                  "entities (sticky); shadow: it predicts, the "
                                                                  "champion answers.")] = "shadow"
    share: Annotated[float, Field(ge=0.0, le=1.0)] = 0.01
    route_by: Annotated[list[str] | None, Field(description="Request fields hashed for the sticky split; "
                                                            "default the entity join keys.")] = None


@dataclass(frozen=True)
class RequestFieldSpec(_Spec):
    """``serving.request.fields.<name>``: limits of one request field (an entity join key or a request-time
    field of the feature service). The type comes from the feature service; these narrow it."""

    min: Annotated[float | None, Field(description="Numbers: smallest accepted value (inclusive).")] = None
    max: Annotated[float | None, Field(description="Numbers: largest accepted value (inclusive).")] = None
    min_length: Annotated[int | None, Field(ge=0, description="Strings: fewest characters.")] = None
    max_length: Annotated[int | None, Field(ge=1, description="Strings: most characters (default "
                                                              "serving.request.max_string_length).")] = None
    pattern: Annotated[str | None, Field(description="Strings: regular expression the whole value must match "
                                                     "(anchor it with ^...$).")] = None
    enum: Annotated[list[Any] | None, Field(min_length=1, description="The only accepted values.")] = None
    default: Annotated[Any, Field(description="Makes the field optional: the value used when a request omits "
                                              "it.")] = None
    description: Annotated[str | None, Field(description="Shown in the OpenAPI document.")] = None
    example: Annotated[Any, Field(description="Example value (OpenAPI; fills this field when a validation "
                                              "input lacks it).")] = None

    def __post_init__(self) -> None:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} > max {self.max}")
        if self.min_length is not None and self.max_length is not None and self.min_length > self.max_length:
            raise ValueError(f"min_length {self.min_length} > max_length {self.max_length}")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as e:
                raise ValueError(f"pattern {self.pattern!r} is not a valid regular expression: {e}") from e


@dataclass(frozen=True)
class RequestSpec(_Spec):
    """``serving.request``: the request schema is generated from the model's FeatureService (entity join keys
    and RequestSource fields with their types) at package time; this narrows it."""

    fields: Annotated[dict[str, RequestFieldSpec], Field(description="Per-field limits, defaults and examples "
                                                                     "(keys: entity join keys or request-time "
                                                                     "fields).")] = _d(dict)
    max_string_length: Annotated[int, Field(ge=1, le=100_000, description="Most characters of a string field "
                                                                          "without its own max_length.")] = 256
    event_timestamp: Annotated[bool, Field(description="Accept an optional event_timestamp (RFC 3339) as the "
                                                       "request's event time: features are served as of it, "
                                                       "the inference log is stamped with it.")] = True
    examples: Annotated[list[dict[str, Any]], Field(description="Whole example requests for the OpenAPI "
                                                                "document (validated at package time).")] = _d(list)


@dataclass(frozen=True)
class ServingSpec(_Spec):
    """``serving``: the bento service, its deployment target and the local deployment."""

    host: Annotated[str, Field(min_length=1)] = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535, description="local: the stable endpoint (a small front proxy); "
                                                           "the blue/green servers run on free loopback ports "
                                                           "behind it, so this URL survives every switch.")] = 3000
    ready_timeout: Annotated[int, Field(ge=5)] = 180
    smoke_request: Annotated[dict[str, Any], Field(description="Request the smoke test sends (validated against "
                                                               "the generated schema at package time); empty: a "
                                                               "row of the evaluation snapshot.")] = _d(dict)
    drain_seconds: Annotated[float, Field(ge=0, description="local: old server keeps answering this long after "
                                                            "the switch.")] = 2.0
    front_port: Annotated[int | None, Field(ge=1, le=65535, description="Deprecated (serving.port is the stable "
                                                                        "front now). When set, the front "
                                                                        "listens here instead of on "
                                                                        "serving.port.")] = None
    target: Annotated[Literal["local", "kubernetes", "bentocloud"], Field(
        description="Where the deploy DAG deploys.")] = "local"
    kubernetes: KubernetesTargetSpec = _d(KubernetesTargetSpec)
    bentocloud: BentoCloudTargetSpec = _d(BentoCloudTargetSpec)
    infra_validate: InfraValidateSpec = _d(InfraValidateSpec)
    batch: Annotated[BatchSpec | None, Field(description="Offline batch scoring DAG (absent: no such "
                                                         "DAG).")] = None
    limits: ServiceLimitsSpec = _d(ServiceLimitsSpec)
    experiment: ExperimentSpec = _d(ExperimentSpec)
    log_flush_interval_s: Annotated[float, Field(ge=0, description="Inference log: seconds between parquet "
                                                                   "parts.")] = 10.0
    inference_log: Annotated[str | None, Field(description="Where the service logs its requests and the "
                                               "monitor reads them: a directory shared by the hosts, or "
                                               "s3://bucket/prefix (connections.aws for the monitor; the "
                                               "served process uses the AWS environment of its host or "
                                               "pod). Default <storage root>/inference_log/<model>.")] = None
    request: RequestSpec = _d(RequestSpec)
    threshold: Annotated[float, Field(ge=0.0, le=1.0, description="Binary task: prediction = 1 when the "
                                                                  "probability >= threshold.")] = 0.5
    workers: Annotated[int, Field(ge=1, le=64, description="BentoML worker processes of the service (one "
                                                           "killed worker is restarted while the others "
                                                           "keep answering).")] = 1
    stale_features: Annotated[Literal["impute", "reject"], Field(
        description="A feature older than its view's TTL (or newer than the request's event time) at request "
                    "time: impute (served as missing, imputed as in training) or reject (HTTP 422 naming "
                    "the stale features).")] = "impute"
    sample_requests: Annotated[int, Field(ge=1, le=1000, description="Rows of the evaluation snapshot, projected "
                                                                      "on the request schema, bundled for "
                                                                      "warm-up and the default smoke "
                                                                      "request.")] = 8
    queue: Annotated[str | None, Field(min_length=1, description="local target: the Celery queue every task of the "
                                                              "deploy DAG runs on, so one host (the workers of "
                                                              "that queue: run one) owns the bento store, the "
                                                              "server processes and the stable port. Unset: "
                                                              "Airflow's default queue.")] = None
    deferrable: Annotated[bool | None, Field(description="kubernetes / bentocloud: the deploy task waits for the "
                                                         "rollout and the endpoint in the triggerer instead of a "
                                                         "worker slot. Unset: Airflow's [operators] "
                                                         "default_deferrable. The local target always waits in "
                                                         "the task.")] = None

    @property
    def front(self) -> int:
        """The stable port of the local target (``front_port`` when the deprecated key is set)."""
        return self.front_port or self.port


# ---------------------------------------------------------------------------------------------------
# monitoring
# ---------------------------------------------------------------------------------------------------

#: Evidently 0.7 per-column drift methods accepted in ``monitoring.drift`` (checked at parse time).
DRIFT_METHODS = (
    "ks", "chisquare", "z", "jensenshannon", "kl_div", "psi", "wasserstein", "anderson", "fisher_exact",
    "cramer_von_mises", "g_test", "hellinger", "mannw", "ed", "es", "t_test", "empirical_mmd", "TVD",
)


def _known_method(v: str | None) -> None:
    if v is not None and v not in DRIFT_METHODS:
        close = difflib.get_close_matches(v, DRIFT_METHODS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown drift method {v!r}{hint}; expected one of {list(DRIFT_METHODS)}")


@dataclass(frozen=True)
class DriftColumnRule(_Spec):
    """Per-feature drift test: an Evidently method and its threshold (None = the method's default). With
    calibrated thresholds (the default) a column is judged by its Evidently test only when it sets
    ``threshold`` (a fixed threshold); ``method`` alone only changes the report's test."""

    method: Annotated[str | None, Field(description="Evidently stattest, e.g. ks, psi, wasserstein, "
                                                    "jensenshannon.")] = None
    threshold: Annotated[float | None, Field(gt=0, description="p-value (tests) or distance bound "
                                                               "(distances).")] = None
    max_unseen_share: Annotated[float | None, Field(gt=0, le=1, description="Categorical: share of values never "
                                                                            "seen in training that alone means "
                                                                            "drift.")] = None

    def __post_init__(self) -> None:
        _known_method(self.method)


#: Distances to the reference a calibrated drift check may use (computed on the reference's quantile bins
#: plus a null bin for numeric features, on categories plus unseen and null for categorical ones).
CALIBRATED_DISTANCES = ("jensenshannon", "hellinger", "psi", "wasserstein")
#: Per-feature statistics a calibrated drift check judges (numeric features: all four; categorical: the
#: distance and the null share).
DRIFT_CHECKS = ("distance", "null_share", "stuck", "level_shift")


@dataclass(frozen=True)
class DriftCalibration(_Spec):
    """Per-feature drift thresholds calibrated on the reference period, as NannyML does: the champion's
    training data is cut into chunks of the monitoring window's length, every check's statistic is computed
    on every chunk, and its threshold is where a chunk's value would be a false alarm at the chosen rate."""

    method: Annotated[Literal["std", "quantile", "none"], Field(
        description="std: mean + k x std of the chunk statistics (never below the largest chunk value); "
                    "quantile: their empirical upper quantile; none: fixed thresholds (the Evidently test of "
                    "each column, as before calibration existed).")] = "std"
    false_alarm_rate: Annotated[float, Field(gt=0, lt=0.5, description="Chance that a window without drift "
                                             "raises any alarm (all features and checks together; each check "
                                             "gets its Bonferroni share).")] = 0.05
    k: Annotated[float | None, Field(gt=0, description="std: an explicit multiplier (NannyML uses 3) instead of "
                                     "the one the false-alarm rate implies.")] = None
    statistic: Annotated[Literal["jensenshannon", "hellinger", "psi", "wasserstein"], Field(
        description="Distance of a window to the reference (effect size, not a p-value).")] = "jensenshannon"
    checks: Annotated[list[Literal["distance", "null_share", "stuck", "level_shift"]], Field(
        description="distance to the reference; share of nulls; stuck: every value of the window the same "
                    "(a sensor stuck at one value); level_shift: change of the mean since the previous window, in "
                    "reference standard deviations (a unit change).", min_length=1)] = _d(lambda: list(DRIFT_CHECKS))
    chunk_hours: Annotated[float | None, Field(gt=0, description="Chunk length; default the monitoring "
                                               "window (monitoring.window_hours).")] = None
    min_chunks: Annotated[int, Field(ge=3, description="Fewer reference chunks: a warning in the verdict "
                                     "(below 3 the fixed thresholds are used).")] = 6
    min_chunk_rows: Annotated[int, Field(ge=1, description="Chunks with fewer rows (a partial first or last "
                                         "day) are not used.")] = 100
    at_least_reference_max: Annotated[bool, Field(description="std: a threshold is never below the largest "
                                                  "value a reference chunk reached (reference chunks are in "
                                                  "control by definition).")] = True


@dataclass(frozen=True)
class PredictionDrift(_Spec):
    """Drift of the champion's served predictions (binary: the probability; multiclass: the predicted class and
    the top-class probability; regression: the predicted value), judged like the features: thresholds
    calibrated on chunks of the reference - here the champion's own predictions on its validation and
    evaluation days (scored once per version and cached; training rows would be in-sample, more confident than
    live traffic)."""

    enabled: Annotated[bool, Field(description="Monitor the predictions (needs the champion's model to score "
                                               "its held-out days once per version).")] = True
    trigger: Annotated[bool, Field(description="Prediction drift also means drift (a retraining signal). "
                                               "Default false: it is reported and alerted with the verdict; "
                                               "the held-out reference covers a few weeks only, so a "
                                               "seasonal move of the predictions alone is not a reason to "
                                               "retrain.")] = False


@dataclass(frozen=True)
class DriftSpec(_Spec):
    """How the monitor tests data drift. Default: per-feature thresholds calibrated on reference-period
    chunks (``calibration``) and dataset drift as soon as one feature drifts (the false-alarm rate covers
    every feature). ``calibration.method: none`` restores fixed thresholds: below 1,000 rows hypothesis
    tests (KS / chi-square), above it Evidently's distances, dataset drift at ``drift_share``."""

    columns: Annotated[dict[str, DriftColumnRule], Field(description="Per-feature method/threshold.")] = _d(dict)
    num_method: Annotated[str | None, Field(description="Default method of numeric features (None = by "
                                                        "size).")] = None
    cat_method: Annotated[str | None, Field(description="Default method of categorical features (None = by "
                                                        "size).")] = None
    max_unseen_share: Annotated[float, Field(gt=0, le=1, description="Unseen-category share that flags a "
                                                                     "column.")] = 0.05
    critical: Annotated[list[str], Field(description="Features whose drift alone means dataset drift.")] = _d(list)
    exclude: Annotated[list[str], Field(description="Features not tested (e.g. calendar fields a daily window "
                                                    "pins to one value).")] = _d(list)
    min_drifted_columns: Annotated[int | None, Field(ge=1, description="Dataset drift when at least N columns "
                                                                       "drift (default: 1 with calibrated "
                                                                       "thresholds, unset with fixed ones; "
                                                                       "monitoring.drift_share applies "
                                                                       "too).")] = None
    sample_rows: Annotated[int, Field(ge=100, description="Cap of the seeded stratified sample of the "
                                                          "window.")] = 50_000
    reference_rows: Annotated[int, Field(ge=100, description="Cap of the seeded reference sample.")] = 50_000
    stratify_by: Annotated[list[str], Field(description="Strata besides the UTC day.")] = _d(list)
    seed: int = 0
    bins: Annotated[int, Field(ge=2, le=1000, description="Quantile bins of the exact streamed PSI per numeric "
                                                          "feature.")] = 20
    calibration: DriftCalibration = _d(DriftCalibration)
    evidently_report: Annotated[bool, Field(description="Also run Evidently on the samples for the HTML report "
                                                        "(with calibration its per-column tests are shown, not "
                                                        "judged).")] = True
    predictions: PredictionDrift = _d(PredictionDrift)

    def __post_init__(self) -> None:
        _known_method(self.num_method)
        _known_method(self.cat_method)


#: Live metrics the monitor computes per task type (``mlops.task`` of the champion) -> higher is better.
#: Realized once labels land; the detector, ``performance.max_drop`` and the champion/challenger comparison
#: name them. (The training/gate registry :mod:`mlops_provider.tasks` names the gate's metrics; this table is
#: the monitor's subset plus ``accuracy`` and should derive from that registry once it has every task.)
LIVE_METRICS: dict[str, dict[str, bool]] = {
    "binary": {"roc_auc": True, "log_loss": False, "brier": False, "accuracy": True, "ece": False},
    "multiclass": {"log_loss": False, "accuracy": True, "macro_f1": True, "ece": False},
    "regression": {"rmse": False, "mae": False, "r2": True},
}
#: The task's primary live metric: the detector's default metric.
LIVE_PRIMARY: dict[str, str] = {"binary": "roc_auc", "multiclass": "log_loss", "regression": "rmse"}
#: Every live metric name of every task -> higher is better (one direction per name across tasks).
LIVE_METRIC_DIRECTIONS: dict[str, bool] = {m: hib for t in LIVE_METRICS.values() for m, hib in t.items()}


def _known_live_metric(key: str, name: str) -> None:
    if name not in LIVE_METRIC_DIRECTIONS:
        per_task = {t: sorted(m) for t, m in LIVE_METRICS.items()}
        raise ValueError(f"{key}: {name!r} is not a live metric; per task: {per_task}")


@dataclass(frozen=True)
class PerformanceDetector(_Spec):
    """A sequential detector over daily performance (CUSUM or EWMA): single bad days are noise, a sustained
    decline accumulates. Its control limit is calibrated on reference days: the champion's validation and
    evaluation days, scored by the champion (cached per version)."""

    method: Annotated[Literal["cusum", "ewma", "none"], Field(
        description="none: the fixed bounds (max_drop, max_roc_auc_drop, max_log_loss_increase) on the scored "
                    "window decide, as before the detector existed.")] = "cusum"
    metric: Annotated[str | None, Field(
        description="Daily metric the detector watches; default the champion's task's primary: roc_auc "
                    "(binary), log_loss (multiclass), rmse (regression). Its direction comes with it. A metric "
                    "the champion's task does not have falls back to the primary (noted in the report).")] = None
    shift: Annotated[float | None, Field(gt=0, description="Sustained change (metric units, in the bad "
                                         "direction) the detector is tuned to find; CUSUM's reference value is "
                                         "half of it. Default 0.04 for the bounded metrics; one reference "
                                         "standard deviation for rmse / mae (their scale is the label's).")] = None
    false_alarm_rate: Annotated[float, Field(gt=0, lt=0.5, description="Chance of an alarm within horizon_days "
                                             "of in-control days; the limit is set by simulation from the "
                                             "reference days.")] = 0.05
    horizon_days: Annotated[int, Field(ge=1, le=366, description="Horizon of the false-alarm rate.")] = 30
    ewma_lambda: Annotated[float, Field(gt=0, le=1, description="EWMA weight of the newest day.")] = 0.2
    min_reference_days: Annotated[int, Field(ge=3, description="Fewer scored reference days: no detector "
                                             "(the fixed bounds decide).")] = 7
    min_day_rows: Annotated[int, Field(ge=1, description="Days with fewer labelled rows are left out of the "
                                       "series.")] = 100
    use_estimated: Annotated[bool, Field(description="Also alarm on the estimated (CBPE) series of the days "
                                         "whose labels have not landed.")] = False

    def __post_init__(self) -> None:
        if self.metric is not None:
            _known_live_metric("monitoring.performance.detector.metric", self.metric)


@dataclass(frozen=True)
class PerformanceSpec(_Spec):
    """Live model quality once delayed labels land (outcomes joined to the inference log)."""

    enabled: bool = True
    label_delay_hours: Annotated[int, Field(ge=0, description="Score the window that ended this long ago.")] = 48
    window_hours: Annotated[int | None, Field(ge=1, description="Scored window length; default "
                                                                "monitoring.window_hours.")] = None
    join_keys: Annotated[list[str] | None, Field(description="Keys matching a logged request to its outcome "
                                                             "(request_id is used when labels carry it); "
                                                             "default the entity join keys.")] = None
    time_tolerance_hours: Annotated[float | None, Field(gt=0, description="Outcome event must follow the request "
                                                                          "within this many hours (None: keys "
                                                                          "only).")] = 36.0
    slices: Annotated[list[str], Field(description="Per-slice metrics, e.g. [segment].")] = _d(list)
    min_labelled_rows: Annotated[int, Field(ge=1, description="Fewer joined rows: no performance verdict.")] = 200
    max_drop: Annotated[dict[str, float], Field(
        description="Fixed bounds on the scored window (they decide while the detector is not calibrated): "
                    "tolerated worsening of a live metric vs the champion's validation value, in the metric's "
                    "bad direction (a drop of roc_auc / accuracy / macro_f1 / r2, a rise of log_loss / brier / "
                    "ece / rmse / mae), e.g. {rmse: 2.5, r2: 0.05}. Metrics the champion's task has not are "
                    "ignored (noted in the report). Unset: roc_auc max_roc_auc_drop, log_loss "
                    "max_log_loss_increase, and r2 0.05 for regression.")] = _d(dict)
    max_roc_auc_drop: Annotated[float, Field(ge=0, description="Live ROC AUC below champion's by more: a "
                                                               "trigger (max_drop.roc_auc).")] = 0.05
    max_log_loss_increase: Annotated[float, Field(ge=0, description="Live log loss above champion's by more: a "
                                                                    "trigger (max_drop.log_loss).")] = 0.05
    max_calibration_error: Annotated[float | None, Field(gt=0, le=1, description="ECE above this: a "
                                                                                 "trigger.")] = None
    bootstrap: Annotated[int, Field(ge=50, le=10_000, description="Resamples of the champion/challenger "
                                                                  "comparison.")] = 500
    confidence: Annotated[float, Field(gt=0.5, lt=1, description="Confidence needed to name a winner.")] = 0.95
    lookback_days: Annotated[int, Field(ge=1, le=366, description="Days of realized (and estimated) daily "
                                        "performance the detector runs over.")] = 28
    detector: PerformanceDetector = _d(PerformanceDetector)
    estimate: Annotated[bool, Field(description="Estimate performance before labels land (CBPE: expected "
                                    "metrics from the served probabilities, assumed calibrated). Classification "
                                    "only: a regression's point prediction says nothing about its own error.")] = True

    def __post_init__(self) -> None:
        for name, bound in self.max_drop.items():
            _known_live_metric("monitoring.performance.max_drop", name)
            if not bound >= 0:
                raise ValueError(f"monitoring.performance.max_drop.{name}: {bound!r} must be >= 0")


@dataclass(frozen=True)
class RetrainGuards(_Spec):
    """Guards of automatic (asset-triggered) retraining once a champion exists. The bootstrap and
    manual runs bypass them; the bootstrap does not start the cooldown."""

    enabled: Annotated[bool, Field(description="false: every drift/features event in retrain_on "
                                               "retrains.")] = True
    cooldown_hours: Annotated[float, Field(ge=0, description="No automatic retrain within this long of the last "
                                                             "one.")] = 24.0
    max_retrains: Annotated[int, Field(ge=1, description="At most this many retrains ...")] = 3
    max_retrains_window_hours: Annotated[float, Field(gt=0, description="... in any window this long.")] = 168.0
    min_new_labels: Annotated[int, Field(ge=0, description="Labelled rows newer than the champion's training "
                                                           "window.")] = 1000
    breaker_rejections: Annotated[int, Field(ge=0, description="After this many gate rejections in a row a human "
                                                               "must approve (0: never).")] = 3
    retrain_when: Annotated[list[Literal["drift", "performance"]], Field(
        description="Monitor signals that may retrain (any of them): [performance] retrains only on a "
                    "performance alarm, so a data-quality (drift) alarm alone does not.", min_length=1)] = _d(
        lambda: ["drift", "performance"])
    approval_timeout_hours: Annotated[float | None, Field(gt=0, description="An unanswered approval request "
                                                                            "declines the retrain after this "
                                                                            "long.")] = 72.0
    state_path: Annotated[str | None, Field(description="Guard ledger: a local path shared by the workers, or "
                                                        "s3://bucket/key.json; default "
                                                        "<storage root>/state/retrain_guard/<model>.json.")] = None


AlertEvent = Literal["drift", "performance", "circuit_breaker"]


@dataclass(frozen=True)
class AlertTarget(_Spec):
    """One alert channel: ``log``, ``email`` (SMTP) or ``webhook`` (Slack-compatible JSON POST)."""

    type: Literal["log", "email", "webhook"]
    events: Annotated[list[AlertEvent], Field(description="Events this channel receives (not 'on': YAML reads a "
                                                          "bare on as true).")] = _d(
        lambda: ["drift", "performance", "circuit_breaker"])
    to: Annotated[list[str], Field(description="email: recipients.")] = _d(list)
    sender: Annotated[str, Field(description="email: From address.")] = "airflow-mlops@localhost"
    smtp_conn_id: Annotated[str | None, Field(description="email: Airflow SMTP connection (host, port, login, "
                                                          "password).")] = None
    smtp_host: Annotated[str | None, Field(description="email: SMTP host when no connection is named.")] = None
    smtp_port: Annotated[int, Field(ge=1, le=65535)] = 25
    starttls: bool = False
    url: Annotated[str | None, Field(description="webhook: URL (templated: '{{ var.value.slack_hook }}' keeps it "
                                                 "out of git).")] = None
    http_conn_id: Annotated[str | None, Field(description="webhook: Airflow connection whose host/password holds "
                                                          "the URL.")] = None
    timeout: Annotated[float, Field(gt=0, description="Seconds per delivery attempt.")] = 10.0

    def __post_init__(self) -> None:
        if self.type == "email" and not self.to:
            raise ValueError("an email alert needs 'to' (a list of recipients)")
        if self.type == "email" and not (self.smtp_conn_id or self.smtp_host):
            raise ValueError("an email alert needs 'smtp_conn_id' or 'smtp_host'")
        if self.type == "webhook" and not (self.url or self.http_conn_id):
            raise ValueError("a webhook alert needs 'url' or 'http_conn_id'")


@dataclass(frozen=True)
class OpsSpec(_Spec):
    """Operational summary of the serving endpoint per monitor window (``/metrics`` + inference log)."""

    enabled: bool = True
    metrics_url: Annotated[str | None, Field(description="Prometheus endpoint; default <deployed "
                                                         "url>/metrics.")] = None
    timeout: Annotated[float, Field(gt=0, description="Seconds to wait for /metrics.")] = 5.0


@dataclass(frozen=True)
class MonitoringSpec(_Spec):
    """``monitoring``: drift, live performance, guarded retraining, alerts, ops summary."""

    schedule: str = "@daily"
    window_hours: Annotated[int, Field(ge=1, description="How far back the inference log window reaches.")] = 24
    drift_share: Annotated[float, Field(gt=0, le=1, description="Share of drifted columns that means drift.")] = 0.3
    min_rows: Annotated[int, Field(ge=1)] = 100
    drift: DriftSpec = _d(DriftSpec)
    performance: PerformanceSpec = _d(PerformanceSpec)
    retrain_guards: RetrainGuards = _d(RetrainGuards)
    alerts: Annotated[list[AlertTarget], Field(description="Alert channels (log/email/webhook).")] = _d(list)
    ops: OpsSpec = _d(OpsSpec)


@dataclass(frozen=True)
class Connections(_Spec):
    aws: str = "aws_default"
    mlflow: str = "mlflow_default"
    feast: str = "feast_default"
    bentoml: str = "bentoml_default"


@dataclass(frozen=True)
class StorageSpec(_Spec):
    root: Annotated[str | None, Field(description=(
        "Where the pipeline's shared files live: training snapshots (<root>/snapshots/<model>), reports "
        "(<root>/reports/<model>/<kind>) and, unless their own keys say otherwise, the landing zone "
        "(<root>/landing/<model>), the inference log (<root>/inference_log/<model>) and the retrain-guard "
        "ledger (<root>/state/retrain_guard/<model>.json). When set, also the landing watcher's watermark "
        "(<root>/state) and the training checkpoints (<root>/checkpoints, mirrored there from the GPU worker), "
        "so no worker or triggerer keeps state of its own. A directory every worker sees, or s3://bucket/prefix "
        "read and written through connections.aws. Default: the home ($MLOPS_HOME), the embedded layout."),
        examples=["s3://mlops/pipelines"])] = None


@dataclass(frozen=True)
class PipelineSpec(_Spec):
    """One model's pipeline (the whole YAML). See README 'YAML config reference'."""

    model: Annotated[str, Field(description="Registered model name; prefix of the DAG ids.")]
    features: FeaturesSpec
    training: TrainingSpec
    description: str = ""
    owner: str = "mlops"
    tags: list[str] = _d(list)
    home: Annotated[str | None, Field(description="Embedded backends' root; default $MLOPS_HOME.")] = None
    gate: GateSpec = _d(GateSpec)
    serving: ServingSpec = _d(ServingSpec)
    monitoring: MonitoringSpec = _d(MonitoringSpec)
    connections: Connections = _d(Connections)
    storage: StorageSpec = _d(StorageSpec)

    def __post_init__(self) -> None:
        if not _NAME.match(self.model):
            raise ValueError(f"model {self.model!r}: use lowercase letters, digits and '_' (it becomes part of "
                             "DAG ids)")
        try:  # the gate's metrics and tests are checked against the task; its defaults are the task's
            object.__setattr__(self, "gate", self.gate.for_task(self.training))
        except ValueError as e:
            raise ValueError(f"gate: {e}") from None

    # -- where the YAML came from (set by config.load_config; not a YAML key) and derived values (no I/O) --
    @property
    def source(self) -> str:
        return str(self.__dict__.get("_source", ""))

    def with_source(self, source: str) -> PipelineSpec:
        object.__setattr__(self, "_source", source)
        return self

    @property
    def base_dir(self) -> Path:
        return Path(self.source).parent if self.source else Path.cwd()

    @property
    def paths(self) -> ModelPaths:
        return ModelPaths.for_model(self.model, self.home)

    @property
    def storage_root(self) -> str:
        """The root of the shared files (``storage.root``: an ``s3://`` prefix or a directory, a relative one
        taken from the YAML's folder), default the home."""
        return self._location(self.storage.root) if self.storage.root else str(self.paths.home)

    def shared(self, *parts: str) -> str:
        """``<storage root>/<parts...>`` (``s3://`` URL or local path; no I/O)."""
        return "/".join([self.storage_root.rstrip("/"), *parts])

    @property
    def snapshot_root(self) -> str:
        """Where training snapshots are written: ``<storage root>/snapshots/<model>``."""
        return self.shared("snapshots", self.model)

    def report_dir(self, kind: str) -> str:
        """Where reports of one kind (``validation``, ``gate``, ``infra_validation``, ``drift``) are written:
        ``<storage root>/reports/<model>/<kind>``."""
        return self.shared("reports", self.model, kind)

    @property
    def inference_log(self) -> str:
        """The inference log's root (``serving.inference_log``: a directory or ``s3://`` prefix), default
        ``<storage root>/inference_log/<model>``; a relative directory is taken from the YAML's folder."""
        configured = self.serving.inference_log
        return self._location(configured) if configured else self.shared("inference_log", self.model)

    @property
    def retrain_guard_state(self) -> str:
        """The retrain-guard ledger (``monitoring.retrain_guards.state_path``), default
        ``<storage root>/state/retrain_guard/<model>.json``."""
        configured = self.monitoring.retrain_guards.state_path
        return configured or self.shared("state", "retrain_guard", f"{self.model}.json")

    @property
    def arrival_watermark(self) -> str:
        """The landing watcher's watermark: ``<storage root>/state/<model>_arrival_watermark.json`` when
        ``storage.root`` is set (a triggerer restarted on another host keeps it), else under the home's state."""
        name = f"{self.model}_arrival_watermark.json"
        return self.shared("state", name) if self.storage.root else str(self.paths.state / name)

    @property
    def checkpoint_root(self) -> str | None:
        """``<storage root>/checkpoints`` when ``storage.root`` is set (mirrored there when ``s3://``: a retry on
        another GPU worker resumes); None: each worker's ``$MLOPS_HOME/checkpoints``."""
        return self.shared("checkpoints") if self.storage.root else None

    def _location(self, configured: str) -> str:
        if configured.startswith("s3://"):
            return configured.rstrip("/")
        path = Path(configured).expanduser()
        return str((path if path.is_absolute() else self.base_dir / path).resolve())

    @property
    def repo_path(self) -> str:
        return str((self.base_dir / self.features.repo).resolve())

    @property
    def transform_ref(self) -> str:
        path, _, func = self.features.transform.rpartition(":")
        if path.endswith(".py"):
            return f"{(self.base_dir / path).resolve()}:{func}"
        return self.features.transform

    @property
    def landing_path(self) -> str:
        return self.features.arrival.path or self.shared("landing", self.model)

    def dag_id(self, kind: str) -> str:
        return f"{self.model}__{kind}"


# ---------------------------------------------------------------------------------------------------
# plain-dict round trip (operators receive specs as templated dicts)
# ---------------------------------------------------------------------------------------------------


def as_dict(spec: Any) -> Any:
    """A spec (or anything holding specs) as plain JSON-able values."""
    if dataclasses.is_dataclass(spec) and not isinstance(spec, type):
        return {f.name: as_dict(getattr(spec, f.name)) for f in dataclasses.fields(spec)}
    if isinstance(spec, dict):
        return {k: as_dict(v) for k, v in spec.items()}
    if isinstance(spec, (list, tuple)):
        return [as_dict(v) for v in spec]
    return spec


_NESTED: dict[type, dict[str, tuple[str, type]]] = {}


def _nested_fields(cls: type) -> dict[str, tuple[str, type]]:
    """field -> (shape, spec class) for fields holding specs: shape 'one', 'list' or 'dict'."""
    if cls not in _NESTED:
        hints = typing.get_type_hints(cls)
        out: dict[str, tuple[str, type]] = {}
        for f in dataclasses.fields(cls):
            out.update(_spec_shape(f.name, hints[f.name]))
        _NESTED[cls] = out
    return _NESTED[cls]


def _spec_shape(name: str, tp: Any) -> dict[str, tuple[str, type]]:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _spec_shape(name, typing.get_args(tp)[0])
    if isinstance(tp, type) and issubclass(tp, _Spec):
        return {name: ("one", tp)}
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if origin is list and args and isinstance(args[0], type) and issubclass(args[0], _Spec):
        return {name: ("list", args[0])}
    if origin is dict and len(args) == 2 and isinstance(args[1], type) and issubclass(args[1], _Spec):
        return {name: ("dict", args[1])}
    if len(args) == 1 and origin is not list and origin is not dict:  # X | None
        return _spec_shape(name, args[0])
    return {}


def from_dict(cls: type[Any], data: Any) -> Any:
    """Rebuild a spec from :func:`as_dict`'s output without validating (it was validated when loaded).

    A spec instance passes through unchanged; unknown keys are an error (a spec from a newer version).
    """
    if isinstance(data, cls) or data is None:
        return data
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__}: expected a mapping, got {type(data).__name__}")
    nested = _nested_fields(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        shape = nested.get(key)
        if shape is None or value is None:
            kwargs[key] = value
        elif shape[0] == "one":
            kwargs[key] = from_dict(shape[1], value)
        elif shape[0] == "list":
            kwargs[key] = [from_dict(shape[1], v) for v in value]
        else:
            kwargs[key] = {k: from_dict(shape[1], v) for k, v in value.items()}
    return cls(**kwargs)


# Names the YAML sections had before the specs (tests, user code).
PipelineConfig = PipelineSpec
FeaturesConfig, TrainingConfig, GateConfig, ServingConfig, MonitoringConfig = (
    FeaturesSpec, TrainingSpec, GateSpec, ServingSpec, MonitoringSpec)
ArrivalConfig, MaterializeConfig, SearchConfig, BootstrapConfig = ArrivalSpec, MaterializeSpec, SearchSpec, BootstrapSpec
KubernetesTargetConfig, BentoCloudTargetConfig, InfraValidateConfig = (
    KubernetesTargetSpec, BentoCloudTargetSpec, InfraValidateSpec)
BatchConfig, ServiceLimitsConfig, ExperimentConfig = BatchSpec, ServiceLimitsSpec, ExperimentSpec
DriftConfig, PerformanceConfig, OpsConfig = DriftSpec, PerformanceSpec, OpsSpec
