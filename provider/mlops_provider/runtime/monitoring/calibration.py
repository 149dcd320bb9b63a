"""Drift thresholds calibrated on the reference period, per feature and per check (runtime module).

NannyML's recipe (FIELD-NOTES): cut the reference (the champion's training split) into chunks of the
monitoring window's length, compute each statistic on every chunk against the whole reference, and put
the threshold where a chunk's value would be a false alarm at the chosen rate. Effect sizes, never
p-values: at the size of a day of traffic a KS p-value flags every day (a single day of weather is never
distributed like five months).

Checks (``monitoring.drift.calibration.checks``), each a statistic of one window:

* ``distance``    - distance of the window's distribution to the reference's: Jensen-Shannon (default),
  Hellinger or PSI on the reference's quantile bins plus a null bin (numeric) or on the categories plus
  unseen ones and a null bin (categorical); or Wasserstein on the quantile bins, in reference standard
  deviations (numeric);
* ``null_share``  - share of nulls (a null burst);
* ``stuck``       - 1.0 when every non-null value of the window is the same, else 0.0 (numeric: a sensor stuck
  at one value). Calibrated like the others, so a feature that is sometimes constant over a whole reference
  window (precipitation on a dry day) never alarms, and one that never was alarms at once. Softer measures
  (the most frequent value's share, the entropy, the number of distinct values) move on coincidences: two
  categories with the same weekly count, half a day of missing readings. A sensor stuck for part of the
  window is not what this check finds;
* ``level_shift`` - change of the mean since the previous window, in reference standard deviations
  (numeric: a unit change; calibrated on consecutive reference chunks). A feature whose days are
  concentrated (hourly weather) sits far from a five-month reference every day, so only a change
  relative to yesterday shows a °F -> °C switch.

Thresholds (``method``): ``std`` is mean + k x std of the chunk values, never below the largest reference
chunk value (``at_least_reference_max``: heavy-tailed statistics such as a rainy day's precipitation would
otherwise alarm); share statistics get a binomial floor on their standard deviation. ``false_alarm_rate`` is
the chance that a window without drift raises *any* alarm, over every feature x check, and k is the stricter
of two ways to reach it: the normal quantile of ``1 - false_alarm_rate / m`` (m tests, Bonferroni), and the
smallest k at which at most that share of the reference chunks, each judged against thresholds from the
others (leave-one-out), raise an alarm - the second sees the heavy tails and the correlation between checks
that the first assumes away. ``k`` given explicitly (NannyML uses 3) replaces both. ``quantile`` takes the empirical ``1 - false_alarm_rate / m`` quantile. Fewer than
``min_chunks`` chunks warn; fewer than 3 fall back to fixed thresholds.

A window much smaller than the reference chunks (sampled logging) is judged against thresholds
recalibrated on chunks of the reference sample cut to its size (:func:`resized`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

CHECKS = ("distance", "null_share", "stuck", "level_shift")
NUMERIC_CHECKS = CHECKS
CATEGORICAL_CHECKS = ("distance", "null_share")
#: column of the reference sample holding each row's chunk id (-1: outside any usable chunk)
CHUNK_COLUMN = "__chunk__"
NULL_KEY = "__null__"
EPS = 1e-4


@dataclass(frozen=True)
class Settings:
    """``monitoring.drift.calibration`` (see :class:`mlops_provider.specs.DriftCalibration`)."""

    method: str = "std"
    false_alarm_rate: float = 0.05
    k: float | None = None
    statistic: str = "jensenshannon"
    checks: Sequence[str] = CHECKS
    chunk_hours: float | None = None
    min_chunks: int = 6
    min_chunk_rows: int = 100
    at_least_reference_max: bool = True

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> Settings:
        d = {k: v for k, v in dict(cfg or {}).items() if k in cls.__dataclass_fields__}
        if "checks" in d:
            d["checks"] = tuple(d["checks"])
        return cls(**d)

    @property
    def enabled(self) -> bool:
        return self.method != "none"


# ------------------------------------------------------------------------------------- distances
def _probs(counts: np.ndarray) -> np.ndarray | None:
    total = counts.sum()
    return None if total <= 0 else counts / total


def distance(statistic: str, ref_counts: np.ndarray, cur_counts: np.ndarray, *, widths: np.ndarray | None = None,
             ref_std: float | None = None) -> float | None:
    """Distance between two count vectors over the same bins (None when either is empty).

    ``wasserstein`` needs the bins' ``widths`` (the last bin of the vectors, nulls, is left out) and divides
    by ``ref_std``.
    """
    r = np.asarray(ref_counts, dtype="float64")
    c = np.asarray(cur_counts, dtype="float64")
    if statistic == "wasserstein":
        if widths is None or not ref_std:
            statistic = "jensenshannon"
        else:
            p, q = _probs(r[:-1]), _probs(c[:-1])
            if p is None or q is None:
                return None
            d = np.abs(np.cumsum(p) - np.cumsum(q))  # CDFs at the bins' upper edges
            lower = np.concatenate([[0.0], d[:-1]])
            return float(np.sum(0.5 * (lower + d) * widths) / ref_std)
    p, q = _probs(r), _probs(c)
    if p is None or q is None:
        return None
    if statistic == "hellinger":
        return float(math.sqrt(max(0.0, 1.0 - float(np.sum(np.sqrt(p * q))))))
    if statistic == "psi":
        pp, qq = np.clip(p, EPS, None), np.clip(q, EPS, None)
        return float(np.sum((qq - pp) * np.log(qq / pp)))
    m = (p + q) / 2
    nz_p, nz_q = p > 0, q > 0
    kl_p = float(np.sum(p[nz_p] * np.log2(p[nz_p] / m[nz_p])))
    kl_q = float(np.sum(q[nz_q] * np.log2(q[nz_q] / m[nz_q])))
    return float(math.sqrt(max(0.0, (kl_p + kl_q) / 2)))


def numeric_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts over the reference's quantile bins, then one null (non-finite) bin."""
    fin = np.isfinite(values)
    idx = np.searchsorted(edges, values[fin], side="right")
    return np.append(np.bincount(idx, minlength=len(edges) + 1), int((~fin).sum())).astype("int64")


