"""Scalable building blocks of drift monitoring: stratified sampling, streamed per-column statistics
and the per-model-version reference statistics (runtime module).

Why: plain Evidently materialises both frames and runs every metric on every row; on a 1 M-row
window that is minutes and gigabytes (evidently#1526, #763). Here the window
(:class:`~mlops_provider.runtime.monitoring.window.ParquetWindow`) is never loaded as one frame:

1. **Pass 1** reads only the timestamp (and the ``stratify_by`` columns) of the window and picks a
   seeded, stratified sample of row positions (strata = UTC day x ``stratify_by`` values,
   proportional allocation, capped at ``sample_rows``). The same rows are used for every column.
2. **Pass 2** streams one column at a time, row group by row group (parquet column projection):
   exact statistics over the *whole* window (count, nulls, mean, histogram on the reference's
   quantile bins -> PSI; category counts -> Jensen-Shannon distance and unseen-category share)
   and the values at the sampled positions. Peak memory is one column chunk plus the sample.
3. Evidently then runs on the (reference sample, window sample) pair; its verdict is the
   *sampled verdict*, whose agreement with the full-data verdict is measured in
   ``benchmarks/drift_agreement.py``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from mlops_provider.exceptions import MonitoredFeatureMissingError
from mlops_provider.runtime.io.atomic import atomic_path
from mlops_provider.runtime.monitoring.window import ParquetWindow, write_parquet

log = logging.getLogger(__name__)

NULL_TOKEN = "__null__"


def _seed_for(seed: int, key: str) -> int:
    return (int(seed) * 1_000_003 + zlib.crc32(key.encode())) % (2**32)


# ---------------------------------------------------------------------------------- sampling
def stratified_positions(strata: np.ndarray, cap: int, seed: int = 0) -> np.ndarray:
    """Sorted row positions of a seeded stratified sample of at most ~``cap`` rows.

    ``strata`` holds one (hashable, sortable) stratum key per row. Allocation is proportional to
    stratum size with at least one row per non-empty stratum; within a stratum rows are drawn
    without replacement by a generator seeded from (seed, stratum), so the draw of one stratum does
    not depend on the others. ``cap >= len(strata)`` keeps every row.
    """
    n = len(strata)
    if cap <= 0 or n <= cap:
        return np.arange(n, dtype="int64")
    keys, inverse, counts = np.unique(strata, return_inverse=True, return_counts=True)
    alloc = np.maximum(1, np.floor(counts * (cap / n)).astype("int64"))
    order = np.argsort(inverse, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(counts)])
    picks: list[np.ndarray] = []
    for k in range(len(keys)):
        members = order[bounds[k] : bounds[k + 1]]
        take = int(min(alloc[k], len(members)))
        rng = np.random.default_rng(_seed_for(seed, str(keys[k])))
        picks.append(rng.choice(members, size=take, replace=False))
    return np.sort(np.concatenate(picks)).astype("int64")


def window_strata(win: ParquetWindow, stratify_by: Sequence[str]) -> np.ndarray:
    """Stratum key per window row: the UTC day, crossed with the ``stratify_by`` values."""
    day = (win.timestamps_ns() // 86_400_000_000_000).astype("int64")
    keys = day.astype(str).astype(object)
    for col in stratify_by:
        if col not in win.columns:
            continue
        vals = np.empty(win.n_rows, dtype=object)
        for off, values in win.column_chunks(col):
            vals[off : off + len(values)] = np.asarray(values.to_pylist(), dtype=object)
        keys = keys + "|" + pd.Series(vals).astype(str).to_numpy(dtype=object)
    return keys.astype(str)


# ----------------------------------------------------------------------------- column statistics
def _numeric(values: pa.Array) -> np.ndarray:
    if pa.types.is_null(values.type):
        return np.full(len(values), np.nan)
    if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
        return pd.to_numeric(pd.Series(values.to_pylist(), dtype=object), errors="coerce").to_numpy("float64")
    return np.asarray(
        pc.cast(values, pa.float64(), safe=False).to_numpy(zero_copy_only=False), dtype="float64"
    )


def _categorical(values: pa.Array) -> pa.Array:
    if pa.types.is_dictionary(values.type):
        values = values.dictionary_decode()
    if pa.types.is_string(values.type) or pa.types.is_null(values.type):
        return values.cast(pa.string())
    if pa.types.is_floating(values.type):  # 1.0 -> "1" like the training data's integer codes
        arr = values.to_numpy(zero_copy_only=False)
        return pa.array(
            [None if np.isnan(v) else (str(int(v)) if float(v).is_integer() else str(v)) for v in arr],
            pa.string(),
        )
    return pc.cast(values, pa.string())


def quantile_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """Inner bin edges from the reference's quantiles (deduplicated; empty for a constant column)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.array([], dtype="float64")
    qs = np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1])
    return np.unique(qs)


def histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    finite = values[np.isfinite(values)]
    idx = np.searchsorted(edges, finite, side="right")
    return np.bincount(idx, minlength=len(edges) + 1).astype("int64")


def psi(
    ref_counts: Sequence[float] | np.ndarray, cur_counts: Sequence[float] | np.ndarray, eps: float = 1e-4
) -> float | None:
    r, c = np.asarray(ref_counts, dtype="float64"), np.asarray(cur_counts, dtype="float64")
    if r.sum() == 0 or c.sum() == 0:
        return None
    p, q = np.clip(r / r.sum(), eps, None), np.clip(c / c.sum(), eps, None)
    return float(np.sum((q - p) * np.log(q / p)))


def js_distance(ref_counts: dict[str, int], cur_counts: dict[str, int]) -> float | None:
    keys = sorted(set(ref_counts) | set(cur_counts))
    r = np.array([ref_counts.get(k, 0) for k in keys], dtype="float64")
    c = np.array([cur_counts.get(k, 0) for k in keys], dtype="float64")
    if r.sum() == 0 or c.sum() == 0:
        return None
    p, q = r / r.sum(), c / c.sum()
    m = (p + q) / 2

    def kl(a: np.ndarray, b: np.ndarray) -> float:
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / b[nz])))

    return float(np.sqrt(max(0.0, (kl(p, m) + kl(q, m)) / 2)))


def _value_counts(values: pa.Array) -> dict[str, int]:
    vc = pc.value_counts(values.drop_null())
    return {
        str(v): int(n)
        for v, n in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True)
    }


# ------------------------------------------------------------------------------ reference stats
@dataclass
class ReferenceStats:
    """Reference sample (cleaned, capped, seeded) + exact per-column summaries of the whole reference."""

    sample: pd.DataFrame
    n_total: int
    numeric: dict[str, dict[str, Any]]  # col -> {edges, counts, nulls, n, mean, std, min, max}
    categorical: dict[str, dict[str, Any]]  # col -> {counts, nulls, n}
    key: str = ""
    #: per-feature drift thresholds calibrated on reference chunks (``calibration.Calibration.as_dict()``)
    calibration: dict[str, Any] | None = None

    def to_dir(self, directory: Path) -> None:
        """Write the sample and the statistics as one directory that replaces ``directory`` atomically."""
        with atomic_path(directory) as tmp:
            tmp.mkdir()
            write_parquet(self.sample, tmp / "sample.parquet")
            (tmp / "stats.json").write_text(
                json.dumps(
                    {
                        "n_total": self.n_total,
                        "numeric": self.numeric,
                        "categorical": self.categorical,
                        "key": self.key,
                        "calibration": self.calibration,
                    },
                    default=lambda v: v.tolist() if hasattr(v, "tolist") else str(v),
                )
            )
            shutil.rmtree(directory, ignore_errors=True)  # os.replace cannot replace a non-empty directory

    @classmethod
    def from_dir(cls, directory: Path) -> ReferenceStats | None:
        try:
            meta = json.loads((directory / "stats.json").read_text())
            sample = pd.read_parquet(directory / "sample.parquet")
        except (OSError, ValueError):
            return None
        return cls(sample, int(meta["n_total"]), meta["numeric"], meta["categorical"], meta.get("key", ""),
                   meta.get("calibration"))


def reference_stats(
    reference: pd.DataFrame,
    numeric: Sequence[str],
    categorical: Sequence[str],
    *,
    max_rows: int = 50_000,
    seed: int = 0,
    bins: int = 20,
) -> ReferenceStats:
    """Exact summaries of every reference row, and a seeded sample of at most ``max_rows`` rows."""
    num: dict[str, dict[str, Any]] = {}
    cat: dict[str, dict[str, Any]] = {}
    for col in numeric:
        vals = pd.to_numeric(reference[col], errors="coerce").to_numpy("float64")
        edges = quantile_edges(vals, bins)
        finite = vals[np.isfinite(vals)]
        num[col] = {
            "edges": edges.tolist(),
            "counts": histogram(vals, edges).tolist(),
            "nulls": int((~np.isfinite(vals)).sum()),
            "n": int(len(vals)),
            "mean": float(finite.mean()) if finite.size else None,
            "std": float(finite.std(ddof=1)) if finite.size > 1 else None,
            "min": float(finite.min()) if finite.size else None,
            "max": float(finite.max()) if finite.size else None,
        }
    for col in categorical:
        s = reference[col]
        s = s.where(s.isna(), s.astype(str))
        cat[col] = {
            "counts": {str(k): int(v) for k, v in s.value_counts(dropna=True).items()},
            "nulls": int(s.isna().sum()),
            "n": int(len(s)),
        }
    if 0 < max_rows < len(reference):
        sample = reference.sample(n=max_rows, random_state=seed).sort_index(kind="stable")
    else:
        sample = reference
    return ReferenceStats(sample.reset_index(drop=True), len(reference), num, cat)


