"""Hyperparameter search runtime: parent run, one trial per child run, register the best (runtime module).

Built on :func:`mlops_provider.runtime.training.run.train` (one keyed, resumable training run) and the
MLflow helpers of :mod:`mlops_provider.runtime.training.tracking`. A trial logs its model in its child run but never
registers it; :func:`register_best` registers the chosen trial's ``runs:/<id>/model``.

Idempotency: parent and trial runs carry ``mlops.idempotency_key``. A finished trial is reused;
a trial run without its model (the task died) is reopened under the same run id and retrained;
a parent whose best trial is registered returns that version.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient

from mlops_provider.exceptions import TrainingError
from mlops_provider.runtime.training.model import normalize_architecture
from mlops_provider.runtime.training.run import train
from mlops_provider.runtime.training.tracking import (
    COMPLETE_TAG,
    FINAL_METRICS,
    IDEMPOTENCY_TAG,
    MODEL_ARTIFACT_NAME,
    VERSION_TAG,
    config_hash,
    configure_tracking,
    find_keyed_run,
    flatten_params,
    get_or_create_experiment,
    make_idempotency_key,
    register_model_version,
    registered_version,
)

log = logging.getLogger(__name__)

PARENT_TAG = "mlflow.parentRunId"
ROLE_TAG = "mlops.hpo.role"
TRIAL_TAG = "mlops.hpo.trial_id"


# ---------------------------------------------------------------------------- helpers
def read_manifest(snapshot_path: str) -> dict[str, Any]:
    path = Path(snapshot_path) / "manifest.json"
    try:
        return dict(json.loads(path.read_text()))
    except FileNotFoundError as e:
        raise TrainingError(
            f"snapshot manifest {path} not found; run the training_dataset task first or fix the snapshot path."
        ) from e


def register_run_model(client: MlflowClient, run_id: str, model_name: str, tags: dict[str, str]) -> Any:
    """Register ``runs:/<run_id>/model`` as a new version of ``model_name`` (or return the one it has)."""
    existing = registered_version(client, model_name, client.get_run(run_id))
    if existing is not None:
        return existing
    version = register_model_version(f"runs:/{run_id}/{MODEL_ARTIFACT_NAME}", model_name, tags)
    client.set_tag(run_id, VERSION_TAG, str(version.version))
    return version


# ---------------------------------------------------------------------------- parent
def start_parent_run(
    snapshot_path: str,
    model_name: str,
    search: Mapping[str, Any],
    *,
    base_config: Mapping[str, Any] | None = None,
    tracking: dict[str, Any] | None = None,
    dag_id: str = "",
    airflow_run_id: str = "",
) -> dict[str, Any]:
    """Create (or find by key) the parent run of a search; returns ``{"parent_run_id", "experiment_id",
    "key", "reused", "n_trials", "metric"}``."""
    manifest = read_manifest(snapshot_path)
    snapshot_hash = str(manifest.get("hash", ""))
    key = make_idempotency_key(
        "hpo-parent", model_name, dag_id, airflow_run_id, snapshot_hash, search.get("digest", ""),
        config_hash(dict(base_config or {})),
    )
    client = configure_tracking(tracking)
    experiment_id = get_or_create_experiment(client, model_name, (tracking or {}).get("artifact_location"))
    existing = find_keyed_run(client, experiment_id, key)
    out = {"experiment_id": experiment_id, "key": key, "n_trials": int(search.get("n_trials", 0)),
           "metric": str(search.get("metric", "roc_auc"))}
    if existing is not None:
        return {**out, "parent_run_id": existing.info.run_id, "reused": True}
    tags = {
        IDEMPOTENCY_TAG: key, ROLE_TAG: "parent", "mlops.dag_id": dag_id, "mlops.run_id": airflow_run_id,
        "mlops.snapshot_path": str(snapshot_path), "mlops.snapshot_hash": snapshot_hash,
        "mlops.feature_service": str(manifest.get("feature_service", "")),
    }
    run = client.create_run(experiment_id, run_name=f"{model_name}-hpo-{snapshot_hash[:8] or 'snapshot'}", tags=tags)
    run_id = run.info.run_id
    client.log_param(run_id, "hpo.search", json.dumps(dict(search), sort_keys=True, default=str)[:6000])
    client.log_param(run_id, "hpo.metric", out["metric"])
    client.log_param(run_id, "hpo.n_trials", str(out["n_trials"]))
    for k, v in flatten_params(dict(base_config or {})).items():
        client.log_param(run_id, f"base.{k}", v)
    log.info("created HPO parent run %s (key %s)", run_id, key)
    return {**out, "parent_run_id": run_id, "reused": False}


# ---------------------------------------------------------------------------- trial
def _trial_result(run: Any, trial: Mapping[str, Any], parent_run_id: str, reused: bool) -> dict[str, Any]:
    metrics = {k: float(v) for k, v in run.data.metrics.items() if k in FINAL_METRICS}
    return {
        "trial_id": str(trial["trial_id"]),
        "index": int(trial.get("index", 0)),
        "params": dict(trial.get("params", {})),
        "run_id": run.info.run_id,
        "parent_run_id": parent_run_id,
        "model_uri": f"runs:/{run.info.run_id}/{MODEL_ARTIFACT_NAME}",
        "metrics": dict(sorted(metrics.items())),
        "reused": reused,
    }


def run_trial(
    snapshot_path: str,
    model_name: str,
    categorical: list[str],
    numeric: list[str],
    label: str,
    settings: Mapping[str, Any],
    trial: Mapping[str, Any],
    *,
    parent_run_id: str,
    tracking: dict[str, Any] | None = None,
    sanity_check: bool = True,
    on_run_start: Callable[[str, str], None] | None = None,
    system_metrics_interval: float | None = 5.0,
) -> dict[str, Any]:
    """Train one trial config with :func:`train` in a CHILD run of ``parent_run_id``
    (``register=False``: the model is logged, not registered). A finished trial is reused; an
    interrupted one resumes from its checkpoint in the same run (train()'s idempotency key)."""
    arch = normalize_architecture(settings.get("architecture"))
    epochs, batch_size = int(settings.get("epochs", 10)), int(settings.get("batch_size", 1024))
    lr, seed = float(settings.get("learning_rate", 1e-3)), int(settings.get("seed", 42))
    patience = int(settings.get("patience", 3))
    trial_id = str(trial["trial_id"])
    resolved = {"architecture": arch, "epochs": epochs, "batch_size": batch_size, "learning_rate": lr,
                "seed": seed, "patience": patience, "label": label,
                "features": {"categorical": list(categorical), "numeric": list(numeric)}}
    key = make_idempotency_key("hpo-trial", parent_run_id, trial_id, config_hash(resolved))
    client = configure_tracking(tracking)
    client.get_run(parent_run_id)  # the parent run must exist (a named MLflow error otherwise)
    run_tags = {ROLE_TAG: "trial", TRIAL_TAG: trial_id, "mlops.hpo.trial_index": str(int(trial.get("index", 0))),
                **{f"mlops.hpo.param.{k}": json.dumps(v) for k, v in dict(trial.get("params", {})).items()}}
    result = train(
        snapshot_path, model_name, categorical, numeric, label, arch, epochs=epochs, batch_size=batch_size, lr=lr,
        seed=seed, patience=patience, tracking=tracking, idempotency_key=key,
        on_run_start=on_run_start, register=False, run_name=trial_id, run_tags=run_tags,
        parent_run_id=parent_run_id, system_metrics_interval=system_metrics_interval, sanity_check=sanity_check,
    )
    run = client.get_run(result["run_id"])
    if run.data.tags.get(PARENT_TAG) != parent_run_id:  # a run reused from before it was a child: adopt it
        client.set_tag(run.info.run_id, PARENT_TAG, parent_run_id)
    out = _trial_result(run, trial, parent_run_id, reused=bool(result["reused"]))
    log.info("trial %s (run %s): %s", trial_id, out["run_id"], out["metrics"])
    return out


# ---------------------------------------------------------------------------- select
def register_best(
    trials: Sequence[Mapping[str, Any]],
    best: Mapping[str, Any],
    model_name: str,
    *,
    metric: str,
    parent_run_id: str,
    tracking: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Register the best trial's model; returns TorchTrainOperator's dict shape plus ``"hpo"``."""
    client = configure_tracking(tracking)
    uri = mlflow.get_tracking_uri()
    best_run = client.get_run(str(best["run_id"]))
    if best_run.data.tags.get(PARENT_TAG) != parent_run_id:
        raise TrainingError(
            f"trial run {best_run.info.run_id} is not a child of the HPO parent run {parent_run_id}; "
            "pass the hpo_parent and hpo_trial results of the same DAG run."
        )
    if best_run.data.tags.get(COMPLETE_TAG) != "true":
        raise TrainingError(f"trial run {best_run.info.run_id} has no logged model; re-run its hpo_trial task.")
    rt = best_run.data.tags
    version_tags = {str(k): str(v) for k, v in (tags or {}).items()}
    version_tags.update({
        "snapshot_path": rt.get("mlops.snapshot_path", ""), "snapshot_hash": rt.get("mlops.snapshot_hash", ""),
        "feature_service": rt.get("mlops.feature_service", ""),
        "hpo.parent_run_id": parent_run_id, "hpo.trial_id": str(best["trial_id"]), "hpo.metric": metric,
        "hpo.metric_value": str(best["metrics"][metric]), "hpo.n_trials": str(len(trials)),
        "hpo.params": json.dumps(best.get("params", {}), sort_keys=True)[:4000],
    })
    before = registered_version(client, model_name, best_run)
    version = register_run_model(client, best_run.info.run_id, model_name, version_tags)
    reused = before is not None
    # the parent records the outcome and is closed
    client.set_tag(parent_run_id, "mlops.hpo.best_trial_id", str(best["trial_id"]))
    client.set_tag(parent_run_id, "mlops.hpo.best_run_id", best_run.info.run_id)
    client.set_tag(parent_run_id, VERSION_TAG, str(version.version))
    value = float(best["metrics"][metric])
    if math.isfinite(value):
        client.log_metric(parent_run_id, f"best_{metric}", value)
    if client.get_run(parent_run_id).info.status != "FINISHED":
        client.set_terminated(parent_run_id, "FINISHED")
    metrics = {k: float(v) for k, v in best_run.data.metrics.items() if k in FINAL_METRICS}
    summary = [{"trial_id": t.get("trial_id"), "run_id": t.get("run_id"),
                metric: (t.get("metrics") or {}).get(metric)} for t in trials]
    log.info("registered %s v%s from trial %s (%s=%.4f)%s", model_name, version.version, best["trial_id"],
             metric, value, " (already registered)" if reused else "")
    return {
        "run_id": best_run.info.run_id,
        "model_version": str(version.version),
        "model_uri": f"models:/{version.name}/{version.version}",
        "metrics": dict(sorted(metrics.items())),
        "tracking_uri": uri,
        "reused": reused,
        "hpo": {"parent_run_id": parent_run_id, "best_trial_id": str(best["trial_id"]), "metric": metric,
                "n_trials": len(trials), "trials": summary},
    }