def categorical_vectors(ref_counts: Mapping[str, int], ref_nulls: int, cur_counts: Mapping[str, int],
                        cur_nulls: int) -> tuple[np.ndarray, np.ndarray]:
    """Aligned count vectors: the reference's categories, then categories it never saw, then nulls."""
    keys = sorted(ref_counts) + sorted(k for k in cur_counts if k not in ref_counts)
    r = np.array([ref_counts.get(k, 0) for k in keys] + [ref_nulls], dtype="float64")
    c = np.array([cur_counts.get(k, 0) for k in keys] + [cur_nulls], dtype="float64")
    return r, c


def bin_widths(edges: Sequence[float], lo: float | None, hi: float | None) -> np.ndarray | None:
    """Widths of the quantile bins, the outer ones bounded by the reference's min and max."""
    e = np.asarray(edges, dtype="float64")
    if lo is None or hi is None or not len(e):
        return None
    bounds = np.concatenate([[min(lo, e[0])], e, [max(hi, e[-1])]])
    return np.diff(bounds)


def stuck(values: np.ndarray) -> float | None:
    """1.0 when the (at least two) finite values are all the same, else 0.0; None with fewer than two."""
    v = values[np.isfinite(values)]
    if v.size < 2:
        return None
    return float(v.min() == v.max())


