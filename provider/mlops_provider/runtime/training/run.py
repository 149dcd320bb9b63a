"""One training run end to end (runtime module: runs inside the task).

:func:`train` loads a snapshot, fits the preprocessor and the task's head (:mod:`.heads`) on its train
split, trains the network with :func:`~mlops_provider.runtime.training.loop.fit_network`, calibrates a
classifier's probabilities on the validation split (:mod:`.calibration`), logs everything to MLflow
(:mod:`.tracking`) and registers a NEW model version tagged with its task (``mlops.task``, ``mlops.label``,
``mlops.classes``, ``mlops.quantiles``, ``mlops.calibration``). It never moves an alias (the gate / promote
step does). :func:`train_task` is TorchTrainOperator's entry point: the content key, the sanity check,
then :func:`train`.

Idempotency, by content: the MLflow run carries the tag ``mlops.idempotency_key``, a hash of (model,
snapshot hash, the model-defining training settings: :meth:`TrainingSpec.model_config`). So a training run
on an unchanged snapshot and config returns the version already registered, whichever DAG run asks, unless
the run forces a retrain (then the key also holds the Airflow run id). For a key with a run but no version:

- its checkpoint (``runtime/training/checkpoint.py``, under ``$MLOPS_HOME/checkpoints/<model>/<key>/``)
  belongs to that run -> the run is reopened under the same ``run_id`` and continues from the checkpoint
  with restored model / optimizer / RNG / early-stopping state, so on CPU the result equals an
  uninterrupted run;
- no checkpoint (killed before its first one) -> that run is closed as ``KILLED`` (tag
  ``mlops.superseded_by``) and a fresh run starts: MLflow never keeps a dead attempt RUNNING;
- registered but killed before the run was tagged -> the run's ``mlops.model_version`` /
  ``mlops.training_complete`` tags (and any version tag missing from ``config/version_tags.json``) are
  completed, the run is closed FINISHED and the version returned.

Per-epoch metrics are written by a background thread (:class:`~.tracking.MetricWriter`: one batch per epoch,
each step once even across a resume) and flushed before the model is registered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import mlflow
import numpy as np
import torch

from mlops_provider.exceptions import TrainingError
from mlops_provider.runtime.training import loop
from mlops_provider.runtime.training.architectures import build_network
from mlops_provider.runtime.training.checkpoint import CheckpointStore, checkpoint_dir, checkpoint_mirror
from mlops_provider.runtime.training.data import load_snapshot_frame, split_frames
from mlops_provider.runtime.training.model import Preprocessor, normalize_architecture, predict_logits
from mlops_provider.runtime.training.tracking import (
    COMPLETE_TAG,
    CONFIG_ARTIFACT,
    IDEMPOTENCY_TAG,
    SUPERSEDED_TAG,
    VERSION_TAGS_ARTIFACT,
    MetricWriter,
    close_dead_run,
    complete_registration,
    config_hash,
    configure_tracking,
    final_metrics,
    find_keyed_run,
    flatten_params,
    get_or_create_experiment,
    git_tags,
    log_inputs,
    log_model,
    logged_steps,
    make_idempotency_key,
    register_model_version,
    registered_version,
    run_result,
)
from mlops_provider.specs import TrainingSpec, as_dict

log = logging.getLogger(__name__)


def resolved_config(model_name: str, snapshot_hash: str, spec: TrainingSpec) -> dict[str, Any]:
    """What defines a trained model: the content key's input (the architecture normalised)."""
    cfg = spec.model_config()
    cfg["architecture"] = normalize_architecture(cfg["architecture"])
    return {"model_name": model_name, "snapshot_hash": snapshot_hash, **cfg}


def content_key(model_name: str, snapshot_hash: str, spec: TrainingSpec, *extra: Any) -> str:
    """The idempotency key of a training run: model, snapshot content and training config (+ ``extra``)."""
    return make_idempotency_key(model_name, snapshot_hash, config_hash(resolved_config(model_name, snapshot_hash,
                                                                                       spec)), *extra)


