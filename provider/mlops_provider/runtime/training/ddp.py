"""Multi-GPU training with DistributedDataParallel: the ``torchrun`` entry point every rank runs.

    python -m torch.distributed.run --standalone --nproc_per_node=N \\
        -m mlops_provider.runtime.training.ddp --config cfg.json --out-dir OUT

One process per GPU of ONE worker (``nccl`` on CUDA, each rank on ``cuda:<LOCAL_RANK>``) or per
CPU process (``gloo``): the same code path. Every rank loads the snapshot, fits the same
preprocessor on the train split and keeps the tensors in memory; each epoch a permutation
seeded identically on every rank is sharded ``perm[rank::world]`` (no DistributedSampler, no
DataLoader), cut to the same length on every rank so all ranks take the same number of
steps. DDP averages the gradients; the epoch loss is all-reduced. Rank 0 alone validates,
talks to MLflow (params, per-epoch metrics, model) and registers the version; it broadcasts
the validation loss and the early-stop decision so every rank keeps the same best weights.

Every rank writes ``OUT/rank<r>.json`` (sha256 of its final ``state_dict``, steps, rows);
rank 0 writes ``OUT/result.json`` (TorchTrainOperator's dict shape). :func:`launch` runs torchrun
in a subprocess and returns that result.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from mlops_provider.exceptions import TrainingError
from mlops_provider.runtime.training.data import load_snapshot_frame, split_frames
from mlops_provider.runtime.training.loop import train_epoch
from mlops_provider.runtime.training.model import (
    Preprocessor,
    build_network,
    normalize_architecture,
    predict_logits,
)
from mlops_provider.runtime.training.run import content_key, finish_head, resolved_config
from mlops_provider.runtime.training.tracking import (
    COMPLETE_TAG,
    CONFIG_ARTIFACT,
    IDEMPOTENCY_TAG,
    complete_registration,
    configure_tracking,
    final_metrics,
    find_keyed_run,
    flatten_params,
    get_or_create_experiment,
    log_model,
    registered_version,
    run_result,
)
from mlops_provider.specs import TrainingSpec, as_dict, from_dict

log = logging.getLogger("mlops_provider.runtime.training.ddp")

RESULT_FILE = "result.json"


def state_digest(net: nn.Module) -> str:
    """sha256 of a module's parameters and buffers (names, shapes, exact bytes)."""
    h = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _broadcast(obj: Any, rank: int) -> Any:
    box = [obj if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def train_distributed(cfg: dict[str, Any], out_dir: Path) -> dict[str, Any] | None:
    """The body every rank runs inside an initialised process group. Returns the result on rank 0."""
    rank, world = dist.get_rank(), dist.get_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and dist.get_backend() == "nccl"
    device = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    spec: TrainingSpec = from_dict(TrainingSpec, cfg["training"])
    categorical, numeric, label = spec.features.categorical, spec.features.numeric, spec.label
    arch = normalize_architecture(spec.architecture)
    epochs, batch_size, lr, seed, patience = spec.epochs, spec.batch_size, spec.learning_rate, spec.seed, spec.patience
    snapshot_path, model_name = str(cfg["snapshot"]), str(cfg["model_name"])

    # the parent task downloaded an s3:// snapshot for the ranks (they have no Airflow connection)
    df, manifest = load_snapshot_frame(str(cfg.get("snapshot_local") or snapshot_path))
    train_df, val_df, head = split_frames(df, spec, snapshot_path)
    del df
    snapshot_hash = str(manifest.get("hash", ""))
    feature_service = str(manifest.get("feature_service", ""))
    resolved = {**resolved_config(model_name, snapshot_hash, spec), "snapshot_path": snapshot_path,
                "feature_service": feature_service,
                "distributed": {"world_size": world, "backend": dist.get_backend()}}
    key = str(cfg.get("idempotency_key") or content_key(model_name, snapshot_hash, spec, "ddp", world))

    # ---- rank 0: MLflow (reuse a registered version: every rank then skips training)
    client = run = None
    existing_result: dict[str, Any] | None = None
    resume_run_id: str | None = None
    if rank == 0:
        import mlflow

        tracking = cfg.get("tracking") or {}
        client = configure_tracking(tracking)
        experiment_id = get_or_create_experiment(client, model_name, tracking.get("artifact_location"))
        found = find_keyed_run(client, experiment_id, key)
        if found is not None:
            version = registered_version(client, model_name, found)
            if version is not None:
                complete_registration(client, found, version)
                existing_result = run_result(found.info.run_id, version, final_metrics(found.data.metrics),
                                             mlflow.get_tracking_uri(), reused=True)
            else:
                resume_run_id = found.info.run_id
        if existing_result is None:
            version_tags = {str(k): str(v) for k, v in (cfg.get("tags") or {}).items()}
            run_tags = {IDEMPOTENCY_TAG: key, "mlops.snapshot_path": snapshot_path,
                        "mlops.snapshot_hash": snapshot_hash, "mlops.feature_service": feature_service,
                        "mlops.distributed.world_size": str(world),
                        **{f"mlops.{k}": v for k, v in version_tags.items()}}
            run = mlflow.start_run(run_id=resume_run_id, experiment_id=None if resume_run_id else experiment_id,
                                   run_name=None if resume_run_id else f"{model_name}-ddp{world}-{snapshot_hash[:8]}",
                                   tags=run_tags)
            if resume_run_id is None:
                mlflow.log_params({**flatten_params({k: v for k, v in resolved.items() if k != "features"}),
                                   "device": device.type, "rows_train": len(train_df), "rows_validation": len(val_df)})
            mlflow.log_dict({**resolved, "training": as_dict(spec)}, CONFIG_ARTIFACT)
    if _broadcast(existing_result is not None, rank):
        if rank == 0:
            (out_dir / RESULT_FILE).write_text(json.dumps(existing_result))
        (out_dir / f"rank{rank}.json").write_text(json.dumps({"rank": rank, "world_size": world, "reused": True}))
        return existing_result

    # ---- every rank: same preprocessing, same init, in-memory tensors
    pre = Preprocessor.fit(train_df, categorical, numeric)
    x_num, x_cat = pre.transform(train_df)
    xn, xc = torch.from_numpy(x_num).to(device), torch.from_numpy(x_cat).to(device)
    y = torch.as_tensor(head.encode(train_df[label], snapshot_path, "train"), device=device)
    y_val = head.truth(val_df[label], snapshot_path, "validation")
    n = len(train_df)
    per_rank = n // world
    if per_rank < 1:
        raise TrainingError(f"{n} train rows cannot be sharded over {world} ranks.")
    local_batch = max(1, math.ceil(batch_size / world))  # the global batch stays batch_size
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    net = build_network(arch, len(pre.numeric), pre.cardinalities, head.n_outputs, head.task).to(device)
    ddp = nn.parallel.DistributedDataParallel(net, device_ids=[local_rank] if use_cuda else None)
    opt = torch.optim.Adam(ddp.parameters(), lr=lr)
    loss_fn = head.loss_fn().to(device)
    gen = torch.Generator(device="cpu").manual_seed(seed)  # identical permutation on every rank
    best_loss, best_epoch, bad = math.inf, 0, 0
    best_state = copy.deepcopy({k: v.detach().cpu() for k, v in net.state_dict().items()})
    history: list[dict[str, float]] = []
    steps = 0
    log.info("rank %d/%d on %s: %d of %d rows per epoch, local batch %d", rank, world, device, per_rank, n,
             local_batch)
    for epoch in range(1, epochs + 1):
        ddp.train()
        idx_all = torch.randperm(n, generator=gen)[rank::world][:per_rank].to(device)
        total, epoch_steps = train_epoch(ddp, opt, loss_fn, xn, xc, y, idx_all, local_batch, use_amp=use_cuda)
        steps += epoch_steps
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        train_loss = float(total) / (per_rank * world)
        decision: dict[str, Any] | None = None
        if rank == 0:
            import mlflow

            z_val = predict_logits(net, pre, val_df)
            if not np.all(np.isfinite(z_val)) or not math.isfinite(train_loss):
                decision = {"error": f"training diverged at epoch {epoch} (train loss {train_loss})"}
            else:
                val_loss, val_metrics = head.validate(y_val, z_val)
                row = {"train_loss": train_loss, "val_loss": val_loss, **val_metrics}
                mlflow.log_metrics(row, step=epoch)
                decision = {"val_loss": val_loss, "row": row}
        decision = _broadcast(decision, rank)
        if "error" in decision:
            raise TrainingError(f"{decision['error']}; lower learning_rate in the YAML.")
        history.append(decision["row"])
        if decision["val_loss"] < best_loss - 1e-6:
            best_loss, best_epoch, bad = decision["val_loss"], epoch, 0
            best_state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
        else:
            bad += 1
            if bad >= patience:
                break
    final_digest = state_digest(net)  # weights after the last step: identical on every rank under DDP
    net = net.cpu()
    net.load_state_dict(best_state)
    net.eval()
    (out_dir / f"rank{rank}.json").write_text(json.dumps({
        "rank": rank, "world_size": world, "backend": dist.get_backend(), "device": str(device),
        "rows_per_epoch": per_rank, "steps": steps, "final_state_sha256": final_digest,
        "best_state_sha256": state_digest(net), "train_loss": history[-1]["train_loss"], "reused": False,
    }))
    if rank != 0:
        return None

    import mlflow

    from mlops_provider.runtime.training.hpo import register_run_model

    assert client is not None and run is not None
    metrics = finish_head(net, pre, head, val_df, spec, snapshot_path)
    metrics.update(best_epoch=float(best_epoch), epochs_run=float(len(history)))
    mlflow.log_metrics(metrics)
    log_model(net, pre, arch, val_df[[*categorical, *numeric]], head)
    version_tags = {str(k): str(v) for k, v in (cfg.get("tags") or {}).items()}
    version_tags.update({"snapshot_path": snapshot_path, "snapshot_hash": snapshot_hash,
                         "feature_service": feature_service, IDEMPOTENCY_TAG: key,
                         "distributed.world_size": str(world), **head.tags()})
    version = register_run_model(client, run.info.run_id, model_name, version_tags)
    client.set_tag(run.info.run_id, COMPLETE_TAG, "true")
    mlflow.end_run()
    result = run_result(run.info.run_id, version, final_metrics(metrics), mlflow.get_tracking_uri(), reused=False)
    result["world_size"] = world
    (out_dir / RESULT_FILE).write_text(json.dumps(result))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlops_provider.runtime.training.ddp", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="JSON file with the training config")
    parser.add_argument("--out-dir", required=True, help="directory for rank<r>.json and result.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s rank" + os.environ.get("RANK", "?")
                        + " %(levelname)s %(name)s: %(message)s")
    cfg = json.loads(Path(args.config).read_text())
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    use_cuda = torch.cuda.is_available() and cfg.get("device", "auto") != "cpu"
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    try:
        train_distributed(cfg, out_dir)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return 0


def registered_result(cfg: dict[str, Any]) -> dict[str, Any] | None:
    """The result of a run with ``cfg["idempotency_key"]`` that already registered a version (no torchrun)."""
    import mlflow

    key = cfg.get("idempotency_key")
    if not key:
        return None
    tracking = cfg.get("tracking") or {}
    client = configure_tracking(tracking)
    exp = client.get_experiment_by_name(str(cfg["model_name"]))
    if exp is None:
        return None
    found = find_keyed_run(client, str(exp.experiment_id), str(key))
    version = registered_version(client, str(cfg["model_name"]), found) if found is not None else None
    if found is None or version is None:
        return None
    complete_registration(client, found, version)
    result = run_result(found.info.run_id, version, final_metrics(found.data.metrics), mlflow.get_tracking_uri(),
                        reused=True)
    result["world_size"] = int(found.data.tags.get("mlops.distributed.world_size", "0") or 0)
    return result


def launch(
    cfg: dict[str, Any],
    out_dir: str,
    nproc_per_node: int,
    *,
    timeout: float | None = None,
    on_line: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run ``torchrun --standalone --nproc_per_node=N -m mlops_provider.runtime.training.ddp`` and return rank 0's result."""
    if nproc_per_node < 1:
        raise TrainingError(f"nproc_per_node must be >= 1, got {nproc_per_node}.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / RESULT_FILE).unlink(missing_ok=True)
    config_path = out / "config.json"
    config_path.write_text(json.dumps(cfg, sort_keys=True, default=str))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_per_node}",
           "-m", "mlops_provider.runtime.training.ddp", "--config", str(config_path), "--out-dir", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "PYTHONUNBUFFERED": "1"}
    log.info("launching %s", " ".join(cmd))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    tail: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            tail = (tail + [line])[-40:]
            if on_line is not None:
                on_line(line)
        rc = proc.wait(timeout=timeout)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    result_path = out / RESULT_FILE
    if rc != 0 or not result_path.exists():
        raise TrainingError(
            f"distributed training (torchrun, {nproc_per_node} processes) failed with exit code {rc}; last output:\n"
            + "\n".join(tail)
        )
    return dict(json.loads(result_path.read_text()))


def train_task(
    snapshot_path: str,
    model_name: str,
    spec: TrainingSpec,
    *,
    nproc_per_node: int,
    tracking: dict[str, Any] | None,
    dag_id: str,
    airflow_run_id: str,
    data_interval: str,
    force_retrain: bool = False,
    sanity_check: bool = True,
    timeout: float | None = None,
    on_line: Callable[[str], None] | None = None,
    store: Any = None,
) -> dict[str, Any]:
    """TorchDistributedTrainOperator's entry point: the content key, then :func:`launch`.

    The key is (model, snapshot hash, training config, world size; + the Airflow run id with
    ``force_retrain``). A key that already registered a version returns it without starting torchrun;
    otherwise the sanity check runs here, in the task process (a broken model never reaches torchrun), then
    the ranks train.
    """
    import tempfile

    from mlops_provider.runtime.features.snapshot import fetch_snapshot, read_manifest
    from mlops_provider.runtime.training.loop import sanity_check as run_sanity_check

    manifest = read_manifest(snapshot_path, store=store)
    extra = ("force", dag_id, airflow_run_id) if force_retrain else ()
    key = content_key(model_name, str(manifest.get("hash", snapshot_path)), spec, "ddp", nproc_per_node, *extra)
    cfg = {"training": as_dict(spec), "snapshot": snapshot_path, "model_name": model_name,
           "tracking": dict(tracking or {}), "idempotency_key": key,
           "tags": {"dag_id": dag_id, "run_id": airflow_run_id, "data_interval": data_interval}}
    result = registered_result(cfg)
    if result is not None:
        log.info("run %s already registered %s v%s; not relaunching", result["run_id"], model_name,
                 result["model_version"])
        return result
    with tempfile.TemporaryDirectory(prefix="mlops-ddp-") as out:
        local = fetch_snapshot(snapshot_path, Path(out, "snapshot"), store=store)
        if local != snapshot_path:
            cfg["snapshot_local"] = local
        if sanity_check:
            df, _ = load_snapshot_frame(local)
            _, _, head = split_frames(df, spec, snapshot_path)
            run_sanity_check(df, spec.features.categorical, spec.features.numeric, spec.label, spec.architecture,
                             head=head, seed=spec.seed)
            del df
        return launch(cfg, out, nproc_per_node, timeout=timeout, on_line=on_line)


if __name__ == "__main__":
    sys.exit(main())