# ------------------------------------------------------------------------------ check statistics
def numeric_checks(ref: Mapping[str, Any], counts: np.ndarray, *, statistic: str, mean: float | None,
                   stuck: float | None, previous_mean: float | None) -> dict[str, float | None]:
    """Every check of one numeric feature in one window (or chunk). ``ref``: the reference's summary of the
    feature (``edges``, ``counts``, ``nulls``, ``std``, ``min``, ``max``)."""
    ref_vec = np.append(np.asarray(ref["counts"], dtype="float64"), float(ref.get("nulls", 0)))
    n = float(counts.sum())
    std = ref.get("std")
    out: dict[str, float | None] = {
        "distance": distance(statistic, ref_vec, counts, widths=bin_widths(ref["edges"], ref.get("min"),
                                                                             ref.get("max")), ref_std=std),
        "null_share": float(counts[-1] / n) if n else None,
        "stuck": stuck,
        "level_shift": None,
    }
    if mean is not None and previous_mean is not None and std and np.isfinite(mean) and np.isfinite(previous_mean):
        out["level_shift"] = float(abs(mean - previous_mean) / std)
    return out


def categorical_checks(ref: Mapping[str, Any], counts: Mapping[str, int], nulls: int, *,
                       statistic: str) -> dict[str, float | None]:
    r, c = categorical_vectors(ref["counts"], int(ref.get("nulls", 0)), counts, nulls)
    n = float(c.sum())
    stat = "jensenshannon" if statistic == "wasserstein" else statistic
    return {"distance": distance(stat, r, c), "null_share": float(nulls / n) if n else None}


# ---------------------------------------------------------------------------------- calibration
@dataclass
class Calibration:
    """Thresholds of one reference: ``thresholds[feature][check] = {threshold, mean, std, max, n}``."""

    status: str  # ok | too_few_chunks | no_timestamps
    settings: dict[str, Any]
    chunk_hours: float
    n_chunks: int = 0
    chunk_rows_median: float = 0.0
    k: float | None = None
    #: k from each test's Bonferroni share under normality, and k from the reference chunks (leave-one-out)
    k_normal: float | None = None
    k_reference: float | None = None
    #: share of reference chunks that alarm against the others at ``k`` (leave-one-out estimate of the rate)
    reference_false_alarm_rate: float | None = None
    tests: int = 0
    thresholds: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    resized_to: int | None = None

    @property
    def usable(self) -> bool:
        return self.status == "ok"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Calibration | None:
        if not d:
            return None
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def natural_hours(span_hours: float) -> float | None:
    """The window length a span of data suggests: the span rounded up to 1, 2, 3, 4, 6, 8, 12 or 24 hours, or
    to whole days (the rows of a daily window span less than 24 h)."""
    if not span_hours > 0:
        return None
    for h in (1, 2, 3, 4, 6, 8, 12, 24):
        if span_hours <= h:
            return float(h)
    return float(24 * math.ceil(span_hours / 24))


def chunk_ids(timestamps: pd.Series, chunk_hours: float) -> np.ndarray:
    """Chunk index of every row: UTC epoch time floored to ``chunk_hours`` (-1 for a missing timestamp)."""
    ts = pd.to_datetime(timestamps, utc=True, errors="coerce")
    ns = ts.astype("int64").to_numpy()
    out = ns // int(chunk_hours * 3600 * 1e9)
    out[ts.isna().to_numpy()] = -1
    return out.astype("int64")


