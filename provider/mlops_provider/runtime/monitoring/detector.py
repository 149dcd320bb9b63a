"""A sequential detector over daily performance, calibrated on reference days (runtime module).

A day of the example's traffic has a realized ROC AUC of about 0.72 +- 0.07 (FIELD-NOTES): a fixed bound of
0.05 below the champion's validation score fires on ordinary days, and a sustained decline of 0.04 hides in
that noise day by day. Accumulated evidence finds it:

* **CUSUM** (default): with ``z_t`` the day's shortfall in reference standard deviations (``(mean - value) /
  std`` for higher-is-better metrics: ROC AUC, accuracy, macro-F1, R²; ``(value - mean) / std`` for the others:
  log loss, Brier, ECE, RMSE, MAE), ``S_t = max(0, S_{t-1} + z_t - k)`` with ``k = shift / (2 std)`` (half the
  shift the detector is tuned to), alarm when ``S_t > h``;
* **EWMA**: ``E_t = lambda z_t + (1 - lambda) E_{t-1}``, alarm when ``E_t > h``.

The metric is the champion's task's primary by default (binary ROC AUC, multiclass log loss, regression
RMSE; ``monitoring.performance.detector.metric``), the shift 0.04 for unit-free metrics and one reference
standard deviation for RMSE / MAE (their unit is the label's).

Calibration: the reference days are the champion's validation and evaluation days, scored by the champion
(:func:`~mlops_provider.runtime.monitoring.live.reference_performance`). Their mean and standard deviation
standardise the days, and the limit ``h`` is the ``1 - false_alarm_rate`` quantile of the largest statistic
over ``horizon_days`` simulated in-control days: each simulated series resamples the reference days'
standardised values (smoothed bootstrap, so tails are not cut at the observed extremes) and shifts all of
them by one draw of the error of a mean estimated from ``n`` days (``N(0, 1/n)``) and scales them by one draw
of the error of the estimated standard deviation (``sqrt((n - 1) / chi2(n - 1))``), so a short reference widens
the limit instead of raising false alarms. Seeded: the same reference gives the same limit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlops_provider.specs import LIVE_METRIC_DIRECTIONS

#: metrics where a higher value is better (every task's live metrics)
HIGHER_IS_BETTER = dict(LIVE_METRIC_DIRECTIONS)
SIMULATIONS = 4000
#: the shift the detector is tuned to when ``shift`` is unset, for metrics without a unit
DEFAULT_SHIFT = 0.04
#: metrics in the label's unit: their default shift is one reference standard deviation
SCALED_METRICS = ("rmse", "mae")


@dataclass(frozen=True)
class DetectorSettings:
    """``monitoring.performance.detector`` (see :class:`mlops_provider.specs.PerformanceDetector`), resolved
    for the champion's task by :meth:`for_task` (the metric defaults to the task's primary)."""

    method: str = "cusum"
    metric: str = "roc_auc"
    shift: float | None = None
    false_alarm_rate: float = 0.05
    horizon_days: int = 30
    ewma_lambda: float = 0.2
    min_reference_days: int = 7
    min_day_rows: int = 100
    use_estimated: bool = False

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> DetectorSettings:
        return cls(**{k: v for k, v in dict(cfg or {}).items() if k in cls.__dataclass_fields__ and v is not None})

    @classmethod
    def for_task(cls, cfg: Mapping[str, Any] | None, metrics: Mapping[str, bool], primary: str
                 ) -> tuple[DetectorSettings, str | None]:
        """The settings for a task with live ``metrics`` and ``primary`` metric: an unset metric is the primary;
        a metric the task has not falls back to it, with a note (the second value)."""
        d = {k: v for k, v in dict(cfg or {}).items() if k in cls.__dataclass_fields__ and v is not None}
        note = None
        if d.get("metric") not in metrics:
            if d.get("metric"):
                note = f"detector metric {d['metric']!r} is not a metric of this task {sorted(metrics)}: {primary} used"
            d["metric"] = primary
        return cls(**d), note

    def shift_for(self, std: float) -> float:
        """The shift in metric units: ``shift``, else :data:`DEFAULT_SHIFT`, or one reference standard
        deviation for a metric in the label's unit (:data:`SCALED_METRICS`)."""
        if self.shift is not None:
            return float(self.shift)
        return float(std) if self.metric in SCALED_METRICS else DEFAULT_SHIFT


def shortfall(values: np.ndarray, mean: float, std: float, metric: str) -> np.ndarray:
    """Standardised shortfall: positive when the metric is worse than the reference mean."""
    z = (np.asarray(values, dtype="float64") - mean) / std
    return -z if HIGHER_IS_BETTER.get(metric, True) else z