def train(
    snapshot_path: str,
    model_name: str,
    spec: TrainingSpec,
    *,
    tags: dict[str, str] | None = None,
    tracking: dict[str, Any] | None = None,
    idempotency_key: str | None = None,
    experiment_name: str | None = None,
    on_run_start: Callable[[str, str], None] | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    register: bool = True,
    run_name: str | None = None,
    run_tags: dict[str, str] | None = None,
    parent_run_id: str | None = None,
    device: str | None = None,
    checkpoint_home: str | None = None,
    checkpoint_root: str | None = None,
    keep_checkpoint: bool = False,
    dag_file: str | None = None,
    project_dir: str | None = None,
    expected_snapshot_hash: str | None = None,
    sanity_check: bool = False,
    num_threads: int | None = None,
    store: Any = None,
) -> dict[str, Any]:
    """Train ``spec`` on a snapshot, log and (by default) register a new version of ``model_name``. Returns
    ``{"run_id", "model_version", "model_uri", "metrics", "tracking_uri", "reused", "resumed_from_epoch",
    "epochs_run"}`` (``model_version`` is None when ``register=False``; ``metrics``: the task's validation
    metrics, ``tasks.training_metrics``, of the calibrated model, plus ``best_epoch``).

    ``spec``: the :class:`~mlops_provider.specs.TrainingSpec` (task, features, label, architecture, epochs,
    batch size, learning rate, seed, patience, calibration, checkpoint_every, compile, system metrics).
    ``tracking``: ``{"tracking_uri", "registry_uri", "artifact_location"}`` (MLflowHook's public config; a
    remote server's reachability is checked by the caller); ``tags``: model version tags from the caller
    (dag_id, run_id, data_interval); snapshot_path / snapshot_hash / feature_service and the task tags are
    added here. ``on_run_start(run_id, experiment_id)`` is called once the MLflow run exists (extra links);
    ``on_epoch(epoch, metrics)`` after each epoch (after its checkpoint).

    ``idempotency_key``: default the content key (:func:`content_key`); see the module doc for what a second
    call with the same key does. Extras: ``register=False`` logs the model without registering it (trials;
    completion is marked by the run tag ``mlops.training_complete``), ``run_name`` / ``run_tags`` /
    ``parent_run_id`` (child runs), ``device`` (default: CUDA when present), ``dag_file`` / ``project_dir``
    (git lineage tags), ``expected_snapshot_hash`` (refuse a snapshot whose manifest hash differs),
    ``sanity_check`` (run :func:`~.loop.sanity_check` before the MLflow run starts; skipped when the keyed run
    is reused), ``num_threads`` (torch intra-op threads on CPU; default :func:`~.loop.cpu_threads`),
    ``store`` (the :class:`~mlops_provider.runtime.io.objstore.ObjectStore` an ``s3://`` snapshot is read
    through; None: the process default), ``checkpoint_root`` (``<storage.root>/checkpoints``: a directory the
    workers share, or an ``s3://`` prefix the local checkpoint is mirrored to through ``store``, so a retry on
    another worker resumes; default ``$MLOPS_HOME/checkpoints`` of the worker).
    """
    arch_n = normalize_architecture(spec.architecture)
    df, manifest = load_snapshot_frame(snapshot_path, store=store)
    snapshot_hash = str(manifest.get("hash", ""))
    if expected_snapshot_hash and snapshot_hash != expected_snapshot_hash:
        raise TrainingError(
            f"snapshot {snapshot_path} has hash {snapshot_hash[:16]} but {expected_snapshot_hash[:16]} was expected "
            "(recorded on the run being reproduced). The snapshot was replaced; the original data is gone."
        )
    feature_service = str(manifest.get("feature_service", ""))
    resolved = resolved_config(model_name, snapshot_hash, spec)
    resolved_hash = config_hash(resolved)
    key = idempotency_key or make_idempotency_key(model_name, snapshot_hash, resolved_hash)
    categorical, numeric, label = spec.features.categorical, spec.features.numeric, spec.label

    client = configure_tracking(tracking)
    uri = mlflow.get_tracking_uri()
    experiment_id = get_or_create_experiment(
        client, experiment_name or model_name, (tracking or {}).get("artifact_location")
    )
    existing = find_keyed_run(client, experiment_id, key)
    checkpoints = CheckpointStore(checkpoint_dir(model_name, key, checkpoint_home, root=checkpoint_root),
                                  mirror=checkpoint_mirror(checkpoint_root, model_name, key), objects=store)
    resume_run_id: str | None = None
    if existing is not None:
        version = registered_version(client, model_name, existing) if register else None
        complete = existing.data.tags.get(COMPLETE_TAG) == "true"
        if version is not None or (not register and complete):
            if version is not None:
                complete_registration(client, existing, version)  # a kill between registration and tagging
            elif existing.info.status != "FINISHED":
                client.set_terminated(existing.info.run_id, "FINISHED")
            log.info("run %s (key %s) already complete%s; not retraining", existing.info.run_id, key,
                     f" and registered {model_name} v{version.version}" if version is not None else "")
            checkpoints.clear()
            return run_result(existing.info.run_id, version, final_metrics(existing.data.metrics), uri, reused=True,
                              resumed_from_epoch=None, epochs_run=int(existing.data.metrics.get("epochs_run", 0)))
        resume_run_id = existing.info.run_id

    train_df, val_df, head = split_frames(df, spec, str(snapshot_path))
    del df
    if sanity_check:  # cheap pre-flight: a broken model never starts the expensive run
        loop.sanity_check(train_df, categorical, numeric, label, arch_n, head=head, seed=spec.seed)
    pre = Preprocessor.fit(train_df, categorical, numeric)
    # build once before touching the run: a bad architecture / entry point fails here, named, with no run
    probe_net = build_network(arch_n, len(numeric), pre.cardinalities, head.n_outputs, head.task)
    del probe_net

    checkpoint = checkpoints.load()
    if checkpoint is not None and (resume_run_id is None or checkpoint.get("run_id") != resume_run_id
                                   or checkpoint.get("config_hash") != resolved_hash):
        log.info("discarding checkpoint %s: it belongs to another run or configuration", checkpoints.path)
        checkpoints.clear()
        checkpoint = None
    if resume_run_id is not None and checkpoint is None:
        # killed before its first checkpoint: nothing to resume; close it instead of leaving it RUNNING
        close_dead_run(client, existing, "no checkpoint to resume from (killed before its first one)")
        resume_run_id = None
    resumed_from = int(checkpoint["epoch"]) if checkpoint is not None else 0

    version_tags = {str(k): str(v) for k, v in (tags or {}).items()}
    version_tags.update(
        {"snapshot_path": str(snapshot_path), "snapshot_hash": snapshot_hash, "feature_service": feature_service,
         IDEMPOTENCY_TAG: key}
    )
    all_run_tags = {IDEMPOTENCY_TAG: key, **{f"mlops.{k}": v for k, v in version_tags.items() if k != IDEMPOTENCY_TAG}}
    all_run_tags["mlops.task"] = spec.task
    all_run_tags.update(git_tags(project_dir, dag_file))
    all_run_tags.update({str(k): str(v) for k, v in (run_tags or {}).items()})
    if parent_run_id:
        all_run_tags["mlflow.parentRunId"] = parent_run_id
    dev = torch.device(device) if device else loop.select_device()
    all_run_tags["mlops.device"] = str(dev)

    interval = spec.system_metrics_interval
    if interval:
        mlflow.set_system_metrics_sampling_interval(float(interval))
        mlflow.set_system_metrics_samples_before_logging(1)
    with mlflow.start_run(
        run_id=resume_run_id,
        experiment_id=None if resume_run_id else experiment_id,
        run_name=None if resume_run_id else (run_name or f"{model_name}-{snapshot_hash[:8] or 'snapshot'}"),
        tags=all_run_tags,
        log_system_metrics=bool(interval),
    ) as run:
        run_id = run.info.run_id
        if existing is not None and resume_run_id is None:
            client.set_tag(existing.info.run_id, SUPERSEDED_TAG, run_id)
        writer = MetricWriter(client, run_id)
        try:
            if on_run_start is not None:
                on_run_start(run_id, experiment_id)
            if resumed_from:
                client.set_tag(run_id, "mlops.resumed_from_epoch", str(resumed_from))
            mlflow.log_params({**flatten_params({k: v for k, v in resolved.items() if k != "features"}),
                               "n_categorical": len(categorical), "n_numeric": len(numeric),
                               "rows_train": len(train_df), "rows_validation": len(val_df)})
            mlflow.log_dict({**resolved, "snapshot_path": str(snapshot_path), "feature_service": feature_service,
                             "training": as_dict(spec)}, CONFIG_ARTIFACT)
            inputs = client.get_run(run_id).inputs if resume_run_id else None
            if not (inputs is not None and inputs.dataset_inputs):
                log_inputs(train_df, val_df, snapshot_path, snapshot_hash, feature_service, label)

            logged = logged_steps(client, run_id) if resume_run_id else set()
            if checkpoint is not None:  # epochs the dead worker finished but whose metrics it never flushed
                for step, row in enumerate(checkpoint["history"], start=1):
                    if step not in logged:
                        writer.log(row, step=step)
                        logged.add(step)

            def epoch_done(epoch: int, row: dict[str, float]) -> None:
                if epoch not in logged:  # one point per step, even across a resume
                    writer.log(row, step=epoch)  # written by the writer's thread
                if on_epoch is not None:
                    on_epoch(epoch, row)

            net, history, best_epoch = loop.fit_network(
                pre, train_df, val_df, label, arch_n, epochs=spec.epochs, batch_size=spec.batch_size,
                lr=spec.learning_rate, seed=spec.seed, patience=spec.patience, head=head, on_epoch=epoch_done,
                device=dev, compile_model=spec.compile, checkpoint=checkpoints, checkpoint_every=spec.checkpoint_every,
                checkpoint_extra={"run_id": run_id, "key": key, "config_hash": resolved_hash},
                resume=checkpoint, num_threads=num_threads,
            )
            metrics = finish_head(net, pre, head, val_df, spec, str(snapshot_path))
            metrics.update(best_epoch=float(best_epoch), epochs_run=float(len(history)))
            writer.log(metrics)
            writer.close()  # every metric reaches the store before the model is registered
            if head.calibration is not None:
                mlflow.log_dict(head.calibration, "config/calibration.json")

            info = log_model(net, pre, arch_n, val_df[[*categorical, *numeric]], head)
            version = None
            if register:
                version_tags.update(head.tags())
                mlflow.log_dict(version_tags, VERSION_TAGS_ARTIFACT)
                version = register_model_version(info.model_uri, model_name, version_tags)
                complete_registration(client, client.get_run(run_id), version, end=False)
            client.set_tag(run_id, COMPLETE_TAG, "true")
        finally:
            writer.close()  # idempotent: on an error, what is queued still reaches the store
    if not keep_checkpoint:
        checkpoints.clear()
    log.info("%s %s from run %s: %s", "registered" if version is not None else "logged",
             f"{model_name} v{version.version}" if version is not None else model_name, run_id, metrics)
    return run_result(run_id, version, final_metrics(metrics), uri, False, resumed_from_epoch=resumed_from,
                      epochs_run=len(history))


