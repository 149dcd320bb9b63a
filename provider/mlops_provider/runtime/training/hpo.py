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
from typing import Any

import mlflow
from mlflow import MlflowClient

from mlops_provider.exceptions import TrainingError
from mlops_provider.runtime.features.snapshot import read_manifest
from mlops_provider.runtime.training.run import resolved_config, train
from mlops_provider.runtime.training.tracking import (
    COMPLETE_TAG,
    IDEMPOTENCY_TAG,
    MODEL_ARTIFACT_NAME,
    VERSION_TAG,
    VERSION_TAGS_ARTIFACT,
    complete_registration,
    config_hash,
    configure_tracking,
    final_metrics,
    find_keyed_run,
    flatten_params,
    get_or_create_experiment,
    make_idempotency_key,
    register_model_version,
    registered_version,
)
from mlops_provider.specs import TrainingSpec

log = logging.getLogger(__name__)

PARENT_TAG = "mlflow.parentRunId"
ROLE_TAG = "mlops.hpo.role"
TRIAL_TAG = "mlops.hpo.trial_id"


# ---------------------------------------------------------------------------- helpers
def register_run_model(client: MlflowClient, run_id: str, model_name: str, tags: dict[str, str]) -> Any:
    """Register ``runs:/<run_id>/model`` as a new version of ``model_name`` (or return the one it has), with
    ``tags`` plus the task tags the run recorded; the run's registration tags are completed either way."""
    run = client.get_run(run_id)
    existing = registered_version(client, model_name, run)
    if existing is None:
        with_task = {**_run_version_tags(run_id), **tags}
        client.log_dict(run_id, with_task, VERSION_TAGS_ARTIFACT)
        existing = register_model_version(f"runs:/{run_id}/{MODEL_ARTIFACT_NAME}", model_name, with_task)
    complete_registration(client, client.get_run(run_id), existing, end=False)
    return existing


def _run_version_tags(run_id: str) -> dict[str, str]:
    """The task tags (``mlops.task``, ``mlops.classes``, ...) a logged-but-unregistered model carries in its
    MLflow model metadata."""
    try:
        from mlflow.models import get_model_info

        meta = get_model_info(f"runs:/{run_id}/{MODEL_ARTIFACT_NAME}").metadata or {}
    except Exception:  # noqa: BLE001 - a model without metadata: no task tags to copy
        return {}
    return {str(k): str(v) for k, v in meta.items() if str(k).startswith("mlops.")}


# ---------------------------------------------------------------------------- parent
def start_parent_run(
    snapshot_path: str,
    model_name: str,
    search: Mapping[str, Any],
    *,
    base: TrainingSpec,
    tracking: dict[str, Any] | None = None,
    dag_id: str = "",
    airflow_run_id: str = "",
    force_retrain: bool = False,
    store: Any = None,
) -> dict[str, Any]:
    """Create (or find by key) the parent run of a search; returns ``{"parent_run_id", "experiment_id",
    "key", "reused", "n_trials", "metric"}``.

    Keyed by content like a training run (model, snapshot hash, search, the base training config): a later DAG
    run on the same snapshot and config finds the same parent, so its trials and registered best version are
    reused; ``force_retrain`` adds the Airflow run id."""
    manifest = read_manifest(snapshot_path, store=store)
    snapshot_hash = str(manifest.get("hash", ""))
    base_config = resolved_config(model_name, snapshot_hash, base)
    key = make_idempotency_key(
        "hpo-parent", model_name, snapshot_hash, search.get("digest", ""), config_hash(base_config),
        *(("force", dag_id, airflow_run_id) if force_retrain else ()),
    )
    client = configure_tracking(tracking)
    experiment_id = get_or_create_experiment(client, model_name, (tracking or {}).get("artifact_location"))
    existing = find_keyed_run(client, experiment_id, key)
    out = {"experiment_id": experiment_id, "key": key, "n_trials": int(search.get("n_trials", 0)),
           "metric": str(search.get("metric") or base.search_metric)}
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
    for k, v in flatten_params({k: v for k, v in base_config.items() if k != "features"}).items():
        client.log_param(run_id, f"base.{k}", v)
    log.info("created HPO parent run %s (key %s)", run_id, key)
    return {**out, "parent_run_id": run_id, "reused": False}


# ---------------------------------------------------------------------------- trial
def _trial_result(run: Any, trial: Mapping[str, Any], parent_run_id: str, reused: bool,
                  resumed_from_epoch: int | None = None) -> dict[str, Any]:
    return {
        "trial_id": str(trial["trial_id"]),
        "index": int(trial.get("index", 0)),
        "params": dict(trial.get("params", {})),
        "run_id": run.info.run_id,
        "parent_run_id": parent_run_id,
        "model_uri": f"runs:/{run.info.run_id}/{MODEL_ARTIFACT_NAME}",
        "metrics": dict(sorted(final_metrics(run.data.metrics).items())),
        "reused": reused,
        "resumed_from_epoch": resumed_from_epoch,  # a retried trial that continued from its checkpoint
    }


def run_trial(
    snapshot_path: str,
    model_name: str,
    spec: TrainingSpec,
    trial: Mapping[str, Any],
    *,
    parent_run_id: str,
    tracking: dict[str, Any] | None = None,
    sanity_check: bool = True,
    on_run_start: Callable[[str, str], None] | None = None,
    store: Any = None,
    checkpoint_root: str | None = None,
) -> dict[str, Any]:
    """Train one trial (``spec``: the training spec with the trial's parameters applied,
    :func:`mlops_provider.search_space.apply_trial`) with :func:`train` in a CHILD run of ``parent_run_id``
    (``register=False``: the model is logged, not registered). A finished trial is reused; an interrupted one
    resumes from its checkpoint in the same run (train()'s idempotency key)."""
    trial_id = str(trial["trial_id"])
    key = make_idempotency_key("hpo-trial", parent_run_id, trial_id, config_hash(resolved_config(model_name, "",
                                                                                                spec)))
    client = configure_tracking(tracking)
    client.get_run(parent_run_id)  # the parent run must exist (a named MLflow error otherwise)
    run_tags = {ROLE_TAG: "trial", TRIAL_TAG: trial_id, "mlops.hpo.trial_index": str(int(trial.get("index", 0))),
                **{f"mlops.hpo.param.{k}": json.dumps(v) for k, v in dict(trial.get("params", {})).items()}}
    result = train(
        snapshot_path, model_name, spec, tracking=tracking, idempotency_key=key, on_run_start=on_run_start,
        register=False, run_name=trial_id, run_tags=run_tags, parent_run_id=parent_run_id, sanity_check=sanity_check,
        store=store, checkpoint_root=checkpoint_root,
    )
    run = client.get_run(result["run_id"])
    if run.data.tags.get(PARENT_TAG) != parent_run_id:  # a run reused from before it was a child: adopt it
        client.set_tag(run.info.run_id, PARENT_TAG, parent_run_id)
    out = _trial_result(run, trial, parent_run_id, reused=bool(result["reused"]),
                        resumed_from_epoch=result.get("resumed_from_epoch"))
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
    metrics = final_metrics(best_run.data.metrics)
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
