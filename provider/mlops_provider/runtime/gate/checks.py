"""The gate's check records and the decision (runtime module).

A check is ``{"name", "kind", "value", "bound", "passed", "direction", ...}``: the measured value, the
bound it had to meet and which side is good (``>=`` for higher-is-better metrics, ``<=`` otherwise;
a "floor" of a lower-is-better metric is a ceiling). Kinds: ``floor`` (absolute), ``regression``
(against the champion), ``slice`` (:mod:`.slices`), ``behavioral`` (:mod:`.behavioral`),
``calibration`` and ``latency``. :func:`decide` marks which checks are enforced and turns them into
the verdict's decision.

Metric names and directions come from the light module :mod:`mlops_provider.tasks` (``GATE_METRICS``).
"""

from __future__ import annotations

import math
from typing import Any

from mlops_provider.exceptions import ConfigError
from mlops_provider.tasks import GATE_METRICS

#: metric -> True when higher is better
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


def validate_metric_keys(primary_metric: str, floors: dict[str, float], max_regression: dict[str, float]) -> None:
    """Named :class:`ConfigError` for a metric the gate does not compute (checked before any work)."""
    for key, metrics in (
        ("gate.primary_metric", [primary_metric]),
        ("gate.floors", list(floors)),
        ("gate.max_regression", list(max_regression)),
    ):
        for metric in metrics:
            if metric not in HIGHER_IS_BETTER:
                raise ConfigError(
                    f"gate: key {key!r}: unknown metric {metric!r}; supported: {sorted(HIGHER_IS_BETTER)}."
                )


def build_checks(
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    primary_metric: str,
    floors: dict[str, float],
    max_regression: dict[str, float],
) -> list[dict[str, Any]]:
    """Floor checks (absolute) always; regression checks against the champion when there is one.

    For lower-is-better metrics (log_loss, brier) a "floor" is a ceiling. The primary metric always gets
    a regression check (tolerance 0 unless ``max_regression`` names it).
    """
    validate_metric_keys(primary_metric, floors, max_regression)
    checks = [
        check(f"floor.{m}", challenger[m], bound, HIGHER_IS_BETTER[m], "floor")
        for m, bound in sorted(floors.items())
    ]
    if champion is not None:
        tolerances = {primary_metric: 0.0, **max_regression}
        for m, tol in sorted(tolerances.items()):
            hib = HIGHER_IS_BETTER[m]
            bound = champion[m] - tol if hib else champion[m] + tol
            checks.append(check(f"regression.{m}", challenger[m], bound, hib, "regression", champion=champion[m]))
    return checks


def behavioral_checks(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The behavioral test results as checks (their example cases stay in the verdict's ``behavioral``)."""
    return [{k: v for k, v in r.items() if k not in ("cases",)} | {"direction": ">="} for r in results]


def calibration_checks(ece: float, champion_ece: float | None, calibration: dict[str, Any]) -> list[dict[str, Any]]:
    """``calibration.ece`` against ``max_ece`` and, with a champion and ``max_regression``, the ECE regression."""
    checks = [check("calibration.ece", ece, float(calibration.get("max_ece", 0.1)), False, "calibration")]
    if champion_ece is not None and calibration.get("max_regression") is not None:
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
    if latency.get("max_ms") is not None:
        checks.append(check("latency.median_ms", median_ms["challenger"], float(latency["max_ms"]), False, "latency"))
    if latency.get("max_ratio") is not None and "champion" in median_ms:
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
    "build_checks",
    "calibration_checks",
    "check",
    "decide",
    "latency_checks",
    "validate_metric_keys",
]
