"""The gate's check records, the significance rule and the decision (runtime module).

A check is ``{"name", "kind", "value", "bound", "passed", "direction", ...}``: the measured value, the
bound it had to meet and which side is good (``>=`` for higher-is-better metrics, ``<=`` otherwise;
a "floor" of a lower-is-better metric is a ceiling). Kinds: ``floor`` (absolute), ``regression`` and
``guard`` (against the champion, :func:`comparison_checks`), ``slice`` (:mod:`.slices`), ``behavioral``
(:mod:`.behavioral`), ``calibration`` and ``latency``. :func:`decide` marks which checks are enforced and
turns them into the verdict's decision.

The comparison with the champion (primary metric: ``regression.<metric>``; every guard metric:
``guard.<metric>``; any other metric ``gate.max_regression`` names: ``regression.<metric>``) is a paired
bootstrap on the evaluation rows. With ``d = challenger - champion`` resampled ``gate.bootstrap.samples``
times on the same rows for both models, ``[lo, hi]`` its percentile interval at ``gate.bootstrap.confidence``
(two-sided) and ``tol = gate.max_regression.get(metric, 0)``, the check fails only when the challenger is
*significantly* worse by more than the tolerance:

- higher-is-better metric: fails when ``hi < -tol`` (value = ``hi``, bound = ``-tol``, direction ``>=``);
- lower-is-better metric: fails when ``lo > tol`` (value = ``lo``, bound = ``tol``, direction ``<=``).

So a challenger whose interval still reaches "no worse than the tolerance" passes; one whose whole interval
lies on the worse side is rejected, with the delta and its interval in the check's ``message``. How small a
difference the window can resolve is :func:`power_statement` (stated in every verdict).

Metric names and directions come from the light module :mod:`mlops_provider.tasks`.
"""

from __future__ import annotations

import math
from typing import Any

from mlops_provider.exceptions import ConfigError
from mlops_provider.runtime.metrics import detectable_difference
from mlops_provider.tasks import GATE_METRICS, higher_is_better

#: metric -> True when higher is better (binary; other tasks: ``tasks.higher_is_better``)
HIGHER_IS_BETTER = dict(GATE_METRICS)


def check(name: str, value: float, bound: float, higher_is_better: bool, kind: str, **extra: Any) -> dict[str, Any]:
    """One check record; a non-finite value never passes."""
    passed = math.isfinite(value) and (value >= bound if higher_is_better else value <= bound)
    return {
        "name": name,
        "kind": kind,
        "value": float(value),
        "bound": float(bound),
        "passed": bool(passed),
        "direction": ">=" if higher_is_better else "<=",
        **extra,
    }


def _direction(task: str, metric: str) -> bool:
    try:
        return higher_is_better(task, metric)
    except ValueError as e:
        raise ConfigError(f"gate: {e}") from None


def floor_checks(task: str, metrics: dict[str, float], floors: dict[str, float]) -> list[dict[str, Any]]:
    """``floor.<metric>`` per absolute bound (a ceiling for lower-is-better metrics)."""
    return [check(f"floor.{m}", metrics.get(m, math.nan), bound, _direction(task, m), "floor")
            for m, bound in sorted(floors.items())]


def comparison_checks(
    task: str,
    challenger: dict[str, float],
    champion: dict[str, float],
    delta_ci: dict[str, list[float]],
    *,
    primary: str,
    guards: list[str],
    max_regression: dict[str, float],
    confidence: float,
) -> list[dict[str, Any]]:
    """The paired-bootstrap significance checks against the champion (see the module doc)."""
    compared = [(primary, "regression"), *[(g, "guard") for g in guards if g != primary]]
    compared += [(m, "regression") for m in sorted(max_regression) if m != primary and m not in guards]
    out = []
    for metric, kind in compared:
        hib = _direction(task, metric)
        tol = float(max_regression.get(metric, 0.0))
        lo, hi = (float(v) for v in delta_ci.get(metric, [math.nan, math.nan]))
        delta = challenger.get(metric, math.nan) - champion.get(metric, math.nan)
        value, bound = (hi, -tol) if hib else (lo, tol)
        worse = "below" if hib else "above"
        record = check(f"{kind}.{metric}", value, bound, hib, kind, metric=metric, delta=delta, ci=[lo, hi],
                       tolerance=tol, champion=champion.get(metric), challenger=challenger.get(metric),
                       guard=kind == "guard")
        span = f"challenger - champion = {delta:+.4f}, {confidence:.0%} CI [{lo:+.4f}, {hi:+.4f}]"
        record["message"] = (
            f"{metric} {span}: not significantly worse than the tolerance {bound:+.4f}" if record["passed"]
            else f"{metric} significantly worse: {span} lies entirely {worse} the tolerance {bound:+.4f}"
        )
        out.append(record)
    return out