def _paths(z: np.ndarray, settings: DetectorSettings, k: float) -> np.ndarray:
    """The detector statistic along each row of ``z`` (rows: series, columns: days)."""
    out = np.zeros_like(z)
    s = np.zeros(z.shape[0])
    for t in range(z.shape[1]):
        if settings.method == "ewma":
            s = settings.ewma_lambda * z[:, t] + (1 - settings.ewma_lambda) * s
        else:
            s = np.maximum(0.0, s + z[:, t] - k)
        out[:, t] = s
    return out


def calibrate(reference_values: Sequence[float | None], settings: DetectorSettings, *, seed: int = 0) -> dict[str, Any]:
    """Mean, std, reference value ``k`` and limit ``h`` of the detector from the reference days' metric."""
    vals = np.asarray([v for v in reference_values if v is not None and math.isfinite(v)], dtype="float64")
    out: dict[str, Any] = {"method": settings.method, "metric": settings.metric, "reference_days": int(vals.size)}
    if settings.method == "none":
        return out | {"status": "disabled"}
    if vals.size < settings.min_reference_days:
        return out | {"status": "uncalibrated",
                      "why": f"{vals.size} scored reference day(s) < min_reference_days={settings.min_reference_days}"}
    mean, std = float(vals.mean()), float(vals.std(ddof=1))
    if not std > 0:
        return out | {"status": "uncalibrated", "why": "the reference days' metric does not vary"}
    z_ref = shortfall(vals, mean, std, settings.metric)
    rng = np.random.default_rng(seed)
    n, horizon = vals.size, int(settings.horizon_days)
    bandwidth = 1.06 * n ** (-1 / 5)  # Silverman's rule for unit variance
    draws = rng.choice(z_ref, size=(SIMULATIONS, horizon)) + rng.normal(0, bandwidth, (SIMULATIONS, horizon))
    draws /= math.sqrt(1 + bandwidth**2)  # back to unit variance
    draws += rng.normal(0, 1 / math.sqrt(n), (SIMULATIONS, 1))  # the reference mean is itself an estimate ...
    draws *= np.sqrt((n - 1) / rng.chisquare(n - 1, (SIMULATIONS, 1)))  # ... and so is its std
    shift = settings.shift_for(std)
    k = shift / (2 * std)
    h = float(np.quantile(_paths(draws, settings, k).max(axis=1), 1 - settings.false_alarm_rate))
    return out | {"status": "ok", "mean": mean, "std": std, "k": float(k) if settings.method == "cusum" else None,
                  "h": h, "horizon_days": horizon, "false_alarm_rate": settings.false_alarm_rate,
                  "shift": shift, "higher_is_better": HIGHER_IS_BETTER.get(settings.metric, True)}


def run(days: Sequence[Mapping[str, Any]], calibration: Mapping[str, Any], settings: DetectorSettings,
        *, series: str = "realized") -> dict[str, Any]:
    """The detector over ``days`` (``[{"day", "value", "n"}]`` in order): its path, current state and alarm."""
    state: dict[str, Any] = {"series": series, "method": settings.method, "metric": settings.metric,
                             "status": calibration.get("status"), "alarm": False, "alarm_day": None,
                             "statistic": None, "limit": calibration.get("h"), "days": []}
    if calibration.get("status") != "ok":
        state["why"] = calibration.get("why") or "detector not calibrated"
        return state
    used = [d for d in days if d.get("value") is not None and (d.get("n") or 0) >= settings.min_day_rows]
    if not used:
        state["why"] = f"no day with >= {settings.min_day_rows} rows yet"
        return state
    z = shortfall(np.array([d["value"] for d in used]), calibration["mean"], calibration["std"], settings.metric)
    path = _paths(z[None, :], settings, float(calibration.get("k") or 0.0))[0]
    for d, zi, si in zip(used, z, path, strict=True):
        alarm = bool(si > calibration["h"])
        state["days"].append({"day": d["day"], "value": d["value"], "n": d.get("n"), "z": float(zi),
                              "statistic": float(si), "alarm": alarm})
        if alarm and state["alarm_day"] is None:
            state["alarm_day"] = d["day"]
    state["statistic"] = float(path[-1])
    state["alarm"] = bool(path[-1] > calibration["h"])  # the current state decides; alarm_day is the first crossing
    if state["alarm"]:
        state["why"] = (f"{settings.method} of daily {settings.metric} shortfall {path[-1]:.2f} > limit "
                        f"{calibration['h']:.2f} (reference {calibration['mean']:.4f} +- {calibration['std']:.4f} over "
                        f"{calibration['reference_days']} days; first crossing {state['alarm_day']})")
    return state


__all__ = ["DetectorSettings", "calibrate", "run", "shortfall"]
