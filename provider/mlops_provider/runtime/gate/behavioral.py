"""Behavioral tests of a model (runtime module), after CheckList (Ribeiro et al., 2020).

Three kinds, declared under ``gate.behavioral`` in the model YAML (:class:`~mlops_provider.specs.BehavioralTest`);
the column a test changes must be a model input (else the prediction could never change and the test could
never fail: a :class:`ConfigError`, refused already when the YAML is loaded):

``invariance``
    changing ``column`` (``set`` a value, ``add`` an amount, or each of ``values`` in turn) must not move
    the prediction by more than ``tolerance``. Example: one more mile of route distance.
``directional``
    the change must not move the prediction the wrong way (``expect: not_lower`` / ``not_higher``) by more
    than ``tolerance``. Example: heavier precipitation must not lower the delay probability. When the change
    moves NO prediction at all (every difference exactly 0), the test FAILS as "model insensitive to
    <column>": a model that ignores the column satisfies "not lower" vacuously, so passing would prove
    nothing.
``minimum_functionality``
    fixed cases with an expected outcome; features a case leaves out take typical values (median of numeric,
    most frequent categorical value of the evaluation set).

What is compared depends on the task (``task`` / ``classes`` of :func:`run_test`): binary P(label == 1);
regression the point prediction (in the label's units, so is ``tolerance``); multiclass the class
probabilities: invariance bounds the largest change of any class probability, directional compares the
probability of ``target_class``, a case expects ``expect_class`` to be the most probable (and, with
``min_probability``, at least that probable).

Each test returns ``{"name", "kind", "value" (pass rate), "bound" (min_pass_rate), "passed", "rows",
"failures": [up to 5 examples], "message"}``. A perturbation runs on a seeded sample of ``rows`` evaluation
rows, so the same model and evaluation set always give the same result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from mlops_provider.exceptions import ConfigError
from mlops_provider.specs import BehavioralTest
from mlops_provider.tasks import DEFAULT_TASK

Predict = Callable[[pd.DataFrame], np.ndarray]
MAX_EXAMPLES = 5


def _sample(x: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    if len(x) <= rows:
        return x.reset_index(drop=True)
    idx = np.sort(np.random.default_rng(seed).choice(len(x), size=rows, replace=False))
    return x.iloc[idx].reset_index(drop=True)


def _perturbed(base: pd.DataFrame, column: str, test: BehavioralTest) -> list[tuple[str, pd.DataFrame]]:
    changes: list[tuple[str, Any, float | None]]
    if test.values is not None:
        changes = [(f"{column}={v!r}", v, None) for v in test.values]
    elif test.set is not None:
        changes = [(f"{column}={test.set!r}", test.set, None)]
    else:
        changes = [(f"{column}+{test.add}", None, float(test.add))]  # type: ignore[arg-type]
    out = []
    for desc, value, add in changes:
        x = base.copy()
        if add is not None:
            if not pd.api.types.is_numeric_dtype(x[column]):
                raise ConfigError(
                    f"gate.behavioral {test.name!r}: 'add' needs a numeric column, {column!r} is "
                    f"{x[column].dtype}. Use 'set' or 'values'."
                )
            # a missing value stays missing (the model imputes it): shift only the known ones
            x[column] = x[column] + add
        else:
            x[column] = value if not pd.api.types.is_numeric_dtype(x[column]) else float(value)
            if not pd.api.types.is_numeric_dtype(base[column]):
                x[column] = x[column].astype(str)
        out.append((desc, x))
    return out


def typical_row(x: pd.DataFrame) -> dict[str, Any]:
    """Median of every numeric column, most frequent value of every other column."""
    row: dict[str, Any] = {}
    for c in x.columns:
        if pd.api.types.is_numeric_dtype(x[c]):
            row[c] = float(x[c].median()) if x[c].notna().any() else float("nan")
        else:
            mode = x[c].mode(dropna=True)
            row[c] = mode.iloc[0] if len(mode) else ""
    return row


def _class_index(classes: Sequence[Any] | None, value: Any, test: str) -> int:
    keys = [str(c) for c in classes or []]
    if str(value) not in keys:
        raise ConfigError(f"gate.behavioral {test!r}: class {value!r} is not one of the model's classes {classes}.")
    return keys.index(str(value))


def _cases(
    test: BehavioralTest, x: pd.DataFrame, predict: Predict, task: str, classes: Sequence[Any] | None
) -> dict[str, Any]:
    base = typical_row(x)
    frame = pd.DataFrame([{**base, **case.input} for case in test.cases])
    for c in x.columns:
        frame[c] = frame[c].astype(x[c].dtype) if pd.api.types.is_numeric_dtype(x[c]) else frame[c].astype(str)
    out = np.asarray(predict(frame[list(x.columns)]), dtype=np.float64)
    ok: list[bool] = []
    misses: list[dict[str, Any]] = []
    seen: dict[str, Any] = {}
    for i, case in enumerate(test.cases):
        if task == "multiclass":
            j = _class_index(classes, case.expect_class, test.name)
            top = int(np.argmax(out[i]))
            prob = float(out[i, j])
            hit = top == j and (case.min_probability is None or prob >= case.min_probability)
            seen[case.name] = {"prediction": (classes or [])[top], "probability": prob}
            miss: dict[str, Any] = {"case": case.name, "prediction": (classes or [])[top], "probability": prob,
                    "expected": {"class": case.expect_class, "min_probability": case.min_probability}}
        else:
            value = float(out[i, 0] if out.ndim == 2 else out[i])
            lo, hi = ((case.min_value, case.max_value) if task == "regression"
                      else (case.min_probability, case.max_probability))
            hit = bool(np.isfinite(value) and (lo is None or value >= lo) and (hi is None or value <= hi))
            seen[case.name] = value
            miss = {"case": case.name, "prediction": value, "expected": [lo, hi]}
        ok.append(hit)
        if not hit:
            misses.append(miss)
    rate = float(np.mean(ok))
    return {"value": rate, "passed": rate >= test.min_pass_rate, "rows": len(ok), "failures": misses[:MAX_EXAMPLES],
            "cases": seen}


def _compared(pred: np.ndarray, task: str, target: int | None) -> np.ndarray:
    """What a perturbation test compares per row (see the module doc)."""
    if task == "multiclass":
        return pred if target is None else pred[:, target]
    return pred[:, 0] if pred.ndim == 2 else pred


def run_test(
    test: BehavioralTest | dict[str, Any],
    x: pd.DataFrame,
    predict: Predict,
    *,
    seed: int = 0,
    task: str = DEFAULT_TASK,
    classes: Sequence[Any] | None = None,
    inputs: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run one behavioral test on the evaluation inputs ``x``; ``inputs``: the model's input columns (default
    the columns of ``x``) — a test on any other column is a :class:`ConfigError`."""
    t = test if isinstance(test, BehavioralTest) else BehavioralTest.parse(test)
    result: dict[str, Any] = {"name": f"behavioral.{t.name}", "kind": "behavioral", "test": t.kind,
                              "bound": t.min_pass_rate}
    if t.kind == "minimum_functionality":
        return {**result, **_cases(t, x, predict, task, classes)}
    column = str(t.column)
    model_inputs = list(inputs) if inputs is not None else list(x.columns)
    if column not in model_inputs or column not in x.columns:
        raise ConfigError(
            f"gate.behavioral {t.name!r}: column {column!r} is not a model input (inputs: {sorted(model_inputs)}); "
            "changing it can never change the prediction, so the test could never fail. Test a model input."
        )
    target = None
    if task == "multiclass" and t.kind == "directional":
        if t.target_class is None:
            raise ConfigError(f"gate.behavioral {t.name!r}: a multiclass directional test needs target_class.")
        target = _class_index(classes, t.target_class, t.name)
    base = _sample(x, t.rows, seed)
    p0 = _compared(np.asarray(predict(base), dtype=np.float64), task, target)
    passes: list[np.ndarray] = []
    failures: list[dict[str, Any]] = []
    shifts: list[float] = []
    changed = False
    for desc, xp in _perturbed(base, column, t):
        p1 = _compared(np.asarray(predict(xp), dtype=np.float64), task, target)
        d = p1 - p0
        changed = changed or bool(np.any(d != 0))
        if d.ndim == 2:  # multiclass invariance: the largest change of any class probability
            d = d[np.arange(len(d)), np.abs(d).argmax(axis=1)]
        if t.kind == "invariance":
            good = np.abs(d) <= t.tolerance
        elif t.expect == "not_lower":
            good = d >= -t.tolerance
        else:
            good = d <= t.tolerance
        good &= np.isfinite(d)
        passes.append(good)
        shifts.append(float(np.nanmean(d)))
        before = p0 if p0.ndim == 1 else p0.max(axis=1)
        after = p1 if p1.ndim == 1 else p1.max(axis=1)
        for i in np.flatnonzero(~good)[: MAX_EXAMPLES - len(failures)]:
            failures.append({"change": desc, "row": int(i), "before": float(before[i]), "after": float(after[i])})
    rate = float(np.mean(np.concatenate(passes))) if passes else float("nan")
    result.update(value=rate, passed=bool(np.isfinite(rate) and rate >= t.min_pass_rate), rows=len(base),
                  mean_shift=float(np.mean(shifts)), failures=failures)
    if t.kind == "directional" and not changed:
        result.update(passed=False, insensitive=True,
                      message=f"model insensitive to {column}: the change moved no prediction on {len(base)} rows")
    return result


def run_tests(
    tests: Sequence[BehavioralTest | dict[str, Any]], x: pd.DataFrame, predict: Predict, **kwargs: Any
) -> list[dict[str, Any]]:
    """:func:`run_test` for each test (same keyword arguments)."""
    return [run_test(t, x, predict, **kwargs) for t in tests]
