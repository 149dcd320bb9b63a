"""Data drift of the inference log against the champion's training snapshot (Evidently 0.7).

The rules (:class:`DriftRules`) and their evaluation (:func:`evaluate_drift`) on the streamed
statistics of :mod:`~mlops_provider.runtime.monitoring.statistics`. The monitor's entry point,
:func:`mlops_provider.runtime.monitoring.monitor.run_monitor`, finds the reference
(:mod:`~mlops_provider.runtime.monitoring.reference`), reads the inference log window
(:mod:`~mlops_provider.runtime.monitoring.window`), calls :func:`evaluate_drift` and writes the
reports (:mod:`~mlops_provider.runtime.monitoring.reports`). :func:`compute_drift` /
:func:`drift_report` run the same engine on two in-memory frames (tests, benchmarks).

The verdict (measured on the binary example's real data: benchmarks/drift_false_alarms.py, tests/integration/
test_monitoring_signals_flights.py):

* **Calibrated thresholds** (default, ``rules.calibration``): each feature's distance to the reference, null
  share, stuck-value and level-shift checks against thresholds calibrated on chunks of the reference of the
  window's length (:mod:`~mlops_provider.runtime.monitoring.calibration`), judged by
  :mod:`~mlops_provider.runtime.monitoring.verdict`; dataset drift when one feature drifts (the false-alarm
  rate covers every feature and check). At the size of a day, today's p-value tests flag every real day;
  the calibrated checks flag about one day in twenty, and catch unit changes, stuck sensors, renamed
  categories and null bursts on their first day.
* **Fixed thresholds** (``calibration.method: none``, too few reference chunks, or a column with its own
  ``threshold``): Evidently's per-column test (:mod:`~mlops_provider.runtime.monitoring.evidently_tests`);
  dataset drift when ``share of drifted columns >= drift_share``.
* Columns that are entirely null in the reference, or (fixed thresholds) in the window, cannot be tested;
  they are reported under ``skipped_columns``. Under calibration a column gone all-null is a null burst.
* The reference is down-sampled deterministically (``seed``) to ``max_reference_rows`` for Evidently; the
  exact statistics and the calibration use every reference row.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd
from evidently.core.report import Snapshot

from mlops_provider.exceptions import DriftError, MonitoredFeatureMissingError
from mlops_provider.runtime.monitoring import calibration as cal
from mlops_provider.runtime.monitoring import verdict as rv
from mlops_provider.runtime.monitoring.evidently_tests import (  # noqa: F401 - names kept for callers
    P_VALUE_METHODS,
    SMALL_WINDOW_METHODS,
    SMALL_WINDOW_ROWS,
    _evidently_version,
    _float,
    _methods_for,
    _parse_snapshot,
    _prepare,
    run_tests,
)
from mlops_provider.runtime.monitoring.statistics import (
    CurrentStats,
    ReferenceStats,
    reference_stats,
    stream_current,
)
from mlops_provider.runtime.monitoring.window import frame_window

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------- helpers
def _check_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise MonitoredFeatureMissingError(
            f"{what} lacks feature column(s) {missing} (it has {sorted(map(str, frame.columns))}). "
            "The monitored features come from the model YAML (model.features); make sure the service logs "
            "every raw feature column, or fix the feature lists."
        )


def sample_reference(reference: pd.DataFrame, max_rows: int, seed: int = 0) -> pd.DataFrame:
    """Deterministic down-sample (same input + seed -> same rows, original order kept)."""
    if max_rows <= 0 or len(reference) <= max_rows:
        return reference
    return reference.sample(n=max_rows, random_state=seed).sort_index(kind="stable")


def empty_result(
    *,
    status: str = "ok",
    n_reference: int = 0,
    n_current: int = 0,
    drift_share: float = 0.3,
    numeric: Sequence[str] = (),
    categorical: Sequence[str] = (),
) -> dict[str, Any]:
    """A result with no drift verdict (``drift`` False) in the shape :func:`compute_drift` returns."""
    return {
        "drift": False,
        "status": status,
        "drifted_columns": [],
        "share": 0.0,
        "threshold": float(drift_share),
        "n_reference": int(n_reference),
        "n_current": int(n_current),
        "numeric": list(numeric),
        "categorical": list(categorical),
        "methods": None,
        "skipped_columns": {},
        "columns": {},
    }


# ----------------------------------------------------------------------------------- public API
@dataclass(frozen=True)
class DriftRules:
    """Per-column methods/thresholds and the dataset rule (mirrors ``monitoring.drift`` of the YAML)."""

    drift_share: float = 0.3
    columns: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    num_method: str | None = None
    cat_method: str | None = None
    max_unseen_share: float | None = 0.05
    critical: Sequence[str] = ()
    exclude: Sequence[str] = ()
    min_drifted_columns: int | None = None
    sample_rows: int = 50_000
    reference_rows: int = 50_000
    stratify_by: Sequence[str] = ()
    seed: int = 0
    bins: int = 20
    #: ``monitoring.drift.calibration`` as a dict (see :class:`~mlops_provider.runtime.monitoring.calibration.Settings`)
    calibration: Mapping[str, Any] = field(default_factory=lambda: {"method": "std"})
    evidently_report: bool = True
    #: length of the monitoring window (the calibration chunk when ``calibration.chunk_hours`` is unset)
    window_hours: float | None = None

    @property
    def calibration_settings(self) -> cal.Settings:
        return cal.Settings.from_config(self.calibration)

    def chunk_hours(self) -> float:
        return float(self.calibration_settings.chunk_hours or self.window_hours or 24.0)

    @classmethod
    def from_config(cls, drift: Mapping[str, Any] | None, drift_share: float = 0.3) -> DriftRules:
        """From ``MonitoringConfig.drift.model_dump()`` (or any dict with those keys)."""
        d = dict(drift or {})
        d.pop("predictions", None)  # monitoring.drift.predictions: the monitor's prediction drift, not a rule
        cols = {
            k: {kk: vv for kk, vv in dict(v).items() if vv is not None}
            for k, v in dict(d.pop("columns", {})).items()
        }
        known = {f for f in cls.__dataclass_fields__ if f not in ("drift_share", "columns")}
        unknown = sorted(set(d) - known)
        if unknown:
            raise DriftError(
                f"unknown drift setting(s) {unknown}; expected some of {sorted(known)} (monitoring.drift)."
            )
        return cls(drift_share=drift_share, columns=cols, **d)


def evaluate_drift(
    ref: ReferenceStats,
    cur: CurrentStats,
    numeric: Sequence[str],
    categorical: Sequence[str],
    rules: DriftRules,
    previous_means: Mapping[str, float | None] | None = None,
) -> tuple[dict[str, Any], Snapshot | None]:
    """The drift verdict of the window ``cur`` against the reference ``ref``.

    With calibrated thresholds (the default, ``rules.calibration``; the reference must carry them) a feature
    drifts when any of its checks exceeds its calibrated threshold
    (:func:`~mlops_provider.runtime.monitoring.verdict.judge_window`; ``previous_means`` are the previous
    window's means, for ``level_shift``); a column with a fixed ``threshold`` in ``rules.columns`` keeps
    Evidently's test. Without calibration (``method: none``, or too few reference chunks) Evidently's test
    decides every column. A categorical column also drifts when the share of values never seen in training
    reaches ``max_unseen_share``. Dataset drift holds when the share of drifted columns reaches
    ``drift_share``, or ``min_drifted_columns`` columns drift (default 1 with calibration: its false-alarm
    rate covers every feature), or any ``critical`` column drifts.
    """
    numeric, categorical = list(numeric), list(categorical)
    result = empty_result(
        n_reference=len(ref.sample),
        n_current=cur.n_total,
        drift_share=rules.drift_share,
        numeric=numeric,
        categorical=categorical,
    )
    result["n_reference_total"] = int(ref.n_total)
    result["n_sample"] = int(len(cur.sample))
    result["sampled"] = bool(len(cur.sample) < cur.n_total)
    skipped: dict[str, str] = {}
    settings = rules.calibration_settings
    base = cal.Calibration.from_dict(ref.calibration) if settings.enabled else None
    judge_nulls = base is not None and base.usable and "null_share" in settings.checks
    for col in [*numeric, *categorical]:
        r = ref.numeric.get(col) or ref.categorical.get(col) or {}
        if col in rules.exclude:
            skipped[col] = "excluded by monitoring.drift.exclude"
        elif r.get("n", 0) and r.get("nulls", 0) >= r.get("n", 0):
            skipped[col] = "all values null in the reference"
        elif (cur.columns[col].get("null_share") or 0) >= 1.0 or cur.sample[col].notna().sum() == 0:
            if judge_nulls and not rules.columns.get(col, {}).get("threshold"):
                continue  # a column gone all-null is a null burst the calibrated null_share check judges
            skipped[col] = "all values null in the current window"
    untestable = {c: why for c, why in skipped.items() if c not in rules.exclude}
    if untestable:
        log.warning("Skipping untestable column(s): %s", untestable)
    result["skipped_columns"] = skipped
    num_cols = [c for c in numeric if c not in skipped]
    cat_cols = [c for c in categorical if c not in skipped]
    if not num_cols and not cat_cols:
        result["status"] = "no_testable_columns"
        return result, None
    cols = num_cols + cat_cols

    calibration = rv.calibration_for(ref, cur.n_total, num_cols, cat_cols, seed=rules.seed) if base else None
    calibrated = calibration is not None and calibration.usable
    result["calibration"] = rv.calibration_summary(calibration)
    fixed = [c for c in cols if rules.columns.get(c, {}).get("threshold")] if calibrated else cols
    kwargs, per_method, per_threshold = _methods_for(rules, num_cols, cat_cols, len(cur.sample))
    methods: dict[str, Any] = dict(kwargs)
    if per_method or per_threshold:
        methods["per_column"] = {
            c: {"method": per_method.get(c), "threshold": per_threshold.get(c)}
            for c in sorted(set(per_method) | set(per_threshold))
        }
    if calibrated:
        methods["calibrated"] = {"statistic": settings.statistic, "checks": list(settings.checks),
                                 "columns": [c for c in cols if c not in fixed]}
    result["methods"] = methods or "evidently-default"
    evid_cols = cols if (rules.evidently_report or not calibrated) else fixed
    snapshot: Snapshot | None = None
    per_column: dict[str, dict[str, Any]] = {}
    # a column that went all-null cannot be tested by Evidently (it raises): the calibrated checks judge it
    evid_cols = [c for c in evid_cols if cur.sample[c].notna().any()]
    if evid_cols:
        snapshot, per_column = run_tests(ref, cur, [c for c in num_cols if c in evid_cols],
                                          [c for c in cat_cols if c in evid_cols], kwargs, per_method, per_threshold)
    judged = (
        rv.judge_window(ref, cur, [c for c in num_cols if c not in fixed], [c for c in cat_cols if c not in fixed],
                        calibration, previous_means) if calibrated and calibration is not None else {}
    )
    columns: dict[str, dict[str, Any]] = {}
    alarms: list[str] = []
    for c in cols:
        info = dict(per_column.get(c) or {"stattest": None, "score": None, "stattest_threshold": None, "drifted": False})
        method = per_method.get(c) or kwargs.get("num_method" if c in num_cols else "cat_method") or info["stattest"]
        info["method"] = method
        is_p = str(method) in P_VALUE_METHODS or "p_value" in str(info.get("stattest"))
        info["p_value"] = info["score"] if is_p else None
        info["distance"] = None if is_p else info["score"]
        info["evidently_drifted"] = info["drifted"] if c in per_column else None
        info.update({k: v for k, v in cur.columns[c].items() if k not in ("counts", "nulls")})
        if c in judged:
            j = judged[c]
            info.update(drifted=j["drifted"], judged_by="calibrated", calibrated=j["checks"], alarms=j["alarms"],
                        effect=j["effect"])
            if j.get("alarm_text"):
                alarms.append(j["alarm_text"])
        else:
            info["judged_by"] = "fixed"
        rule = rules.columns.get(c, {})
        unseen_bound = rule.get("max_unseen_share", rules.max_unseen_share)
        if c in cat_cols and unseen_bound and (info.get("unseen_share") or 0) >= unseen_bound:
            info["drifted"] = True
            info["unseen_flag"] = True
            if not info.get("alarms"):
                alarms.append(f"{c}: unseen share {info['unseen_share']:.3f} >= max_unseen_share {unseen_bound} "
                              f"{dict(list((info.get('unseen_values') or {}).items())[:5])}")
        columns[c] = info
    drifted = [c for c in cols if columns[c]["drifted"]]
    share = len(drifted) / len(cols)
    min_drifted = rules.min_drifted_columns or (1 if calibrated else None)
    reasons: list[str] = []
    if share >= rules.drift_share:
        reasons.append(f"share of drifted columns {share:.3f} >= {rules.drift_share}")
    if min_drifted and len(drifted) >= min_drifted:
        reasons.append(f"{len(drifted)} drifted column(s) >= min_drifted_columns={min_drifted}"
                       + (" (calibrated thresholds)" if calibrated and not rules.min_drifted_columns else ""))
    crit = [c for c in rules.critical if c in drifted]
    if crit:
        reasons.append(f"critical column(s) drifted: {crit}")
    result.update(
        columns=columns,
        drifted_columns=drifted,
        share=float(share),
        drift=bool(reasons),
        reasons=reasons,
        alarms=alarms,
        rule={
            "drift_share": rules.drift_share,
            "min_drifted_columns": min_drifted,
            "critical": list(rules.critical),
            "thresholds": "calibrated" if calibrated else "fixed",
        },
    )
    log.info("Drift share %.3f (threshold %.3f, %s thresholds) -> drift=%s; drifted columns: %s", share,
             rules.drift_share, result["rule"]["thresholds"], result["drift"], drifted)
    for line in alarms:
        log.info("  %s", line)
    return result, snapshot


def reference_timestamps(frame: pd.DataFrame) -> pd.Series | None:
    """The reference rows' event time (``event_timestamp`` of a snapshot, or ``timestamp``), if any."""
    for col in ("event_timestamp", "timestamp"):
        if col in frame.columns:
            return pd.to_datetime(frame[col], utc=True, errors="coerce").reset_index(drop=True)
    return None


def reference_statistics(
    reference: pd.DataFrame,
    numeric: Sequence[str],
    categorical: Sequence[str],
    rules: DriftRules,
    *,
    where: str = "the champion's snapshot",
) -> ReferenceStats:
    """Statistics + seeded sample of the reference frame (its monitored columns checked, rows required),
    and the drift thresholds calibrated on its chunks of ``rules.chunk_hours()`` (unless ``method: none``)."""
    _check_columns(reference, [*numeric, *categorical], "The reference (training snapshot)")
    if len(reference) == 0:
        raise DriftError(
            f"The reference (training split of {where}) has no rows; cannot compute drift. Retrain the "
            "champion on a non-empty snapshot."
        )
    prepared = _prepare(reference, numeric, categorical)
    settings = rules.calibration_settings
    ts = reference_timestamps(reference) if settings.enabled else None
    if ts is not None:
        prepared[cal.CHUNK_COLUMN] = cal.chunk_ids(ts, rules.chunk_hours())
    stats = reference_stats(
        prepared, numeric, categorical, max_rows=rules.reference_rows, seed=rules.seed, bins=rules.bins
    )
    if settings.enabled:
        calibration, _ = cal.calibrate(prepared, ts, numeric, categorical, stats.numeric, stats.categorical,
                                       settings, chunk_hours=rules.chunk_hours())
        stats.calibration = calibration.as_dict()
        log.info("Drift thresholds calibrated on %d reference chunk(s) of %g h (%s, k=%s): %s", calibration.n_chunks,
                 calibration.chunk_hours, calibration.status, calibration.k, calibration.warnings or "ok")
    return stats


def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    drift_share: float = 0.3,
    max_reference_rows: int = 50_000,
    seed: int = 0,
    rules: DriftRules | None = None,
    previous: pd.DataFrame | None = None,
) -> tuple[dict[str, Any], Snapshot | None]:
    """Drift of two in-memory frames; return ``(result dict, Evidently Snapshot or None)``.

    Same engine as the operator (the current frame goes through the streamed window path). The
    snapshot is ``None`` when nothing was computed (empty current window: ``status="no_traffic"``).
    ``previous``: the window before ``current`` (its means feed the calibrated ``level_shift`` check).
    Without ``rules.window_hours`` the calibration chunk is the current frame's time span rounded up
    (:func:`~mlops_provider.runtime.monitoring.calibration.natural_hours`).
    Raises :class:`DriftError` when a feature column is missing from either frame or the reference
    is empty.
    """
    numeric, categorical = list(numeric), list(categorical)
    rules = rules or DriftRules(drift_share=drift_share, reference_rows=max_reference_rows, seed=seed)
    if rules.window_hours is None and len(current):
        ts = _timestamps(current)
        rules = replace(rules, window_hours=cal.natural_hours((ts.max() - ts.min()) / pd.Timedelta(hours=1)))
    features = numeric + categorical
    if not features:
        raise DriftError("compute_drift: no feature columns given; pass model.features numeric/categorical.")
    if not 0 < rules.drift_share <= 1:
        raise DriftError(f"compute_drift: drift_share must be in (0, 1], got {rules.drift_share}.")
    if len(current) == 0:
        log.info("Current window is empty: no traffic, no drift computed.")
        return empty_result(
            status="no_traffic",
            n_reference=len(reference),
            n_current=0,
            drift_share=rules.drift_share,
            numeric=numeric,
            categorical=categorical,
        ), None
    _check_columns(reference, features, "The reference (training snapshot)")
    _check_columns(current, features, "The current window (inference log)")
    ref = reference_statistics(reference, numeric, categorical, rules)
    with tempfile.TemporaryDirectory(prefix="mlops-drift-") as tmp:
        win = frame_window(
            _prepare(current, numeric, categorical).assign(timestamp=_timestamps(current)), tmp
        )
        cur = stream_current(
            win,
            ref,
            numeric,
            categorical,
            sample_rows=rules.sample_rows,
            seed=rules.seed,
            stratify_by=[c for c in rules.stratify_by if c in current.columns],
        )
    prev = None
    if previous is not None and len(previous):
        prev = {c: _float(pd.to_numeric(previous[c], errors="coerce").mean()) for c in numeric if c in previous}
    return evaluate_drift(ref, cur, numeric, categorical, rules, previous_means=prev)