def cache_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


# -------------------------------------------------------------------------------- current stats
@dataclass
class CurrentStats:
    sample: pd.DataFrame
    n_total: int
    positions: np.ndarray
    columns: dict[str, dict[str, Any]]


def stream_current(
    win: ParquetWindow,
    ref: ReferenceStats,
    numeric: Sequence[str],
    categorical: Sequence[str],
    *,
    sample_rows: int = 50_000,
    seed: int = 0,
    stratify_by: Sequence[str] = (),
) -> CurrentStats:
    """Pass 1 (strata -> sampled positions) and pass 2 (per-column exact stats + sampled values)."""
    missing = [c for c in (*numeric, *categorical) if c not in win.columns]
    if missing:
        raise MonitoredFeatureMissingError(
            f"The current window (inference log) lacks feature column(s) {missing} (it has "
            f"{sorted(win.columns)}). The monitored features come from the model YAML (training.features); "
            "make sure the service logs every raw feature column, or fix the feature lists."
        )
    positions = (
        stratified_positions(window_strata(win, stratify_by), sample_rows, seed)
        if win.n_rows > sample_rows
        else np.arange(win.n_rows, dtype="int64")
    )
    sample: dict[str, Any] = {}
    stats: dict[str, dict[str, Any]] = {}
    for col in numeric:
        r = ref.numeric[col]
        edges = np.asarray(r["edges"], dtype="float64")
        counts = np.zeros(len(edges) + 1, dtype="int64")
        nulls = total = 0
        s1 = 0.0
        picked: list[np.ndarray] = []
        for off, values in win.column_chunks(col):
            x = _numeric(values)
            fin = np.isfinite(x)
            counts += histogram(x, edges)
            nulls += int((~fin).sum())
            total += len(x)
            s1 += float(x[fin].sum())
            lo, hi = np.searchsorted(positions, [off, off + len(x)])
            picked.append(x[positions[lo:hi] - off])
        sample[col] = np.concatenate(picked) if picked else np.array([], dtype="float64")
        n_valid = total - nulls
        stats[col] = {
            "kind": "numeric",
            "n": total,
            "null_share": (nulls / total) if total else None,
            "mean": (s1 / n_valid) if n_valid else None,
            "psi": psi(r["counts"], counts) if n_valid else None,
            "counts": [*counts.tolist(), nulls],  # the reference's bins, then nulls (calibrated checks)
        }
    for col in categorical:
        r = ref.categorical[col]
        seen = set(r["counts"])
        cur_counts: dict[str, int] = {}
        nulls = total = 0
        picked_c: list[np.ndarray] = []
        for off, values in win.column_chunks(col):
            v = _categorical(values)
            for k, n in _value_counts(v).items():
                cur_counts[k] = cur_counts.get(k, 0) + n
            nulls += v.null_count
            total += len(v)
            lo, hi = np.searchsorted(positions, [off, off + len(v)])
            picked_c.append(np.asarray(v.take(pa.array(positions[lo:hi] - off)).to_pylist(), dtype=object))
        sample[col] = np.concatenate(picked_c) if picked_c else np.array([], dtype=object)
        unseen = {k: n for k, n in sorted(cur_counts.items(), key=lambda kv: -kv[1]) if k not in seen}
        n_valid = total - nulls
        stats[col] = {
            "kind": "categorical",
            "n": total,
            "null_share": (nulls / total) if total else None,
            "js_distance": js_distance(r["counts"], cur_counts) if n_valid else None,
            "unseen_share": (sum(unseen.values()) / n_valid) if n_valid else 0.0,
            "unseen_values": dict(list(unseen.items())[:20]),
            "counts": cur_counts,
            "nulls": nulls,
        }
    frame = pd.DataFrame(sample, columns=[*numeric, *categorical]) if sample else pd.DataFrame()
    return CurrentStats(frame, win.n_rows, positions, stats)


def window_means(win: ParquetWindow, numeric: Sequence[str]) -> dict[str, float | None]:
    """Mean of every numeric column over the whole window, streamed (the previous window of ``level_shift``)."""
    out: dict[str, float | None] = {}
    for col in numeric:
        if col not in win.columns:
            out[col] = None
            continue
        total, count = 0.0, 0
        for _, values in win.column_chunks(col):
            x = _numeric(values)
            fin = np.isfinite(x)
            total += float(x[fin].sum())
            count += int(fin.sum())
        out[col] = total / count if count else None
    return out
