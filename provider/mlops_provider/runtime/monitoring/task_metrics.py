"""Live metrics per task type: what the monitor computes from the inference log and the landed outcomes
(runtime module).

The champion's task comes from its model version's tags (TASK-CONTRACT: ``mlops.task``, ``mlops.classes``,
``mlops.quantiles``, ``mlops.label``); a version without them is ``binary``, as every version was before task
types. :class:`MonitorTask` knows, per task:

* where the prediction is in the inference log and turns it into **score columns** (:data:`SCORE`,
  :data:`PRED`, ``__p::<class>``, ``__q::<q>``): binary ``probability`` (older logs: ``prediction`` held the
  probability); multiclass ``prediction`` (the class) and ``probabilities`` (JSON ``{class: p}``); regression
  ``prediction`` (and ``quantile_<q>``). The champion's own pyfunc output (:meth:`MonitorTask.scores_from_output`)
  gives the same columns, so the reference days and the live days are scored alike;
* the **realized** metrics once outcomes land (:meth:`MonitorTask.realized`; the functions are in
  :mod:`~mlops_provider.runtime.monitoring.live_metrics`): binary ROC AUC, log loss, Brier, accuracy at 0.5,
  ECE; multiclass log loss, accuracy, macro-F1, top-label ECE; regression RMSE, MAE, R², bias and the pinball
  loss of each logged quantile;
* the **estimated** metrics before they land (CBPE, :meth:`MonitorTask.expected`): classification only. A
  calibrated probability says how often the model is right; a regression's point prediction says nothing
  about its own error, so regression has no CBPE (NannyML's DLE would need a second model trained on the
  reference residuals; not done here): before labels land only its prediction drift is watched;
* the **prediction-drift** columns (:meth:`MonitorTask.drift_frame`): binary ``probability``; multiclass
  ``prediction`` (categorical) and ``top_probability``; regression ``prediction``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from mlops_provider.runtime.metrics import log_loss as _binary_log_loss
from mlops_provider.runtime.metrics import roc_auc_or_none as _auc
from mlops_provider.runtime.monitoring.live_metrics import (
    _class_text,
    binary_live_metrics,
    class_texts,
    expected_multiclass,
    macro_f1_codes,
    multiclass_live_metrics,
    multiclass_log_loss_codes,
    regression_live_metrics,
)
from mlops_provider.specs import LIVE_METRIC_DIRECTIONS, LIVE_METRICS, LIVE_PRIMARY

BINARY, MULTICLASS, REGRESSION = "binary", "multiclass", "regression"
TASKS = (BINARY, MULTICLASS, REGRESSION)
#: score columns (the task-independent form of a prediction inside the monitor)
SCORE = "__score"  # binary: P(label == 1); regression: the point prediction
PRED = "__pred"  # multiclass: the predicted class (text)
PROBA_PREFIX = "__p::"  # multiclass: one column per class
QUANTILE_PREFIX = "__q::"  # regression: one column per quantile
#: inference-log columns (TASK-CONTRACT)
PROBABILITY, PREDICTION, PROBABILITIES, QUANTILE_LOG_PREFIX = "probability", "prediction", "probabilities", "quantile_"


# -------------------------------------------------------------------------- one arm of a comparison
@dataclass
class Arm:
    """Labels and scores of one model on joined rows, as arrays (bootstrap-friendly)."""

    y: np.ndarray  # float labels (binary / regression) or int codes (multiclass; >= k: not a known class)
    score: np.ndarray | None = None  # binary probability / regression prediction
    pred: np.ndarray | None = None  # multiclass predicted class code
    proba: np.ndarray | None = None  # multiclass n x k

    def take(self, idx: np.ndarray) -> Arm:
        def t(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[idx]

        return Arm(self.y[idx], t(self.score), t(self.pred), t(self.proba))

    def __len__(self) -> int:
        return len(self.y)


# ----------------------------------------------------------------------------------------- the task
@dataclass(frozen=True)
class MonitorTask:
    """The champion's task as the monitor needs it (see the module docstring)."""

    name: str = BINARY
    classes: tuple[str, ...] = ()
    quantiles: tuple[float, ...] = ()
    label: str | None = None
    #: why a tag could not be used (the task then falls back; reported)
    notes: tuple[str, ...] = field(default=())

    # -- construction
    @classmethod
    def from_tags(cls, tags: Mapping[str, Any] | None) -> MonitorTask:
        """From a model version's tags; no ``mlops.task`` tag: binary (versions before task types)."""
        t = {str(k): v for k, v in dict(tags or {}).items()}
        notes: list[str] = []
        name = str(t.get("mlops.task") or BINARY).strip().lower()
        if name not in TASKS:
            notes.append(f"unknown mlops.task {name!r}: monitored as binary")
            name = BINARY

        def json_list(key: str) -> list[Any]:
            raw = t.get(key)
            if raw in (None, ""):
                return []
            try:
                value = json.loads(raw) if isinstance(raw, str) else raw
            except ValueError:
                notes.append(f"{key} is not a JSON list: {str(raw)[:80]!r}")
                return []
            return list(value) if isinstance(value, (list, tuple)) else []

        classes = tuple(_class_text(c) for c in json_list("mlops.classes")) if name == MULTICLASS else ()
        quantiles: tuple[float, ...] = ()
        if name == REGRESSION:
            try:
                quantiles = tuple(float(q) for q in json_list("mlops.quantiles"))
            except (TypeError, ValueError):
                notes.append("mlops.quantiles are not numbers: ignored")
        return cls(name, classes, quantiles, (str(t["mlops.label"]) if t.get("mlops.label") else None), tuple(notes))

    @classmethod
    def from_version(cls, version: Any) -> MonitorTask:
        return cls.from_tags(getattr(version, "tags", None))

    def with_classes(self, classes: Sequence[Any]) -> MonitorTask:
        """The same task with ``classes`` (when the version's tags carried none)."""
        from dataclasses import replace

        return replace(self, classes=tuple(_class_text(c) for c in classes))

    # -- metric names and directions
    @property
    def metrics(self) -> dict[str, bool]:
        """Live metric -> higher is better (:data:`mlops_provider.specs.LIVE_METRICS`)."""
        return dict(LIVE_METRICS[self.name])

    @property
    def primary(self) -> str:
        return LIVE_PRIMARY[self.name]

    @property
    def has_cbpe(self) -> bool:
        return self.name != REGRESSION

    @staticmethod
    def higher_is_better(metric: str) -> bool:
        return LIVE_METRIC_DIRECTIONS.get(metric, True)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"task": self.name, "primary_metric": self.primary}
        if self.classes:
            out["classes"] = list(self.classes)
        if self.quantiles:
            out["quantiles"] = list(self.quantiles)
        if self.notes:
            out["notes"] = list(self.notes)
        return out

    # -- where the prediction is in the inference log
    def log_columns(self) -> dict[str, str]:
        """Inference-log columns holding the prediction -> the type they are read as."""
        if self.name == BINARY:
            return {PROBABILITY: "float", PREDICTION: "float"}
        if self.name == MULTICLASS:
            return {PREDICTION: "string", PROBABILITIES: "string"}
        return {PREDICTION: "float", **{c: "float" for q in self.quantiles for c in _quantile_log_names(q)}}

    def experiment_type(self) -> str:
        """Type of the logged ``champion_prediction`` / ``challenger_prediction`` (the primary score)."""
        return "string" if self.name == MULTICLASS else "float"

    def score_columns(self) -> list[str]:
        if self.name == BINARY:
            return [SCORE]
        if self.name == MULTICLASS:
            return [PRED, *(PROBA_PREFIX + c for c in self.classes)]
        return [SCORE, *(f"{QUANTILE_PREFIX}{q:g}" for q in self.quantiles)]

    def scores(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The score columns of logged rows (index kept). Multiclass without declared classes takes them from
        the logged probabilities' keys (sorted)."""
        idx = frame.index
        if self.name == BINARY:
            p = _num(frame, PROBABILITY)
            if PREDICTION in frame.columns:  # older logs: ``prediction`` was the probability
                p = p.where(p.notna(), _num(frame, PREDICTION))
            return pd.DataFrame({SCORE: p}, index=idx)
        if self.name == REGRESSION:
            out = pd.DataFrame({SCORE: _num(frame, PREDICTION)}, index=idx)
            for q in self.quantiles:
                col = next((c for c in _quantile_log_names(q) if c in frame.columns), None)
                out[f"{QUANTILE_PREFIX}{q:g}"] = _num(frame, col) if col else np.nan
            return out
        parsed = [_parse_probabilities(v) for v in (frame[PROBABILITIES] if PROBABILITIES in frame.columns
                                                    else [None] * len(frame))]
        classes = list(self.classes) or sorted({k for d in parsed if d for k in d})
        proba = np.array([[d.get(c, np.nan) if d else np.nan for c in classes] for d in parsed],
                         dtype="float64").reshape(len(frame), len(classes))
        pred = (class_texts(frame[PREDICTION]) if PREDICTION in frame.columns
                else pd.Series(None, index=idx, dtype=object))
        if classes:
            has = np.all(np.isfinite(proba), axis=1) & pred.isna().to_numpy()
            if has.any():  # a class derived from the probabilities where the label was not logged
                pred[has] = [classes[i] for i in proba[has].argmax(axis=1)]
        out = pd.DataFrame({PRED: pred}, index=idx)
        for i, c in enumerate(classes):
            out[PROBA_PREFIX + c] = proba[:, i]
        return out

    def scores_from_output(self, output: Any, index: pd.Index | None = None) -> pd.DataFrame:
        """The score columns of the registered pyfunc's ``predict`` output (TASK-CONTRACT shapes)."""
        arr = np.asarray(output, dtype="float64")
        n = arr.shape[0] if arr.ndim else 0
        idx = index if index is not None else pd.RangeIndex(n)
        if self.name == BINARY:
            if arr.ndim == 2 and arr.shape[1] == 2:  # (n, 2) class probabilities: P(1) is the second
                arr = arr[:, 1]
            return pd.DataFrame({SCORE: arr.reshape(-1)}, index=idx)
        if self.name == REGRESSION:
            arr2 = arr.reshape(n, -1)
            out = pd.DataFrame({SCORE: arr2[:, 0]}, index=idx)
            for j, q in enumerate(self.quantiles):
                out[f"{QUANTILE_PREFIX}{q:g}"] = arr2[:, 1 + j] if arr2.shape[1] > 1 + j else np.nan
            return out
        arr2 = arr.reshape(n, -1)
        if arr2.shape[1] != len(self.classes):
            raise ValueError(f"the model returned {arr2.shape[1]} probability column(s) for {len(self.classes)} "
                             f"class(es) {list(self.classes)} (mlops.classes)")
        out = pd.DataFrame({PRED: [self.classes[i] for i in arr2.argmax(axis=1)] if n else []}, index=idx,
                           dtype=object)
        for i, c in enumerate(self.classes):
            out[PROBA_PREFIX + c] = arr2[:, i]
        return out

    def valid(self, scores: pd.DataFrame) -> pd.Series:
        """Rows that carry a prediction."""
        col = PRED if self.name == MULTICLASS else SCORE
        return scores[col].notna() if col in scores.columns else pd.Series(False, index=scores.index)

    def labels(self, values: pd.Series) -> np.ndarray:
        """Outcomes as the metrics take them: float (binary, regression) or class text (multiclass)."""
        if self.name == MULTICLASS:
            return class_texts(values).to_numpy(dtype=object)
        return pd.to_numeric(values, errors="coerce").to_numpy("float64")

    def _proba(self, scores: pd.DataFrame) -> np.ndarray | None:
        cols = [PROBA_PREFIX + c for c in self.classes]
        if not cols or any(c not in scores.columns for c in cols):
            return None
        return scores[cols].to_numpy("float64")

    # -- metrics
    def realized(self, y: Any, scores: pd.DataFrame, *, detail: bool = False) -> dict[str, Any]:
        """Realized metrics of outcomes ``y`` (as :meth:`labels` gives them) against ``scores``."""
        if self.name == BINARY:
            return binary_live_metrics(y, scores[SCORE].to_numpy("float64"), with_bins=detail)
        if self.name == REGRESSION:
            qs = {q: scores[f"{QUANTILE_PREFIX}{q:g}"].to_numpy("float64") for q in self.quantiles
                  if f"{QUANTILE_PREFIX}{q:g}" in scores.columns}
            return regression_live_metrics(y, scores[SCORE].to_numpy("float64"), qs)
        classes = list(self.classes) or [c[len(PROBA_PREFIX):] for c in scores.columns if c.startswith(PROBA_PREFIX)]
        task = self if self.classes else self.with_classes(classes)
        return multiclass_live_metrics(list(y), scores[PRED].tolist(), task._proba(scores), classes, detail=detail)

    def expected(self, scores: pd.DataFrame) -> dict[str, Any] | None:
        """CBPE of the rows' scores (None for regression: see the module docstring)."""
        from mlops_provider.runtime.monitoring.estimation import expected_metrics

        if self.name == BINARY:
            return expected_metrics(scores[SCORE].to_numpy("float64"))
        if self.name == MULTICLASS:
            proba = self._proba(scores)
            return expected_multiclass(proba) if proba is not None else {"n": 0, "log_loss": None,
                                                                         "accuracy": None, "macro_f1": None}
        return None

    # -- champion vs challenger
    def arm(self, y: np.ndarray, scores: pd.DataFrame | None = None, *, primary: Any = None) -> Arm:
        """One model's :class:`Arm`: from its score columns, or from ``primary`` (the logged
        ``champion_prediction`` / ``challenger_prediction``: binary probability, multiclass class, regression
        value) when only that is known."""
        if self.name != MULTICLASS:
            s = scores[SCORE].to_numpy("float64") if scores is not None else np.asarray(
                pd.to_numeric(pd.Series(primary), errors="coerce"), dtype="float64")
            return Arm(np.asarray(y, dtype="float64"), score=s)
        classes = list(self.classes)
        pred = scores[PRED] if scores is not None else class_texts(pd.Series(primary, dtype=object))
        vocab = {c: i for i, c in enumerate(classes)}
        for v in sorted({*map(str, y), *map(str, pred)} - set(vocab)):
            vocab[v] = len(vocab)
        return Arm(np.array([vocab[str(v)] for v in y], dtype="int64"),
                   pred=np.array([vocab[str(v)] for v in pred], dtype="int64"),
                   proba=self._proba(scores) if scores is not None else None)

    def arm_metrics(self, arm: Arm) -> dict[str, float | None]:
        """The compared metrics of one arm (fast: called per bootstrap resample)."""
        if self.name == BINARY:
            assert arm.score is not None
            return {"roc_auc": _auc(arm.y, arm.score), "log_loss": _binary_log_loss(arm.y, arm.score),
                    "brier": float(np.mean((arm.score - arm.y) ** 2)) if len(arm) else None}
        if self.name == REGRESSION:
            assert arm.score is not None
            m = regression_live_metrics(arm.y, arm.score)
            return {k: m.get(k) for k in ("rmse", "mae", "r2")}
        assert arm.pred is not None
        k = len(self.classes)
        n_codes = int(max(arm.y.max(initial=0), arm.pred.max(initial=0))) + 1
        out = {"accuracy": float(np.mean(arm.y == arm.pred)) if len(arm) else None,
               "macro_f1": macro_f1_codes(arm.y, arm.pred, n_codes)}
        if arm.proba is not None and np.all(np.isfinite(arm.proba)):
            known = arm.y < k
            out["log_loss"] = multiclass_log_loss_codes(arm.y[known], arm.proba[known])
        return out

    def decision_metric(self, arms: Sequence[Arm]) -> str:
        """The metric that names the winner: binary roc_auc; multiclass log_loss when both arms have
        probabilities (split mode), else accuracy (shadow mode logs the challenger's class only); regression
        rmse."""
        if self.name == BINARY:
            return "roc_auc"
        if self.name == REGRESSION:
            return "rmse"
        return "log_loss" if all(a.proba is not None for a in arms) else "accuracy"

    # -- prediction drift
    def drift_columns(self) -> tuple[list[str], list[str]]:
        """(numeric, categorical) prediction-drift columns."""
        if self.name == MULTICLASS:
            return ["top_probability"], ["prediction"]
        return ([PROBABILITY] if self.name == BINARY else [PREDICTION]), []

    def drift_frame(self, scores: pd.DataFrame) -> pd.DataFrame:
        """The prediction-drift columns of scored rows (index kept)."""
        if self.name == BINARY:
            return pd.DataFrame({PROBABILITY: scores[SCORE].astype("float64")}, index=scores.index)
        if self.name == REGRESSION:
            return pd.DataFrame({PREDICTION: scores[SCORE].astype("float64")}, index=scores.index)
        proba = self._proba(scores)
        top = (np.where(np.all(np.isfinite(proba), axis=1), np.nanmax(np.where(np.isfinite(proba), proba, -1), axis=1),
                        np.nan) if proba is not None and proba.size else np.full(len(scores), np.nan))
        return pd.DataFrame({"prediction": scores[PRED].astype(object), "top_probability": top}, index=scores.index)


def _num(frame: pd.DataFrame, col: str | None) -> pd.Series:
    if col is None or col not in frame.columns:
        return pd.Series(np.nan, index=frame.index, dtype="float64")
    return pd.to_numeric(frame[col], errors="coerce").astype("float64")


def _quantile_log_names(q: float) -> list[str]:
    """``quantile_<q>`` as the service may write it (``str(q)`` and the shortest form)."""
    return list(dict.fromkeys([f"{QUANTILE_LOG_PREFIX}{q}", f"{QUANTILE_LOG_PREFIX}{q:g}"]))


def _parse_probabilities(v: Any) -> dict[str, float] | None:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    try:
        d = json.loads(v) if isinstance(v, str) else v
    except ValueError:
        return None
    if not isinstance(d, Mapping):
        return None
    out = {}
    for k, p in d.items():
        try:
            out[_class_text(k)] = float(p)
        except (TypeError, ValueError):
            continue
    return out


__all__ = ["Arm", "BINARY", "MULTICLASS", "MonitorTask", "REGRESSION", "TASKS"]
