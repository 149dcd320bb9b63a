"""Reproduce a training run from what it recorded (runtime module).

``reproduce(run_id)`` reads the run's resolved config (``config/training_config.json``: snapshot
path and hash and the whole training spec; runs logged before the spec was recorded: features, label,
architecture, epochs, batch size, learning rate, seed, patience),
checks the snapshot is still there with the same content hash, retrains into a NEW MLflow run of
the same experiment tagged ``mlops.reproduces=<run_id>``, and compares the final metrics. No
model version is registered unless ``register=True``. On CPU the metrics match exactly (seeded,
deterministic loop); on GPU they match within float noise only.

The command line (``make reproduce RUN=<id>``) is ``python -m mlops_provider.cli reproduce <run_id>``
(:mod:`mlops_provider.cli`: it resolves the tracking store through the MLflowHook and checks that a
remote server answers before calling :func:`reproduce`).
"""

from __future__ import annotations

import json
import logging
import math
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlops_provider.exceptions import TrainingError
from mlops_provider.specs import TrainingSpec, from_dict
from mlops_provider.tasks import ALL_TRAINING_METRICS

log = logging.getLogger(__name__)

REPRODUCES_TAG = "mlops.reproduces"
COMPARED_METRICS = (*ALL_TRAINING_METRICS, "best_epoch", "epochs_run")
LEGACY_KEYS = ("label", "features", "architecture", "epochs", "batch_size", "learning_rate", "seed", "patience",
               "compile")


def recorded_spec(config: dict[str, Any]) -> TrainingSpec:
    """The :class:`TrainingSpec` a run recorded (``training``), or rebuilt from a legacy run's flat keys."""
    if isinstance(config.get("training"), dict):
        return from_dict(TrainingSpec, config["training"])  # type: ignore[no-any-return]
    return TrainingSpec.parse({k: config[k] for k in LEGACY_KEYS if k in config})  # type: ignore[no-any-return]


def load_run_config(client: Any, run_id: str) -> tuple[Any, dict[str, Any]]:
    """``(run, resolved training config)`` of a training run; :class:`TrainingError` when absent."""
    import mlflow

    from mlops_provider.runtime.training.tracking import CONFIG_ARTIFACT

    try:
        run = client.get_run(run_id)
    except Exception as e:
        raise TrainingError(
            f"MLflow run {run_id!r} does not exist in {client.tracking_uri} ({type(e).__name__}). Pass the id of "
            "a training run (the 'MLflow run' link of the train task) and the same tracking store."
        ) from e
    try:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=CONFIG_ARTIFACT, tracking_uri=client.tracking_uri
        )
        config = json.loads(Path(local).read_text())
    except Exception as e:
        raise TrainingError(
            f"run {run_id} has no readable {CONFIG_ARTIFACT} artifact ({type(e).__name__}: {e}); only runs "
            "trained by TorchTrainOperator / runtime.training.train can be reproduced."
        ) from e
    needed = ("snapshot_path", "snapshot_hash", "model_name", *(() if "training" in config else (
        "features", "label", "architecture", "epochs", "batch_size", "learning_rate", "seed", "patience")))
    missing = [k for k in needed if k not in config]
    if missing:
        raise TrainingError(f"run {run_id}: {CONFIG_ARTIFACT} lacks {missing}; it cannot be reproduced.")
    return run, config


def compare_metrics(original: dict[str, float], reproduced: dict[str, float], tolerance: float) -> tuple[bool, float]:
    """(match, largest absolute difference) over the metrics both runs have."""
    keys = [k for k in COMPARED_METRICS if k in original and k in reproduced]
    if not keys:
        return False, math.inf
    diffs = [abs(float(original[k]) - float(reproduced[k])) for k in keys]
    worst = max(diffs)
    return worst <= tolerance, worst