def _chunk_table(frame: pd.DataFrame, ids: np.ndarray, numeric: Sequence[str], categorical: Sequence[str],
                 ref_num: Mapping[str, Mapping[str, Any]], ref_cat: Mapping[str, Mapping[str, Any]],
                 settings: Settings) -> tuple[dict[int, dict[str, dict[str, float | None]]], dict[int, int]]:
    """``({chunk: {feature: {check: value}}}, {chunk: rows})`` of the usable chunks."""
    sizes = pd.Series(ids[ids >= 0]).value_counts()
    usable = sorted(int(c) for c, n in sizes.items() if n >= settings.min_chunk_rows)
    table: dict[int, dict[str, dict[str, float | None]]] = {c: {} for c in usable}
    if not usable:
        return table, {}
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    bounds = {c: (int(np.searchsorted(sorted_ids, c, "left")), int(np.searchsorted(sorted_ids, c, "right")))
              for c in usable}
    for col in numeric:
        r = ref_num[col]
        edges = np.asarray(r["edges"], dtype="float64")
        values = pd.to_numeric(frame[col], errors="coerce").to_numpy("float64")[order]
        means = {}
        for c in usable:
            lo, hi = bounds[c]
            v = values[lo:hi]
            fin = v[np.isfinite(v)]
            means[c] = float(fin.mean()) if fin.size else None
            table[c][col] = numeric_checks(r, numeric_counts(v, edges), statistic=settings.statistic,
                                           mean=means[c], stuck=stuck(v), previous_mean=means.get(c - 1))
    for col in categorical:
        r = ref_cat[col]
        s = frame[col].to_numpy(dtype=object)[order]
        for c in usable:
            lo, hi = bounds[c]
            part = pd.Series(s[lo:hi], dtype=object)
            vc = part.dropna().astype(str).value_counts()
            table[c][col] = categorical_checks(r, {str(k): int(n) for k, n in vc.items()}, int(part.isna().sum()),
                                               statistic=settings.statistic)
    return table, {c: int(sizes[c]) for c in usable}


def _is_share(check: str) -> bool:
    return check == "null_share"


def _threshold(values: np.ndarray, check: str, settings: Settings, k: float, alpha: float,
               rows: float) -> dict[str, float]:
    mean, std, top = float(values.mean()), float(values.std(ddof=1)) if values.size > 1 else 0.0, float(values.max())
    if _is_share(check) and rows > 0:  # sampling noise of a share at the chunk size
        p = min(max(mean, 1.0 / rows), 1.0)
        std = max(std, math.sqrt(p * (1 - p) / rows))
    if settings.method == "quantile":
        thr = float(np.quantile(values, 1 - alpha))
    else:
        thr = mean + k * std
        if settings.at_least_reference_max:
            thr = max(thr, top)
    return {"threshold": thr, "mean": mean, "std": std, "max": top, "n": int(values.size)}


def _critical_k(values: np.ndarray, check: str, settings: Settings, rows: float) -> np.ndarray:
    """Per chunk, the smallest k at which the chunk would NOT alarm on this test when judged against thresholds
    calibrated on the other chunks (leave-one-out): -inf when it never alarms, +inf when it always does."""
    n = values.size
    out = np.full(n, -np.inf)
    if n < 4:
        return out
    s1, s2 = values.sum(), float(np.square(values).sum())
    mean = (s1 - values) / (n - 1)
    var = (s2 - np.square(values) - (n - 1) * np.square(mean)) / (n - 2)
    std = np.sqrt(np.clip(var, 0, None))
    if _is_share(check) and rows > 0:
        p = np.clip(np.maximum(mean, 1.0 / rows), 0, 1)
        std = np.maximum(std, np.sqrt(p * (1 - p) / rows))
    order = np.sort(values)
    top1, top2 = order[-1], order[-2]
    others_max = np.where((values == top1) & (np.sum(values == top1) == 1), top2, top1)
    above = values > mean
    if settings.at_least_reference_max:
        above &= values > others_max
    with np.errstate(divide="ignore", invalid="ignore"):
        k = np.where(std > 0, (values - mean) / std, np.inf)
    out[above] = k[above]
    return out


