"""Behavioral tests of a binary classifier (runtime module), after CheckList (Ribeiro et al., 2020).

Three kinds, declared under ``gate.behavioral`` in the model YAML (see :class:`~mlops_provider.config.BehavioralTest`):

``invariance``
    changing ``column`` (``set`` a value, ``add`` an amount, or each of ``values`` in turn) must not move
    the predicted probability by more than ``tolerance``. Example: the tail number of the plane.
``directional``
    the change must not move the prediction the wrong way (``expect: not_lower`` / ``not_higher``) by more
    than ``tolerance``. Example: heavier precipitation must not lower the delay probability.
``minimum_functionality``
    fixed cases with an expected probability range; features a case leaves out take typical values
    (median of numeric, most frequent categorical value of the evaluation set).

Each test returns ``{"name", "kind", "value" (pass rate), "bound" (min_pass_rate), "passed", "rows",
"failures": [up to 5 examples]}``. A perturbation runs on a seeded sample of ``rows`` evaluation rows, so
the same model and evaluation set always give the same result.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from mlops_provider.exceptions import ConfigError

Predict = Callable[[pd.DataFrame], np.ndarray]
MAX_EXAMPLES = 5


def _sample(x: pd.DataFrame, rows: int, seed: int) -> pd.DataFrame:
    if len(x) <= rows:
        return x.reset_index(drop=True)
    idx = np.sort(np.random.default_rng(seed).choice(len(x), size=rows, replace=False))
    return x.iloc[idx].reset_index(drop=True)


def _perturbed(base: pd.DataFrame, column: str, test: dict[str, Any]) -> list[tuple[str, pd.DataFrame]]:
    changes: list[tuple[str, Any, float | None]]
    if test.get("values") is not None:
        changes = [(f"{column}={v!r}", v, None) for v in test["values"]]
    elif test.get("set") is not None:
        changes = [(f"{column}={test['set']!r}", test["set"], None)]
    else:
        changes = [(f"{column}+{test['add']}", None, float(test["add"]))]
    out = []
    for desc, value, add in changes:
        x = base.copy()
        if add is not None:
            if not pd.api.types.is_numeric_dtype(x[column]):
                raise ConfigError(
                    f"gate.behavioral {test['name']!r}: 'add' needs a numeric column, {column!r} is "
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


def run_test(test: dict[str, Any], x: pd.DataFrame, predict: Predict, *, seed: int = 0) -> dict[str, Any]:
    """Run one behavioral test on the evaluation inputs ``x`` (model input columns plus any extra columns)."""
    kind, name = test["kind"], test["name"]
    bound = float(test.get("min_pass_rate", 0.95))
    tol = float(test.get("tolerance", 0.01))
    result: dict[str, Any] = {
        "name": f"behavioral.{name}",
        "kind": "behavioral",
        "test": kind,
        "bound": bound,
    }
    if kind == "minimum_functionality":
        base = typical_row(x)
        frame = pd.DataFrame([{**base, **case["input"]} for case in test["cases"]])
        for c in x.columns:
            frame[c] = (
                frame[c].astype(x[c].dtype) if pd.api.types.is_numeric_dtype(x[c]) else frame[c].astype(str)
            )
        p = np.asarray(predict(frame[list(x.columns)]), dtype=np.float64).reshape(-1)
        ok = []
        misses: list[dict[str, Any]] = []
        for case, prob in zip(test["cases"], p, strict=True):
            lo, hi = float(case.get("min_probability", 0.0)), float(case.get("max_probability", 1.0))
            hit = bool(np.isfinite(prob) and lo <= prob <= hi)
            ok.append(hit)
            if not hit:
                misses.append({"case": case["name"], "probability": float(prob), "expected": [lo, hi]})
        rate = float(np.mean(ok))
        result.update(
            value=rate,
            passed=rate >= bound,
            rows=len(ok),
            failures=misses[:MAX_EXAMPLES],
            cases={c["name"]: float(v) for c, v in zip(test["cases"], p, strict=True)},
        )
        return result

    column = test["column"]
    if column not in x.columns:
        raise ConfigError(
            f"gate.behavioral {name!r}: column {column!r} is not in the evaluation set (columns: "
            f"{sorted(x.columns)}). Fix the column name in the YAML."
        )
    base = _sample(x, int(test.get("rows", 1000)), seed)
    p0 = np.asarray(predict(base), dtype=np.float64).reshape(-1)
    passes = []
    failures: list[dict[str, Any]] = []
    shifts = []
    for desc, xp in _perturbed(base, column, test):
        p1 = np.asarray(predict(xp), dtype=np.float64).reshape(-1)
        d = p1 - p0
        if kind == "invariance":
            good = np.abs(d) <= tol
        elif test.get("expect") == "not_lower":
            good = d >= -tol
        else:
            good = d <= tol
        good &= np.isfinite(d)
        passes.append(good)
        shifts.append(float(np.nanmean(d)))
        for i in np.flatnonzero(~good)[: MAX_EXAMPLES - len(failures)]:
            failures.append({"change": desc, "row": int(i), "before": float(p0[i]), "after": float(p1[i])})
    rate = float(np.mean(np.concatenate(passes))) if passes else float("nan")
    result.update(
        value=rate,
        passed=bool(np.isfinite(rate) and rate >= bound),
        rows=len(base),
        mean_shift=float(np.mean(shifts)),
        failures=failures,
    )
    return result


def run_tests(
    tests: list[dict[str, Any]], x: pd.DataFrame, predict: Predict, *, seed: int = 0
) -> list[dict[str, Any]]:
    return [run_test(t, x, predict, seed=seed) for t in tests]