def power_statement(se: float, *, metric: str, rows: int, confidence: float, power: float, basis: str) -> dict[str, Any]:
    """The gate's power statement: the smallest true difference of ``metric`` a two-sided test at level
    ``1 - confidence`` detects with probability ``power`` on this window, ``mde = (z_{(1+confidence)/2} +
    z_power) * se`` (2.80 x se at 95 % / 80 %), ``se`` the bootstrap standard deviation of challenger -
    champion (``basis`` "paired"), or sqrt(2) x that of the challenger's metric when there is no champion to
    pair with (``basis`` "unpaired estimate")."""
    mde = detectable_difference(se, confidence=confidence, power=power)
    statement = (
        f"with {rows} evaluation rows the gate detects a true {metric} difference of {mde:.4f} or more with "
        f"{power:.0%} power (two-sided, {confidence:.0%}; {basis} standard error {se:.4f}); smaller regressions "
        "can pass unnoticed" if math.isfinite(mde) else f"the {metric} difference's standard error is unknown"
    )
    return {"metric": metric, "rows": rows, "se": se, "mde": mde, "confidence": confidence, "power": power,
            "basis": basis, "statement": statement}


def validate_metric_keys(
    primary_metric: str, floors: dict[str, float], max_regression: dict[str, float], task: str = "binary"
) -> None:
    """Named :class:`ConfigError` for a metric the gate does not compute (checked before any work)."""
    for key, metrics in (
        ("gate.primary_metric", [primary_metric]),
        ("gate.floors", list(floors)),
        ("gate.max_regression", list(max_regression)),
    ):
        for metric in metrics:
            try:
                higher_is_better(task, metric)
            except ValueError:
                raise ConfigError(f"gate: key {key!r}: unknown metric {metric!r} for task {task}.") from None


def behavioral_checks(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The behavioral test results as checks (their example cases stay in the verdict's ``behavioral``)."""
    return [{k: v for k, v in r.items() if k not in ("cases",)} | {"direction": ">="} for r in results]


def calibration_checks(ece: float, champion_ece: float | None, calibration: dict[str, Any]) -> list[dict[str, Any]]:
    """``calibration.ece`` against ``max_ece`` and, with a champion and ``max_regression``, the ECE regression."""
    checks = [check("calibration.ece", ece, float(calibration["max_ece"]), False, "calibration")]
    if champion_ece is not None and calibration["max_regression"] is not None:
        checks.append(
            check(
                "calibration.ece_regression",
                ece,
                champion_ece + float(calibration["max_regression"]),
                False,
                "calibration",
                champion=champion_ece,
            )
        )
    return checks


def latency_checks(median_ms: dict[str, float], latency: dict[str, Any]) -> list[dict[str, Any]]:
    """``latency.median_ms`` against ``max_ms`` and ``latency.ratio`` (challenger / champion) against ``max_ratio``."""
    checks = []
    if latency["max_ms"] is not None:
        checks.append(check("latency.median_ms", median_ms["challenger"], float(latency["max_ms"]), False, "latency"))
    if latency["max_ratio"] is not None and "champion" in median_ms:
        checks.append(
            check(
                "latency.ratio",
                median_ms["challenger"] / median_ms["champion"],
                float(latency["max_ratio"]),
                False,
                "latency",
                champion_ms=median_ms["champion"],
            )
        )
    return checks


def decide(verdict: dict[str, Any], checks: list[dict[str, Any]], *, floors_only: bool) -> None:
    """Mark the enforced checks and set ``checks`` / ``decision`` / ``failed`` / ``advisory_failed`` on ``verdict``.

    ``floors_only`` (a first run without a champion, ``gate.first_run: floors``): only the floors decide; the
    other absolute checks are computed and reported as advisory.
    """
    for c in checks:
        c["enforced"] = not floors_only or c["kind"] == "floor" or c["name"].endswith(".floor")
    verdict["checks"] = checks
    verdict["decision"] = "promote" if all(c["passed"] for c in checks if c["enforced"]) else "reject"
    verdict["failed"] = [c["name"] for c in checks if c["enforced"] and not c["passed"]]
    verdict["advisory_failed"] = [c["name"] for c in checks if not c["enforced"] and not c["passed"]]


__all__ = [
    "HIGHER_IS_BETTER",
    "behavioral_checks",
    "calibration_checks",
    "check",
    "comparison_checks",
    "decide",
    "floor_checks",
    "latency_checks",
    "power_statement",
    "validate_metric_keys",
]
