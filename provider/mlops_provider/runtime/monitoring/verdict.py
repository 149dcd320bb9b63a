"""The calibrated drift verdict of one window (runtime module).

:func:`judge_window` computes every calibrated check of every feature on the streamed window statistics
(:class:`~mlops_provider.runtime.monitoring.statistics.CurrentStats`) against the thresholds of the reference
(:mod:`~mlops_provider.runtime.monitoring.calibration`), and names each drifted feature with the statistic
that fired, its threshold and the effect behind it (how far the mean moved, the null share, the unseen
categories ...), so an alert says what changed, not only that something did.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mlops_provider.runtime.monitoring import calibration as cal
from mlops_provider.runtime.monitoring.statistics import CurrentStats, ReferenceStats

log = logging.getLogger(__name__)

#: A window with fewer rows than this share of the reference chunks' median is judged against thresholds
#: recalibrated at its size (smaller samples are noisier).
RESIZE_BELOW = 0.5


def _share(part: float, whole: float) -> float | None:
    return float(part / whole) if whole else None


def numeric_effect(ref: Mapping[str, Any], cur: Mapping[str, Any], mode: float | None,
                   previous_mean: float | None) -> dict[str, Any]:
    mean, ref_mean, std = cur.get("mean"), ref.get("mean"), ref.get("std")
    return {
        "mean": mean,
        "reference_mean": ref_mean,
        "mean_shift_std": (mean - ref_mean) / std if mean is not None and ref_mean is not None and std else None,
        "previous_mean": previous_mean,
        "null_share": cur.get("null_share"),
        "reference_null_share": _share(ref.get("nulls", 0), ref.get("n", 0)),
        "stuck": mode,
    }


def categorical_effect(ref: Mapping[str, Any], cur: Mapping[str, Any]) -> dict[str, Any]:
    counts: Mapping[str, int] = cur.get("counts") or {}
    n_cur = float(sum(counts.values()))
    n_ref = float(sum(ref["counts"].values()))
    changes: list[tuple[float, str, float, float]] = []
    for key in set(counts) | set(ref["counts"]):
        a, b = _share(counts.get(key, 0), n_cur), _share(ref["counts"].get(key, 0), n_ref)
        if a is not None and b is not None:
            changes.append((-abs(a - b), str(key), a, b))
    changes.sort()
    largest = [{"value": k, "share": a, "reference_share": b} for _, k, a, b in changes[:3]]
    return {
        "unseen_share": cur.get("unseen_share"),
        "unseen_values": dict(list((cur.get("unseen_values") or {}).items())[:5]),
        "largest_changes": largest,
        "null_share": cur.get("null_share"),
        "reference_null_share": _share(ref.get("nulls", 0), ref.get("n", 0)),
    }


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.4g}" if isinstance(v, (int, float)) else str(v)


def alarm_text(col: str, verdict: Mapping[str, Any], effect: Mapping[str, Any], statistic: str) -> str:
    """``temp: level_shift 2.81 > 1.43 (z 12.1): mean 24.1 (previous window 75.3, reference 52.0)``."""
    parts = []
    for check in verdict["alarms"]:
        r = verdict["checks"][check]
        name = f"{statistic} distance" if check == "distance" else check
        parts.append(f"{name} {_fmt(r['value'])} > {_fmt(r['threshold'])} (z {_fmt(r['z'])})")
    if "unseen_share" in effect:
        top = effect.get("largest_changes") or []
        what = "; ".join(f"{c['value']} {c['reference_share']:.1%} -> {c['share']:.1%}" for c in top)
        detail = f"unseen share {_fmt(effect.get('unseen_share'))} {effect.get('unseen_values') or ''}; {what}"
    else:
        detail = (f"mean {_fmt(effect.get('mean'))} (previous window {_fmt(effect.get('previous_mean'))}, reference "
                  f"{_fmt(effect.get('reference_mean'))}); constant {bool(effect.get('stuck'))}")
    detail += (f"; nulls {_fmt(effect.get('null_share'))} (reference {_fmt(effect.get('reference_null_share'))})")
    return f"{col}: {', '.join(parts)}: {detail}"


def calibration_for(ref: ReferenceStats, n_rows: int, numeric: Sequence[str], categorical: Sequence[str],
                    seed: int = 0) -> cal.Calibration | None:
    """The reference's calibration, recalibrated at the window's size when the window is much smaller."""
    base = cal.Calibration.from_dict(ref.calibration)
    if base is None or not base.usable:
        return base
    if n_rows >= RESIZE_BELOW * base.chunk_rows_median:
        return base
    small = cal.resized(ref.sample, n_rows, numeric, categorical, ref.numeric, ref.categorical, base, seed=seed)
    if small is None:
        base.warnings.append(f"the window has {n_rows} rows, fewer than half the reference chunks' "
                             f"{base.chunk_rows_median:.0f}, and the reference sample has too few chunks that large "
                             "to recalibrate: expect more false alarms")
        return base
    log.info("Window of %d rows: thresholds recalibrated on %d reference-sample chunks of that size", n_rows,
             small.n_chunks)
    return small


def judge_window(ref: ReferenceStats, cur: CurrentStats, numeric: Sequence[str], categorical: Sequence[str],
                 calibration: cal.Calibration, previous_means: Mapping[str, float | None] | None = None,
                 ) -> dict[str, dict[str, Any]]:
    """``{feature: {"drifted", "checks", "alarms", "effect", "alarm_text"}}`` for the window ``cur``."""
    settings = cal.Settings.from_config(calibration.settings)
    previous_means = previous_means or {}
    values: dict[str, dict[str, float | None]] = {}
    effects: dict[str, dict[str, Any]] = {}
    for col in numeric:
        stats = cur.columns[col]
        sample = np.asarray(cur.sample[col], dtype="float64") if col in cur.sample else np.array([])
        mode = cal.stuck(sample)
        values[col] = cal.numeric_checks(ref.numeric[col], np.asarray(stats["counts"], dtype="float64"),
                                         statistic=settings.statistic, mean=stats.get("mean"), stuck=mode,
                                         previous_mean=previous_means.get(col))
        effects[col] = numeric_effect(ref.numeric[col], stats, mode, previous_means.get(col))
    for col in categorical:
        stats = cur.columns[col]
        values[col] = cal.categorical_checks(ref.categorical[col], stats.get("counts") or {},
                                             int(stats.get("nulls") or 0), statistic=settings.statistic)
        effects[col] = categorical_effect(ref.categorical[col], stats)
    judged = cal.judge(calibration, values)
    out: dict[str, dict[str, Any]] = {}
    for col, verdict in judged.items():
        out[col] = {**verdict, "drifted": bool(verdict["alarms"]), "effect": effects[col]}
        if verdict["alarms"]:
            out[col]["alarm_text"] = alarm_text(col, verdict, effects[col], settings.statistic)
    return out


def calibration_summary(c: cal.Calibration | None) -> dict[str, Any] | None:
    """What the result (and XCom) says about the thresholds in use."""
    if c is None:
        return None
    return {
        "status": c.status,
        "method": c.settings.get("method"),
        "statistic": c.settings.get("statistic"),
        "false_alarm_rate": c.settings.get("false_alarm_rate"),
        "k": c.k,
        "k_normal": c.k_normal,
        "k_reference": c.k_reference,
        "reference_false_alarm_rate": c.reference_false_alarm_rate,
        "tests": c.tests,
        "chunk_hours": c.chunk_hours,
        "n_chunks": c.n_chunks,
        "chunk_rows_median": c.chunk_rows_median,
        "resized_to": c.resized_to,
        "warnings": list(c.warnings),
    }


__all__ = ["alarm_text", "calibration_for", "calibration_summary", "judge_window"]