def _family_k(table: Mapping[int, Mapping[str, Mapping[str, float | None]]], wanted: Mapping[str, Sequence[str]],
              settings: Settings, rows: float) -> tuple[float, float]:
    """The smallest k at which at most ``false_alarm_rate`` of the reference chunks, each judged against the
    others (leave-one-out), raise any alarm; and the leave-one-out rate at that k. Heavy tails and correlated
    checks are in the data, not assumed away."""
    chunks = sorted(table)
    worst = np.full(len(chunks), -np.inf)  # per chunk: the k below which some test of it alarms
    for col, checks in wanted.items():
        for check in checks:
            vals = np.array([table[c].get(col, {}).get(check) for c in chunks], dtype="float64")
            ok = np.isfinite(vals)
            if ok.sum() < 4:
                continue
            crit = np.full(len(chunks), -np.inf)
            crit[ok] = _critical_k(vals[ok], check, settings, rows)
            worst = np.maximum(worst, crit)
    allowed = int(math.floor(settings.false_alarm_rate * len(chunks)))
    ranked = np.sort(worst)[::-1]
    k = float(ranked[allowed]) if allowed < len(ranked) else -np.inf
    if not np.isfinite(k):  # more chunks than allowed alarm whatever k: keep the largest finite need
        finite = worst[np.isfinite(worst)]
        k = float(finite.max()) if finite.size else 0.0
    rate = float(np.mean(worst > k))
    return k, rate


def calibrate(frame: pd.DataFrame, timestamps: pd.Series | None, numeric: Sequence[str],
              categorical: Sequence[str], ref_num: Mapping[str, Mapping[str, Any]],
              ref_cat: Mapping[str, Mapping[str, Any]], settings: Settings, *, chunk_hours: float,
              checks_of: Mapping[str, Sequence[str]] | None = None) -> tuple[Calibration, np.ndarray | None]:
    """Thresholds of every (feature, check) from the reference ``frame`` cut into ``chunk_hours`` chunks.

    Returns ``(calibration, chunk id per row or None)``; ``checks_of`` limits the checks per feature.
    """
    cal = Calibration(status="ok", settings=asdict(settings), chunk_hours=float(chunk_hours))
    if timestamps is None:
        cal.status = "no_timestamps"
        cal.warnings.append("the reference has no event_timestamp column: it cannot be cut into chunks, so the "
                            "fixed thresholds decide")
        return cal, None
    ids = chunk_ids(timestamps, chunk_hours)
    table, sizes = _chunk_table(frame, ids, numeric, categorical, ref_num, ref_cat, settings)
    cal.n_chunks = len(table)
    cal.chunk_rows_median = float(np.median(list(sizes.values()))) if sizes else 0.0
    if cal.n_chunks < 3:
        cal.status = "too_few_chunks"
        cal.warnings.append(f"only {cal.n_chunks} reference chunk(s) of {chunk_hours:g} h with >= "
                            f"{settings.min_chunk_rows} rows: thresholds cannot be calibrated, the fixed thresholds "
                            "decide. Train on a longer window or shorten calibration.chunk_hours.")
        return cal, ids
    if cal.n_chunks < settings.min_chunks:
        cal.warnings.append(f"only {cal.n_chunks} reference chunks (< {settings.min_chunks}): the thresholds are "
                            "rough; expect more false alarms")
    wanted = {c: [k for k in (NUMERIC_CHECKS if c in numeric else CATEGORICAL_CHECKS)
                  if k in settings.checks and k in (checks_of or {}).get(c, CHECKS)] for c in [*numeric, *categorical]}
    cal.tests = max(1, sum(len(v) for v in wanted.values()))
    alpha = settings.false_alarm_rate / cal.tests
    if settings.k:
        cal.k = float(settings.k)
    else:
        # the stricter of: the normal quantile of each test's Bonferroni share, and the k at which the
        # reference's own chunks (each against the others) alarm at most at the false-alarm rate
        cal.k_normal = float(NormalDist().inv_cdf(1 - alpha))
        cal.k_reference, cal.reference_false_alarm_rate = _family_k(table, wanted, settings, cal.chunk_rows_median)
        cal.k = max(cal.k_normal, cal.k_reference)
        if settings.method == "std" and cal.reference_false_alarm_rate > settings.false_alarm_rate:
            cal.warnings.append(
                f"{cal.reference_false_alarm_rate:.1%} of the reference chunks alarm against the others at any k "
                f"(> false_alarm_rate {settings.false_alarm_rate}): a feature was constant, or all-null, in a few "
                "of them only")
    for col, checks in wanted.items():
        for check in checks:
            vals = np.array([v for c in table if (v := table[c][col].get(check)) is not None], dtype="float64")
            vals = vals[np.isfinite(vals)]
            if vals.size < 3:
                continue
            cal.thresholds.setdefault(col, {})[check] = _threshold(vals, check, settings, cal.k, alpha,
                                                                   cal.chunk_rows_median)
    return cal, ids


