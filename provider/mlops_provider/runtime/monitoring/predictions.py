"""The champion's scored reference days, and the drift of its served predictions (runtime module).

**Scored reference** (:func:`score_reference`): the champion's training snapshot keeps its validation and
evaluation splits; the champion (its registered pyfunc, or the ``predictor`` given) scores them once per model
version, cached as ``<cache_dir>/<model>/v<version>/scored_reference.parquet`` (a version and its snapshot never
change). Two signals use it: the performance detector's reference days
(:func:`~mlops_provider.runtime.monitoring.live.reference_performance`) and the prediction-drift reference here.
The training split is not used: its predictions are in-sample, more confident than any live day.

**Prediction drift** (:func:`prediction_drift`): the task's prediction columns
(:meth:`~mlops_provider.runtime.monitoring.task_metrics.MonitorTask.drift_frame`: binary ``probability``;
multiclass ``prediction`` - categorical - and ``top_probability``; regression ``prediction``) of the window's live
traffic answered by the champion, judged exactly like the features: thresholds calibrated on chunks of the
reference of the window's length (:mod:`~mlops_provider.runtime.monitoring.calibration`, its statistics cached
per version and settings), Evidently's fixed tests when too few chunks. Per-feature YAML rules (``columns``,
``exclude``, ``critical``, ``stratify_by``) name features and do not apply. It decides ``drift`` only with
``monitoring.drift.predictions.trigger``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_provider.runtime.io.atomic import atomic_path
from mlops_provider.runtime.io.objstore import ObjectStore
from mlops_provider.runtime.monitoring import drift as rd
from mlops_provider.runtime.monitoring.live_metrics import class_texts
from mlops_provider.runtime.monitoring.statistics import (
    ReferenceStats,
    cache_key,
    stream_current,
    window_means,
)
from mlops_provider.runtime.monitoring.task_metrics import MULTICLASS, PROBA_PREFIX, MonitorTask
from mlops_provider.runtime.monitoring.window import frame_window, open_log_window, window_frame

log = logging.getLogger(__name__)

Predictor = Callable[[pd.DataFrame], np.ndarray]
SCORED_FILE = "scored_reference.parquet"
#: the label column of a scored reference (the snapshot's own name is not kept)
LABEL = "__label__"
EVENT_TIMESTAMP = "event_timestamp"
MODEL_VERSION = "model_version"


# ------------------------------------------------------------------------------ the champion's model
def model_input(frame: pd.DataFrame, features: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """The pyfunc's input: categorical features as strings ("" for missing), numeric ones as float64."""
    x = pd.DataFrame(
        {c: frame[c].astype(object).where(frame[c].notna(), "").astype(str) for c in features.get("categorical", [])}
    )
    for c in features.get("numeric", []):
        x[c] = pd.to_numeric(frame[c], errors="coerce").astype("float64")
    return x


def load_predictor(client: Any, model: str, version: str) -> Predictor:
    """``models:/<model>/<version>`` as a function of the model input (its raw ``predict`` output: 1-D, or
    2-D for multiclass probabilities / regression quantiles)."""
    import mlflow

    uri = client.get_model_version_download_uri(model, str(version))
    previous = mlflow.get_tracking_uri()
    try:
        mlflow.set_tracking_uri(getattr(client, "tracking_uri", None) or previous)
        pyfunc = mlflow.pyfunc.load_model(uri)
    finally:
        mlflow.set_tracking_uri(previous)
    return lambda x: np.asarray(pyfunc.predict(x), dtype="float64")


def training_classes(frame: pd.DataFrame, label: str) -> list[str]:
    """The sorted distinct labels of the training split (TASK-CONTRACT's default classes), as text."""
    train = frame[frame["split"] == "train"] if "split" in frame.columns else frame
    raw = train[label].dropna().unique().tolist() if label in train.columns else []
    try:
        raw = sorted(raw)
    except TypeError:
        raw = sorted(raw, key=str)
    return [c for c in class_texts(raw).tolist() if c is not None]