def finish_head(
    net: torch.nn.Module, pre: Preprocessor, head: Any, val_df: Any, spec: TrainingSpec, where: str
) -> dict[str, float]:
    """Calibrate a classifier on the validation split, then the task's validation metrics of what it serves."""
    z_val = predict_logits(net, pre, val_df)
    truth = head.truth(val_df[spec.label], where, "validation")
    record = head.calibrate(truth, z_val, spec.calibration, spec.seed)
    if record is not None:
        log.info("calibration: %s", record.get("reason"))
    outputs = head.outputs(z_val)
    if not np.all(np.isfinite(outputs)):
        raise TrainingError(f"the trained model predicts non-finite values on the validation split of {where}.")
    metrics = head.metrics(truth, outputs)
    if record is not None:  # *_after is in-sample for the map's 1-2 parameters; the cross-validated value is honest
        metrics.update({f"calibration_{k}": float(record[k]) for k in
                        ("log_loss_before", "log_loss_after", "ece_before", "ece_after")})
        cv = (record.get("cv_log_loss") or {}).get(record["method"])
        if cv is not None:
            metrics["calibration_log_loss_cv"] = float(cv)
    return metrics


def train_task(
    snapshot_path: str,
    model_name: str,
    spec: TrainingSpec,
    *,
    tracking: dict[str, Any] | None,
    dag_id: str,
    airflow_run_id: str,
    data_interval: str,
    force_retrain: bool = False,
    dag_file: str | None = None,
    on_run_start: Callable[[str, str], None] | None = None,
    store: Any = None,
    checkpoint_root: str | None = None,
) -> dict[str, Any]:
    """TorchTrainOperator's entry point: :func:`train` under the content key, with the sanity check.

    The key is (model, snapshot hash, training config): a retry of the task resumes the MLflow run (from its
    checkpoint), and any later DAG run on the same snapshot and config returns the registered version
    without training. ``force_retrain`` adds the Airflow run id to the key: this DAG run trains a new
    version (its own retries still resume it). Returns :func:`train`'s dict.
    """
    from mlops_provider.runtime.features.snapshot import read_manifest

    manifest = read_manifest(snapshot_path, store=store)
    snapshot_hash = str(manifest.get("hash", snapshot_path))
    log.info("snapshot %s: %s rows, hash %s", snapshot_path, manifest.get("rows"), snapshot_hash[:16])
    extra = ("force", dag_id, airflow_run_id) if force_retrain else ()
    key = content_key(model_name, snapshot_hash, spec, *extra)
    tags = {"dag_id": dag_id, "run_id": airflow_run_id, "data_interval": data_interval}
    if force_retrain:
        tags["force_retrain"] = "true"
    return train(snapshot_path, model_name, spec, tags=tags, tracking=tracking, idempotency_key=key,
                 on_run_start=on_run_start, dag_file=dag_file, sanity_check=True, store=store,
                 checkpoint_root=checkpoint_root)


__all__ = ["content_key", "resolved_config", "train", "train_task"]
