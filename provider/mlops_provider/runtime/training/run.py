"""One training run end to end (runtime module: runs inside the task).

:func:`train` loads a snapshot, fits the preprocessor on its train split, trains the network with
:func:`~mlops_provider.runtime.training.loop.fit_network`, logs everything to MLflow
(:mod:`.tracking`) and registers a NEW model version. It never moves an alias (the gate / promote
step does). :func:`train_task` is TorchTrainOperator's entry point: the run key of one DAG run, the
sanity check, then :func:`train`.

Idempotency: the MLflow run carries the tag ``mlops.idempotency_key``. A run with that key that
already registered a version is returned as is (no retraining); a run with that key and no version
yet (the task died mid-way) is reopened under the same ``run_id`` and continues from the last
checkpoint (``runtime/training/checkpoint.py``, under ``$MLOPS_HOME/checkpoints/<model>/<key>/``)
with restored model / optimizer / RNG / early-stopping state, so on CPU the result equals an
uninterrupted run. Per-epoch metrics are written by a background thread (:class:`~.tracking.MetricWriter`:
one batch per epoch, each step once even across a resume) and flushed before the run ends; system
metrics are sampled by MLflow.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import torch

from mlops_provider.exceptions import TrainingError
from mlops_provider.runtime.metrics import binary_metrics
from mlops_provider.runtime.training import loop
from mlops_provider.runtime.training.architectures import build_network
from mlops_provider.runtime.training.checkpoint import CheckpointStore, checkpoint_dir
from mlops_provider.runtime.training.data import load_snapshot_frame, split_frames
from mlops_provider.runtime.training.model import Preprocessor, normalize_architecture, predict_proba
from mlops_provider.runtime.training.tracking import (
    COMPLETE_TAG,
    CONFIG_ARTIFACT,
    FINAL_METRICS,
    IDEMPOTENCY_TAG,
    VERSION_TAG,
    MetricWriter,
    config_hash,
    configure_tracking,
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

log = logging.getLogger(__name__)


def train(
    snapshot_path: str,
    model_name: str,
    categorical: list[str],
    numeric: list[str],
    label: str,
    arch: dict[str, Any] | None = None,
    epochs: int = 10,
    batch_size: int = 1024,
    lr: float = 1e-3,
    seed: int = 42,
    patience: int = 3,
    tags: dict[str, str] | None = None,
    tracking: dict[str, Any] | None = None,
    *,
    idempotency_key: str | None = None,
    experiment_name: str | None = None,
    on_run_start: Callable[[str, str], None] | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    register: bool = True,
    run_name: str | None = None,
    run_tags: dict[str, str] | None = None,
    parent_run_id: str | None = None,
    device: str | None = None,
    compile_model: bool = False,
    checkpoint_every: int = 1,
    checkpoint_home: str | None = None,
    keep_checkpoint: bool = False,
    system_metrics_interval: float | None = 5.0,
    dag_file: str | None = None,
    project_dir: str | None = None,
    expected_snapshot_hash: str | None = None,
    sanity_check: bool = False,
    num_threads: int | None = None,
) -> dict[str, Any]:
    """Train, log and (by default) register a new version of ``model_name``. Returns
    ``{"run_id", "model_version", "model_uri", "metrics", "tracking_uri", "reused",
    "resumed_from_epoch", "epochs_run"}`` (``model_version`` is None when ``register=False``).

    ``tracking``: ``{"tracking_uri", "registry_uri", "artifact_location"}`` (MLflowHook's public
    config; a remote server's reachability is checked by the caller, e.g. ``MLflowHook.wait_until_reachable``);
    ``tags``: model version tags from the caller
    (dag_id, run_id, data_interval); snapshot_path / snapshot_hash / feature_service are added here.
    ``on_run_start(run_id, experiment_id)`` is called once the MLflow run exists (extra links);
    ``on_epoch(epoch, metrics)`` after each epoch (after its checkpoint).

    Crash safety: the run is keyed by ``idempotency_key``; the state is checkpointed every
    ``checkpoint_every`` epochs under ``<checkpoint_home or $MLOPS_HOME>/checkpoints/<model>/<key>/``;
    a second call with the same key after a crash / kill continues from the last checkpoint in the
    SAME MLflow run (metric steps are logged once each); after success the checkpoint is deleted
    (unless ``keep_checkpoint``) and a further call returns the registered version (``reused``).

    Extras for callers: ``register=False`` logs the model without registering it (trials;
    completion is marked by the run tag ``mlops.training_complete``), ``run_name`` / ``run_tags`` /
    ``parent_run_id`` (child runs), ``device`` (e.g. ``"cuda:1"``; default: CUDA when present),
    ``compile_model`` (``torch.compile``), ``system_metrics_interval`` (seconds; None = off),
    ``dag_file`` / ``project_dir`` (git lineage tags), ``expected_snapshot_hash`` (refuse a snapshot
    whose manifest hash differs), ``sanity_check`` (run :func:`~.loop.sanity_check` on the train split
    before the MLflow run starts; skipped when the keyed run is reused), ``num_threads`` (torch intra-op
    threads on CPU; default :func:`~.loop.cpu_threads`).
    """
    if epochs < 0 or batch_size <= 0 or lr <= 0 or patience < 1 or checkpoint_every < 1:
        raise TrainingError(
            f"invalid training settings epochs={epochs} batch_size={batch_size} learning_rate={lr} "
            f"patience={patience} checkpoint_every={checkpoint_every}: need epochs >= 0, batch_size > 0, "
            "learning_rate > 0, patience >= 1, checkpoint_every >= 1."
        )
    arch_n = normalize_architecture(arch)
    df, manifest = load_snapshot_frame(snapshot_path)
    snapshot_hash = str(manifest.get("hash", ""))
    if expected_snapshot_hash and snapshot_hash != expected_snapshot_hash:
        raise TrainingError(
            f"snapshot {snapshot_path} has hash {snapshot_hash[:16]} but {expected_snapshot_hash[:16]} was expected "
            "(recorded on the run being reproduced). The snapshot was replaced; the original data is gone."
        )
    feature_service = str(manifest.get("feature_service", ""))
    resolved = {
        "model_name": model_name,
        "snapshot_path": str(snapshot_path),
        "snapshot_hash": snapshot_hash,
        "feature_service": feature_service,
        "features": {"categorical": list(categorical), "numeric": list(numeric)},
        "label": label,
        "architecture": arch_n,
        "epochs": int(epochs),
        "batch_size": int(batch_size),
        "learning_rate": float(lr),
        "seed": int(seed),
        "patience": int(patience),
    }
    if compile_model:
        resolved["compile"] = True
    key = idempotency_key or make_idempotency_key(model_name, snapshot_hash, config_hash(resolved))

    client = configure_tracking(tracking)
    uri = mlflow.get_tracking_uri()
    experiment_id = get_or_create_experiment(
        client, experiment_name or model_name, (tracking or {}).get("artifact_location")
    )
    existing = find_keyed_run(client, experiment_id, key)
    store = CheckpointStore(checkpoint_dir(model_name, key, checkpoint_home))
    resume_run_id: str | None = None
    if existing is not None:
        version = registered_version(client, model_name, existing) if register else None
        complete = existing.data.tags.get(COMPLETE_TAG) == "true"
        if version is not None or (not register and complete):
            if existing.info.status != "FINISHED":
                client.set_terminated(existing.info.run_id, "FINISHED")
            log.info("run %s (key %s) already complete%s; not retraining", existing.info.run_id, key,
                     f" and registered {model_name} v{version.version}" if version is not None else "")
            metrics = {k: v for k, v in existing.data.metrics.items() if k in FINAL_METRICS}
            store.clear()
            return run_result(existing.info.run_id, version, metrics, uri, reused=True, resumed_from_epoch=None,
                           epochs_run=int(existing.data.metrics.get("epochs_run", 0)))
        resume_run_id = existing.info.run_id
        log.info("resuming MLflow run %s (key %s, status %s)", resume_run_id, key, existing.info.status)

    train_df, val_df = split_frames(df, categorical, numeric, label, str(snapshot_path))
    del df
    if sanity_check:  # cheap pre-flight: a broken model never starts the expensive run
        loop.sanity_check(train_df, categorical, numeric, label, arch_n, seed=seed)
    pre = Preprocessor.fit(train_df, categorical, numeric)
    # build once before touching the run: a bad architecture / entry point fails here, named, with no run
    probe_net = build_network(arch_n, len(numeric), pre.cardinalities)
    del probe_net

    checkpoint = store.load()
    if checkpoint is not None and (resume_run_id is None or checkpoint.get("run_id") != resume_run_id
                                   or checkpoint.get("config_hash") != config_hash(resolved)):
        log.info("discarding checkpoint %s: it belongs to another run or configuration", store.path)
        store.clear()
        checkpoint = None
    resumed_from = int(checkpoint["epoch"]) if checkpoint is not None else 0

    version_tags = {str(k): str(v) for k, v in (tags or {}).items()}
    version_tags.update(
        {"snapshot_path": str(snapshot_path), "snapshot_hash": snapshot_hash, "feature_service": feature_service,
         IDEMPOTENCY_TAG: key}
    )
    all_run_tags = {IDEMPOTENCY_TAG: key, **{f"mlops.{k}": v for k, v in version_tags.items() if k != IDEMPOTENCY_TAG}}
    all_run_tags.update(git_tags(project_dir, dag_file))
    all_run_tags.update({str(k): str(v) for k, v in (run_tags or {}).items()})
    if parent_run_id:
        all_run_tags["mlflow.parentRunId"] = parent_run_id
    dev = torch.device(device) if device else loop.select_device()
    all_run_tags["mlops.device"] = str(dev)

    system_metrics = bool(system_metrics_interval) and system_metrics_interval is not None
    if system_metrics:
        mlflow.set_system_metrics_sampling_interval(float(system_metrics_interval))  # type: ignore[arg-type]
        mlflow.set_system_metrics_samples_before_logging(1)
    with mlflow.start_run(
        run_id=resume_run_id,
        experiment_id=None if resume_run_id else experiment_id,
        run_name=None if resume_run_id else (run_name or f"{model_name}-{snapshot_hash[:8] or 'snapshot'}"),
        tags=all_run_tags,
        log_system_metrics=system_metrics,
    ) as run:
        run_id = run.info.run_id
        writer = MetricWriter(client, run_id)
        try:
            if on_run_start is not None:
                on_run_start(run_id, experiment_id)
            if resumed_from:
                client.set_tag(run_id, "mlops.resumed_from_epoch", str(resumed_from))
            mlflow.log_params({**flatten_params({k: v for k, v in resolved.items() if k != "features"}),
                               "n_categorical": len(categorical), "n_numeric": len(numeric),
                               "rows_train": len(train_df), "rows_validation": len(val_df)})
            mlflow.log_dict(resolved, CONFIG_ARTIFACT)
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
                pre, train_df, val_df, label, arch_n, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                patience=patience, on_epoch=epoch_done, device=dev, compile_model=compile_model,
                checkpoint=store, checkpoint_every=checkpoint_every,
                checkpoint_extra={"run_id": run_id, "key": key, "config_hash": config_hash(resolved)},
                resume=checkpoint, num_threads=num_threads,
            )
            p_val = predict_proba(net, pre, val_df)
            if not np.all(np.isfinite(p_val)):
                raise TrainingError(f"the trained model predicts non-finite probabilities on {snapshot_path}.")
            final = binary_metrics(pd.to_numeric(val_df[label]).to_numpy(), p_val)
            metrics = {**final, "best_epoch": float(best_epoch), "epochs_run": float(len(history))}
            writer.log(metrics)

            feature_cols = [*categorical, *numeric]
            info = log_model(net, pre, arch_n, val_df[feature_cols])
            version = None
            if register:
                version = register_model_version(info.model_uri, model_name, version_tags)
                client.set_tag(run_id, VERSION_TAG, str(version.version))
            client.set_tag(run_id, COMPLETE_TAG, "true")
        finally:
            writer.close()  # every queued metric reaches the store before the run ends
    if not keep_checkpoint:
        store.clear()
    log.info("%s %s from run %s: %s", "registered" if version is not None else "logged",
             f"{model_name} v{version.version}" if version is not None else model_name, run_id, final)
    return run_result(run_id, version, {k: metrics[k] for k in FINAL_METRICS}, uri, False,
                   resumed_from_epoch=resumed_from, epochs_run=len(history))


def train_task(
    snapshot_path: str,
    model_name: str,
    categorical: list[str],
    numeric: list[str],
    label: str,
    arch: dict[str, Any],
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    patience: int,
    tracking: dict[str, Any] | None,
    dag_id: str,
    airflow_run_id: str,
    data_interval: str,
    compile_model: bool = False,
    checkpoint_every: int = 1,
    system_metrics_interval: float | None = 5.0,
    dag_file: str | None = None,
    on_run_start: Callable[[str, str], None] | None = None,
) -> dict[str, Any]:
    """TorchTrainOperator's entry point: :func:`train` keyed by this DAG run, with the sanity check.

    The key is (model, dag_id, Airflow run id, snapshot hash, training config): a retry of the task
    reuses the MLflow run (resuming from its checkpoint), a re-run after success returns the
    registered version, another DAG run trains a new version. Returns :func:`train`'s dict.
    """
    from mlops_provider.runtime.features.snapshot import read_manifest

    manifest = read_manifest(snapshot_path)
    log.info("snapshot %s: %s rows, hash %s", snapshot_path, manifest.get("rows"), str(manifest.get("hash", ""))[:16])
    train_config: dict[str, Any] = {
        "features": {"categorical": list(categorical), "numeric": list(numeric)}, "label": label,
        "architecture": arch, "epochs": epochs, "batch_size": batch_size, "learning_rate": lr, "seed": seed,
        "patience": patience,
    }
    if compile_model:
        train_config["compile"] = True
    key = make_idempotency_key(model_name, dag_id, airflow_run_id, manifest.get("hash", snapshot_path),
                               config_hash(train_config))
    return train(
        snapshot_path, model_name, categorical, numeric, label, arch, epochs=epochs, batch_size=batch_size, lr=lr,
        seed=seed, patience=patience, tags={"dag_id": dag_id, "run_id": airflow_run_id, "data_interval": data_interval},
        tracking=tracking, idempotency_key=key, on_run_start=on_run_start, compile_model=compile_model,
        checkpoint_every=checkpoint_every, system_metrics_interval=system_metrics_interval, dag_file=dag_file,
        sanity_check=True,
    )


__all__ = ["train", "train_task"]