# ------------------------------------------------------------------------------- scored reference
def score_reference(
    client: Any,
    model: str,
    version: str,
    snapshot_path: str,
    *,
    features: Mapping[str, Sequence[str]],
    label: str | None,
    task: MonitorTask,
    cache_dir: str | None,
    store: ObjectStore | None = None,
    predictor: Predictor | None = None,
) -> tuple[pd.DataFrame, MonitorTask]:
    """The snapshot's validation and evaluation rows scored by the champion: ``event_timestamp``, ``split``,
    the label (when the snapshot has it) and the task's score columns; cached per version. Returns the frame
    and the task (a multiclass task without ``mlops.classes`` gets the training split's classes).

    Raises what loading the snapshot or the model raises (the callers report it as unavailable).
    """
    entry = Path(cache_dir) / model / f"v{version}" / SCORED_FILE if cache_dir else None
    if entry is not None and entry.is_file():
        try:
            cached = pd.read_parquet(entry)
            if task.name == MULTICLASS and not task.classes:
                task = task.with_classes([c[len(PROBA_PREFIX):] for c in cached.columns if c.startswith(PROBA_PREFIX)])
            if all(c in cached.columns for c in task.score_columns()):
                return cached, task
        except (OSError, ValueError):
            pass
    from mlops_provider.runtime.features.snapshot import load_snapshot

    frame, _ = load_snapshot(snapshot_path, store=store)
    if "split" not in frame.columns or EVENT_TIMESTAMP not in frame.columns:
        raise ValueError(f"snapshot {snapshot_path} lacks split / {EVENT_TIMESTAMP}")
    if task.name == MULTICLASS and not task.classes and label:
        task = task.with_classes(training_classes(frame, label))
    held_out = frame[frame["split"] != "train"].reset_index(drop=True)
    if held_out.empty:
        raise ValueError(f"snapshot {snapshot_path} has no validation or evaluation rows")
    predict = predictor or load_predictor(client, model, version)
    scores = task.scores_from_output(predict(model_input(held_out, features)))
    out = pd.DataFrame({EVENT_TIMESTAMP: pd.to_datetime(held_out[EVENT_TIMESTAMP], utc=True),
                        "split": held_out["split"].astype(str)})
    if label and label in held_out.columns:
        out[LABEL] = held_out[label].to_numpy()
    out = pd.concat([out, scores.reset_index(drop=True)], axis=1)
    if entry is not None:
        entry.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(entry) as tmp:
            out.to_parquet(tmp, index=False)
    log.info("Scored %d held-out row(s) of %s with models:/%s v%s (%s)", len(out), snapshot_path, model, version,
             task.name)
    return out, task


def try_score_reference(
    client: Any, model: str, version: str, snapshot_path: str, *, features: Mapping[str, Sequence[str]],
    label: str | None, task: MonitorTask, cache_dir: str | None, store: ObjectStore | None = None,
    predictor: Predictor | None = None,
) -> tuple[pd.DataFrame | None, MonitorTask, str | None]:
    """:func:`score_reference`, or ``(None, task, why)`` when the snapshot or the model cannot be used (the
    monitor goes on without the signals that need it)."""
    try:
        scored, task = score_reference(client, model, version, snapshot_path, features=features, label=label,
                                       task=task, cache_dir=cache_dir, store=store, predictor=predictor)
        return scored, task, None
    except Exception as e:  # noqa: BLE001 - a model that cannot load must not fail the monitor
        log.warning("Could not score the held-out days of models:/%s v%s: %s", model, version, e)
        return None, task, f"{type(e).__name__}: {e}"


# ------------------------------------------------------------------------------- prediction drift
def prediction_rules(rules: rd.DriftRules) -> rd.DriftRules:
    """The drift rules for the prediction columns: the calibration and sampling settings of the features,
    without the per-feature rules (they name features) and without the Evidently report."""
    return replace(rules, columns={}, exclude=(), critical=(), stratify_by=(), min_drifted_columns=None,
                   evidently_report=False)


def reference_stats(
    scored: pd.DataFrame, task: MonitorTask, rules: rd.DriftRules, *, model: str, version: str,
    cache_dir: str | None,
) -> tuple[ReferenceStats, bool]:
    """Statistics and calibrated thresholds of the champion's held-out predictions (cached per version, task
    and settings). ``(stats, cache_hit)``."""
    numeric, categorical = task.drift_columns()
    rules = prediction_rules(rules)
    settings = rules.calibration_settings
    key = cache_key("predictions-v1", task.as_dict(), numeric, categorical, len(scored), rules.reference_rows,
                    rules.seed, rules.bins,
                    ["calibration-v1", sorted(dict(rules.calibration).items()), rules.chunk_hours()]
                    if settings.enabled else None)
    entry = Path(cache_dir) / model / f"v{version}" / f"predictions-{key}" if cache_dir else None
    if entry is not None and entry.is_dir():
        cached = ReferenceStats.from_dir(entry)
        if cached is not None:
            return cached, True
    frame = task.drift_frame(scored).assign(**{EVENT_TIMESTAMP: scored[EVENT_TIMESTAMP].to_numpy()})
    stats = rd.reference_statistics(frame, numeric, categorical, rules,
                                    where=f"the held-out predictions of models:/{model} v{version}")
    stats.key = key
    if entry is not None:
        stats.to_dir(entry)
    return stats, False


