"""Evidently's per-column drift tests: the fixed-threshold verdict and the report's metrics (runtime module).

Used by :func:`mlops_provider.runtime.monitoring.drift.evaluate_drift` for the columns fixed thresholds
judge (every column with ``calibration.method: none``, or a column with its own ``threshold``) and for the
Evidently HTML report. Statistical choices (measured on the binary example's real data, see tests/integration/test_drift_flights.py):

* Evidently picks the per-column test from the **reference** size only: above 1000 reference rows it uses
  Wasserstein (numeric) / Jensen-Shannon (categorical) distances with a fixed 0.1 threshold. Those carry
  sampling noise of the order of 1/sqrt(n_current), so a 100-row window drawn i.i.d. from the reference
  reads as ~50 % drifted columns. When the current window has fewer than :data:`SMALL_WINDOW_ROWS` rows
  two-sample Kolmogorov-Smirnov (numeric) and chi-square (categorical) tests, p < 0.05, are used instead;
  at a day of traffic they flag nearly every day (that is what calibration is for).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.core.report import Snapshot
from evidently.metrics import ValueDrift

from mlops_provider.exceptions import DriftError
from mlops_provider.runtime.monitoring.statistics import CurrentStats, ReferenceStats

if TYPE_CHECKING:
    from mlops_provider.runtime.monitoring.drift import DriftRules


def _prepare(frame: pd.DataFrame, numeric: Sequence[str], categorical: Sequence[str]) -> pd.DataFrame:
    """Only the monitored columns, numeric as float64 (bad values -> NaN), categorical as str/None."""
    out = pd.DataFrame(index=frame.index)
    for col in numeric:
        out[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    for col in categorical:
        values = frame[col]
        out[col] = values.where(values.isna(), values.astype(str)).astype(object)
    return out.reset_index(drop=True)


def _float(value: Any) -> float | None:
    import math

    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


#: Below this many current rows the per-column tests are KS / chi-square instead of distances.
SMALL_WINDOW_ROWS = 1000
SMALL_WINDOW_METHODS = {"num_method": "ks", "cat_method": "chisquare"}


#: Evidently methods whose score is a p-value (drift when below the threshold); the others are distances.
P_VALUE_METHODS = frozenset(
    {
        "ks",
        "chisquare",
        "z",
        "fisher_exact",
        "g_test",
        "anderson",
        "cramer_von_mises",
        "mannw",
        "t_test",
        "es",
        "empirical_mmd",
        "TVD",
        "K-S p_value",
        "chi-square p_value",
        "Z-test p_value",
    }
)


def _parse_snapshot(snapshot: Snapshot) -> tuple[float | None, dict[str, dict[str, Any]]]:
    """(share of drifted columns, {column: {stattest, score, threshold, drifted}}) from a snapshot."""
    data = json.loads(snapshot.json())  # numpy-free plain structure
    share: float | None = None
    columns: dict[str, dict[str, Any]] = {}
    by_metric_id: dict[str, str] = {}
    for metric in data.get("metrics", []):
        config = metric.get("config", {})
        kind = str(config.get("type", ""))
        if kind.endswith(":DriftedColumnsCount"):
            share = _float((metric.get("value") or {}).get("share"))
        elif kind.endswith(":ValueDrift"):
            col = str(config["column"])
            by_metric_id[str(metric.get("id"))] = col
            columns[col] = {
                "stattest": config.get("method"),
                "score": _float(metric.get("value")),
                "stattest_threshold": _float(config.get("threshold")),
                "drifted": None,
            }
    # Evidently's per-column test ("drift") FAILs exactly when it detected drift in that column.
    for test in data.get("tests", []):
        params = (test.get("metric_config") or {}).get("params") or {}
        test_col = params.get("column")
        if test.get("id") == "drift" and test_col in columns:
            columns[test_col]["drifted"] = test.get("status") == "FAIL"
    unresolved = [c for c, v in columns.items() if v["drifted"] is None]
    if unresolved:
        raise DriftError(
            f"Evidently returned no drift verdict for column(s) {unresolved}; this build of evidently "
            f"({_evidently_version()}) is not supported. Install airflow-provider-mlops[monitor]."
        )
    return share, columns


def _evidently_version() -> str:
    try:
        from importlib.metadata import version

        return version("evidently")
    except Exception:  # pragma: no cover - metadata missing
        return "unknown"


def _methods_for(
    rules: DriftRules, num_cols: Sequence[str], cat_cols: Sequence[str], n_current: int
) -> tuple[dict[str, Any], dict[str, str], dict[str, float]]:
    """(preset kwargs, per-column methods, per-column thresholds) for the window size and the YAML."""
    small = n_current < SMALL_WINDOW_ROWS
    num_method = rules.num_method or (SMALL_WINDOW_METHODS["num_method"] if small else None)
    cat_method = rules.cat_method or (SMALL_WINDOW_METHODS["cat_method"] if small else None)
    kwargs: dict[str, Any] = {}
    if num_method:
        kwargs["num_method"] = num_method
    if cat_method:
        kwargs["cat_method"] = cat_method
    per_method = {
        c: str(r["method"])
        for c, r in rules.columns.items()
        if r.get("method") and c in (*num_cols, *cat_cols)
    }
    per_threshold = {
        c: float(r["threshold"])
        for c, r in rules.columns.items()
        if r.get("threshold") and c in (*num_cols, *cat_cols)
    }
    return kwargs, per_method, per_threshold


def run_tests(ref: ReferenceStats, cur: CurrentStats, num_cols: list[str], cat_cols: list[str],
               kwargs: Mapping[str, Any], per_method: Mapping[str, str], per_threshold: Mapping[str, float],
               ) -> tuple[Snapshot, dict[str, dict[str, Any]]]:
    """Evidently's per-column tests on the (reference sample, window sample) pair."""
    cols = num_cols + cat_cols
    refp = _prepare(ref.sample, num_cols, cat_cols)
    curp = _prepare(cur.sample, num_cols, cat_cols)
    definition = DataDefinition(numerical_columns=num_cols, categorical_columns=cat_cols)
    # One ValueDrift per column (method/threshold resolved here) rather than DataDriftPreset: the preset
    # also runs the legacy DatasetDriftMetric and DataDriftTable, which recompute every column's test
    # twice more; the dataset rule is ours anyway.
    metrics = []
    for c in cols:
        default = kwargs.get("num_method" if c in num_cols else "cat_method")
        metrics.append(ValueDrift(column=c, method=per_method.get(c) or default, threshold=per_threshold.get(c)))
    snapshot = Report(metrics, include_tests=True).run(
        current_data=Dataset.from_pandas(curp[cols], data_definition=definition),
        reference_data=Dataset.from_pandas(refp[cols], data_definition=definition),
    )
    return snapshot, _parse_snapshot(snapshot)[1]
