"""Slice checks of the gate: no slice may regress more than its bound (runtime module).

A slice spec (``gate.slices[]`` of the YAML, :class:`~mlops_provider.specs.SliceCheck`) names a column of
the evaluation set (a model input or a side column such as an airport), a metric of the task, bounds
(``floor``, ``max_regression``), a minimum row count (smaller slices are reported, not judged) and optionally
the values to judge (each must have rows). :func:`slice_table` scores both models per slice;
:func:`slice_checks` turns the table into checks (point estimates: a slice is too small for a bootstrap).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from mlops_provider.exceptions import ConfigError, GateInputError
from mlops_provider.runtime.gate.checks import check
from mlops_provider.runtime.metrics import all_metrics
from mlops_provider.specs import SliceCheck
from mlops_provider.tasks import higher_is_better

Metrics = Callable[[np.ndarray, np.ndarray], dict[str, float]]


def _spec(spec: SliceCheck | dict[str, Any]) -> SliceCheck:
    return spec if isinstance(spec, SliceCheck) else SliceCheck.parse(spec)  # type: ignore[no-any-return]


def _metric(spec: SliceCheck, primary: str | None) -> str:
    metric = spec.metric or primary
    if metric is None:
        raise ConfigError(f"gate.slices[{spec.column}]: no metric (and no primary metric to default to).")
    return metric


def slice_table(
    spec: SliceCheck | dict[str, Any],
    side: pd.DataFrame,
    x: pd.DataFrame,
    y: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray | None,
    *,
    metrics: Metrics = all_metrics,
    primary: str | None = None,
) -> list[dict[str, Any]]:
    """Per-slice metric of both models: ``[{column, value, rows, challenger, champion, judged, reason}]``."""
    s = _spec(spec)
    column, metric = s.column, _metric(s, primary)
    if column in x.columns:
        keys = x[column]
    elif column in side.columns:
        keys = side[column]
    else:
        raise ConfigError(
            f"gate.slices: column {column!r} is not in the evaluation set (columns: "
            f"{sorted([*x.columns, *side.columns])}). Fix the slice column in the YAML."
        )
    keys = keys.astype(str)
    present = keys.value_counts()
    wanted = [str(v) for v in s.values] if s.values else sorted(present.index)
    empty = [v for v in wanted if int(present.get(v, 0)) == 0]
    if empty:
        raise GateInputError(
            f"gate.slices: slice {column}={empty} has no rows in the evaluation set ({len(keys)} rows; values "
            f"present: {sorted(present.index)[:20]}). Remove it from gate.slices[].values or widen "
            "training.evaluation_days."
        )
    rows = []
    for v in wanted:
        m = (keys == v).to_numpy()
        n = int(m.sum())
        row: dict[str, Any] = {"column": column, "value": v, "rows": n, "metric": metric, "judged": True, "reason": ""}
        ys = y[m]
        row["challenger"] = metrics(ys, challenger[m])[metric] if n else math.nan
        row["champion"] = metrics(ys, champion[m])[metric] if (n and champion is not None) else None
        if n < s.min_rows:
            row.update(judged=False, reason=f"{n} rows < min_rows {s.min_rows}")
        elif not math.isfinite(row["challenger"]):
            row.update(judged=False, reason="the metric is undefined on this slice (e.g. a single class)")
        rows.append(row)
    return rows


def slice_checks(
    spec: SliceCheck | dict[str, Any], table: list[dict[str, Any]], bootstrap: bool, *, task: str = "binary",
    primary: str | None = None,
) -> list[dict[str, Any]]:
    """Per judged slice: its floor (when set) and, with a champion, its regression bound (``max_regression``)."""
    s = _spec(spec)
    metric = _metric(s, primary)
    hib = higher_is_better(task, metric)
    checks = []
    for row in table:
        if not row["judged"]:
            continue
        name = f"slice.{row['column']}={row['value']}.{metric}"
        if s.floor is not None:
            checks.append(check(f"{name}.floor", row["challenger"], float(s.floor), hib, "slice", rows=row["rows"]))
        tol = s.max_regression
        if not bootstrap and tol is not None and row["champion"] is not None and math.isfinite(row["champion"]):
            bound = row["champion"] - tol if hib else row["champion"] + tol
            checks.append(check(name, row["challenger"], bound, hib, "slice", rows=row["rows"],
                                champion=row["champion"]))
    return checks


__all__ = ["slice_checks", "slice_table"]