def window_predictions(
    inference_log_dir: str, task: MonitorTask, start: str | None, end: str | None, tmp_dir: str | Path, *,
    champion_version: str | None, store: ObjectStore | None,
) -> pd.DataFrame:
    """The prediction-drift columns (and ``timestamp``) of the window's live rows answered by the champion
    (rows of another model version - a split-mode challenger, the previous champion - are left out) that
    carry a prediction; ``attrs["rows"]``: the champion's live rows, with a prediction or not."""
    cols = {**task.log_columns(), MODEL_VERSION: "string"}
    win = open_log_window(inference_log_dir, cols, start, end, tmp_dir, store=store, live_only=True)
    frame = window_frame(win, list(cols))
    if champion_version and MODEL_VERSION in frame.columns:
        mine = frame[MODEL_VERSION].astype(str) == str(champion_version)
        if mine.any():
            frame = frame[mine]
    rows = len(frame)
    scores = task.scores(frame)
    frame, scores = frame[task.valid(scores)], scores[task.valid(scores)]
    out = task.drift_frame(scores)
    out["timestamp"] = frame["timestamp"] if "timestamp" in frame.columns else pd.Timestamp(0, tz="UTC")
    out = out.reset_index(drop=True)
    out.attrs["rows"] = rows
    return out


def prediction_drift(
    *,
    task: MonitorTask,
    scored: pd.DataFrame | None,
    unavailable: str | None,
    inference_log_dir: str,
    start: str | None,
    end: str | None,
    tmp_dir: str | Path,
    rules: rd.DriftRules,
    min_rows: int,
    model: str,
    version: str,
    cache_dir: str | None,
    trigger: bool,
    store: ObjectStore | None = None,
) -> dict[str, Any]:
    """The drift verdict of the champion's predictions in ``[start, end)`` against its held-out predictions.

    ``{"status": ok | unavailable | no_traffic | no_predictions | insufficient_data | no_testable_columns,
    "drift", "trigger",
    "task", "columns", "drifted_columns", "alarms", "reasons", "calibration", "thresholds", "n_current",
    "reference": {"rows", "splits", "cache_hit"}}``; ``unavailable`` (with ``why``) when the reference could not
    be scored (``scored`` None).
    """
    numeric, categorical = task.drift_columns()
    out: dict[str, Any] = {"status": "ok", "drift": False, "trigger": bool(trigger), "task": task.name,
                           "numeric": numeric, "categorical": categorical, "drifted_columns": [], "alarms": [],
                           "reasons": []}
    if scored is None or scored.empty:
        return out | {"status": "unavailable", "why": unavailable or "no scored reference"}
    tmp = Path(tmp_dir)
    current = window_predictions(inference_log_dir, task, start, end, tmp / "current", champion_version=version,
                                 store=store)
    out["n_current"] = int(len(current))
    if current.empty:
        if current.attrs.get("rows"):
            return out | {"status": "no_predictions", "why": f"{current.attrs['rows']} live row(s) without the "
                          f"prediction columns of a {task.name} model ({sorted(task.log_columns())})"}
        return out | {"status": "no_traffic"}
    if len(current) < min_rows:
        return out | {"status": "insufficient_data"}
    ref, hit = reference_stats(scored, task, rules, model=model, version=version, cache_dir=cache_dir)
    out["reference"] = {"rows": int(len(scored)), "splits": sorted(map(str, scored["split"].unique())),
                        "cache_hit": hit}
    p_rules = prediction_rules(rules)
    win = frame_window(current, tmp / "current_frame")
    cur = stream_current(win, ref, numeric, categorical, sample_rows=p_rules.sample_rows, seed=p_rules.seed)
    previous = None
    settings = p_rules.calibration_settings
    if settings.enabled and "level_shift" in settings.checks and start and end and numeric:
        length = datetime.fromisoformat(end) - datetime.fromisoformat(start)
        p_start = (datetime.fromisoformat(start) - length).isoformat()
        before = window_predictions(inference_log_dir, task, p_start, start, tmp / "previous",
                                    champion_version=version, store=store)
        if len(before) >= min_rows:
            previous = window_means(frame_window(before, tmp / "previous_frame"), numeric)
    result, _ = rd.evaluate_drift(ref, cur, numeric, categorical, p_rules, previous_means=previous)
    out.update(
        status=result["status"],
        drift=bool(result.get("drift")),
        columns=result.get("columns", {}),
        drifted_columns=list(result.get("drifted_columns", [])),
        alarms=[f"prediction {a}" for a in result.get("alarms", [])],
        reasons=list(result.get("reasons", [])),
        calibration=result.get("calibration"),
        thresholds=(result.get("rule") or {}).get("thresholds"),
    )
    log.info("Prediction drift (%s, %s thresholds) of %d row(s): drift=%s %s", task.name, out["thresholds"],
             len(current), out["drift"], out["alarms"])
    return out


__all__ = ["LABEL", "Predictor", "load_predictor", "model_input", "prediction_drift", "prediction_rules",
           "reference_stats", "score_reference", "training_classes", "try_score_reference", "window_predictions"]