def _timestamps(frame: pd.DataFrame) -> pd.Series:
    for col in ("timestamp", "event_timestamp"):
        if col in frame.columns:
            ts = pd.to_datetime(frame[col], utc=True, errors="coerce")
            return ts.fillna(pd.Timestamp("1970-01-01", tz="UTC")).reset_index(drop=True)
    return pd.Series(pd.Timestamp("1970-01-01", tz="UTC"), index=range(len(frame)))


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    drift_share: float = 0.3,
    max_reference_rows: int = 50_000,
    seed: int = 0,
    rules: DriftRules | None = None,
    previous: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Drift of ``current`` vs ``reference`` as a JSON-serialisable dict (see :func:`drift_report`).

    ``{"drift": bool, "status": "ok"|"no_traffic"|"no_testable_columns", "drifted_columns": [...],
    "share": float, "threshold": float, "n_reference": int, "n_current": int, "reasons": [...],
    "columns": {col: {"stattest", "method", "score", "p_value", "distance", "stattest_threshold",
    "drifted", "psi" | "js_distance", "null_share", "unseen_share", ...}}, "skipped_columns": {...},
    "methods": ..., "numeric": [...], "categorical": [...]}``
    """
    result, _ = drift_report(
        reference,
        current,
        numeric,
        categorical,
        drift_share=drift_share,
        max_reference_rows=max_reference_rows,
        seed=seed,
        rules=rules,
        previous=previous,
    )
    return result