def resized(sample: pd.DataFrame, n_rows: int, numeric: Sequence[str], categorical: Sequence[str],
            ref_num: Mapping[str, Mapping[str, Any]], ref_cat: Mapping[str, Mapping[str, Any]],
            base: Calibration, *, seed: int = 0) -> Calibration | None:
    """Thresholds for a window of ``n_rows`` rows, from the reference sample's chunks cut to that size.

    None when the sample has fewer than 3 chunks that large (the caller keeps ``base`` and warns).
    """
    if CHUNK_COLUMN not in sample.columns:
        return None
    rng = np.random.default_rng(seed)
    ids = sample[CHUNK_COLUMN].to_numpy("int64")
    keep: list[np.ndarray] = []
    for c, n in pd.Series(ids[ids >= 0]).value_counts().items():
        if n >= n_rows:
            members = np.flatnonzero(ids == c)
            keep.append(np.sort(rng.choice(members, size=n_rows, replace=False)))
    if len(keep) < 3:
        return None
    rows = np.sort(np.concatenate(keep))
    settings = Settings.from_config({**base.settings, "min_chunk_rows": max(1, min(n_rows, 10**9))})
    # chunk ids are kept: a chunk of the cut sample is still one window of the reference period
    frame = sample.iloc[rows].reset_index(drop=True)
    table, sizes = _chunk_table(frame, frame[CHUNK_COLUMN].to_numpy("int64"), numeric, categorical, ref_num,
                                ref_cat, settings)
    cal = Calibration(status="ok", settings=base.settings, chunk_hours=base.chunk_hours, n_chunks=len(table),
                      chunk_rows_median=float(n_rows), k=base.k, tests=base.tests, resized_to=int(n_rows),
                      warnings=list(base.warnings))
    alpha = settings.false_alarm_rate / max(1, base.tests)
    for col, checks in base.thresholds.items():
        for check in checks:
            vals = np.array([v for c in table if (v := table[c].get(col, {}).get(check)) is not None], dtype="float64")
            vals = vals[np.isfinite(vals)]
            if vals.size >= 3:
                cal.thresholds.setdefault(col, {})[check] = _threshold(vals, check, settings, float(base.k or 3.0),
                                                                       alpha, float(n_rows))
    return cal


# ------------------------------------------------------------------------------------- the verdict
def judge(cal: Calibration, values: Mapping[str, Mapping[str, float | None]]) -> dict[str, dict[str, Any]]:
    """``{feature: {"checks": {check: {value, threshold, mean, std, z, alarm}}, "alarms": [check, ...]}}``."""
    out: dict[str, dict[str, Any]] = {}
    for col, checks in values.items():
        rows: dict[str, dict[str, Any]] = {}
        for check, value in checks.items():
            t = cal.thresholds.get(col, {}).get(check)
            if t is None:
                continue
            z = (value - t["mean"]) / t["std"] if value is not None and t["std"] > 0 else None
            rows[check] = {"value": value, "threshold": t["threshold"], "mean": t["mean"], "std": t["std"],
                           "z": z, "alarm": bool(value is not None and value > t["threshold"])}
        out[col] = {"checks": rows, "alarms": [k for k, r in rows.items() if r["alarm"]]}
    return out


__all__ = [
    "CHECKS",
    "CHUNK_COLUMN",
    "Calibration",
    "Settings",
    "bin_widths",
    "calibrate",
    "categorical_checks",
    "categorical_vectors",
    "chunk_ids",
    "natural_hours",
    "distance",
    "judge",
    "stuck",
    "numeric_checks",
    "numeric_counts",
    "resized",
]