def reproduce(
    run_id: str,
    *,
    tracking: dict[str, Any] | None = None,
    register: bool = False,
    tags: dict[str, str] | None = None,
    idempotency_key: str | None = None,
    key_parts: Sequence[Any] | None = None,
    tolerance: float = 1e-6,
    runtime: TrainingSpec | None = None,
    on_run_start: Any = None,
    store: Any = None,
) -> dict[str, Any]:
    """Retrain run ``run_id`` from its recorded snapshot, config and seed into a new run.

    Returns ``{"original_run_id", "run_id", "original": {metric: value}, "reproduced": {...},
    "match", "max_abs_diff", "model_version", "snapshot_path", "experiment_id"}``.
    ``idempotency_key``: the new run's key (a retry of the same key resumes it); else ``key_parts`` (e.g.
    the dag_id and Airflow run id of the reproducing task) make one with ``run_id``; default: a fresh key.
    ``tracking``: resolved settings; a remote server's reachability is the caller's check. ``runtime``: the
    model's current TrainingSpec, whose runtime settings (system metrics, checkpoint cadence) apply to the
    reproduction; what defines the model (task, data, network, optimisation, seed) always comes from the run.
    """
    from mlops_provider.runtime.training.run import train
    from mlops_provider.runtime.training.tracking import configure_tracking, make_idempotency_key

    client = configure_tracking(tracking)
    run, config = load_run_config(client, run_id)
    experiment = client.get_experiment(run.info.experiment_id)
    original = {k: float(v) for k, v in run.data.metrics.items() if k in COMPARED_METRICS}
    if not original:
        raise TrainingError(f"run {run_id} logged none of {list(COMPARED_METRICS)}: it never finished training.")
    spec = recorded_spec(config)
    if runtime is not None:
        spec = spec.replace(system_metrics_interval=runtime.system_metrics_interval,
                            checkpoint_every=runtime.checkpoint_every)
    log.info("reproducing run %s from snapshot %s (seed %s)", run_id, config["snapshot_path"], spec.seed)
    if idempotency_key is None:
        parts = list(key_parts) if key_parts is not None else [uuid.uuid4().hex]
        idempotency_key = make_idempotency_key("reproduce", run_id, *parts)
    result = train(
        config["snapshot_path"],
        config["model_name"],
        spec,
        tags={**(tags or {}), "reproduces": run_id},
        tracking={**(tracking or {}), "tracking_uri": client.tracking_uri},
        idempotency_key=idempotency_key,
        experiment_name=experiment.name,
        on_run_start=on_run_start,
        register=register,
        run_name=f"reproduce-{run_id[:8]}",
        run_tags={REPRODUCES_TAG: run_id},
        expected_snapshot_hash=str(config["snapshot_hash"]),
        store=store,
    )
    new_run = client.get_run(result["run_id"])
    reproduced = {k: float(v) for k, v in new_run.data.metrics.items() if k in COMPARED_METRICS}
    match, worst = compare_metrics(original, reproduced, tolerance)
    client.set_tag(result["run_id"], "mlops.reproduction_match", str(match).lower())
    return {
        "original_run_id": run_id,
        "run_id": result["run_id"],
        "experiment_id": run.info.experiment_id,
        "original": original,
        "reproduced": reproduced,
        "match": match,
        "max_abs_diff": worst,
        "model_version": result["model_version"],
        "snapshot_path": config["snapshot_path"],
        "tracking_uri": result["tracking_uri"],
    }


def format_report(r: dict[str, Any]) -> str:
    lines = [
        f"Original run   : {r['original_run_id']}",
        f"Reproduction   : {r['run_id']}  (tag {REPRODUCES_TAG}={r['original_run_id']})",
        f"Snapshot       : {r['snapshot_path']}",
        f"Tracking store : {r['tracking_uri']}",
        "",
        f"{'metric':<12} {'original':>14} {'reproduced':>14} {'abs diff':>10}",
    ]
    for k in COMPARED_METRICS:
        if k in r["original"] or k in r["reproduced"]:
            a, b = r["original"].get(k, math.nan), r["reproduced"].get(k, math.nan)
            lines.append(f"{k:<12} {a:>14.6f} {b:>14.6f} {abs(a - b):>10.2e}")
    lines.append("")
    if r.get("model_version"):
        lines.append(f"Registered as version {r['model_version']}.")
    lines.append(
        "RESULT: MATCH - the run reproduces." if r["match"]
        else f"RESULT: DIFFERS - largest difference {r['max_abs_diff']:.3g} (expected on GPU; a bug on CPU)."
    )
    return "\n".join(lines)
