"""Training of the tabular model, tracked in MLflow (runtime module: runs inside the task).

``train()`` loads a snapshot, fits the preprocessor on its train split, trains the MLP with
in-memory tensor batches (CUDA + bf16 autocast when available, CPU otherwise), early-stops on
validation log loss, logs everything to MLflow and registers a NEW model version. It never
moves an alias (the gate / promote step does).

Idempotency: the MLflow run carries the tag ``mlops.idempotency_key``. A run with that key
that already registered a version is returned as is (no retraining); a run with that key and
no version yet (the task died mid-way) is reopened under the same ``run_id`` and continues from
the last checkpoint (``runtime/training/checkpoint.py``, under ``$MLOPS_HOME/checkpoints/<model>/<key>/``)
with restored model / optimizer / RNG / early-stopping state, so on CPU the result equals an
uninterrupted run. Per-epoch metrics are logged asynchronously (one batch per epoch, each step
once even across a resume) and flushed before the run ends; system metrics are sampled by MLflow.

Architectures: ``runtime/training/architectures.py`` (built-ins ``mlp`` / ``resmlp`` / ``linear`` and user
entry points ``module:function``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch
from mlflow import MlflowClient
from torch import nn

from mlops_provider.exceptions import ModelRegistryError, SanityCheckError, TrainingError
from mlops_provider.runtime.training.architectures import build_network
from mlops_provider.runtime.training.checkpoint import CheckpointStore, checkpoint_dir
from mlops_provider.runtime.training.model import (
    MODEL_CONFIG_ARTIFACT,
    STATE_DICT_ARTIFACT,
    Preprocessor,
    TabularTorchModel,
    build_mlp,
    model_config,
    normalize_architecture,
    predict_proba,
    predict_proba_arrays,
)

log = logging.getLogger(__name__)

IDEMPOTENCY_TAG = "mlops.idempotency_key"
VERSION_TAG = "mlops.model_version"
COMPLETE_TAG = "mlops.training_complete"
MODEL_ARTIFACT_NAME = "model"
CONFIG_ARTIFACT = "config/training_config.json"
FINAL_METRICS = ("roc_auc", "log_loss", "best_epoch")


# ---------------------------------------------------------------------------- helpers
def load_snapshot_frame(path: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``(DataFrame, manifest)`` of a snapshot directory (features area's reader)."""
    from mlops_provider.runtime.features.snapshot import load_snapshot

    return load_snapshot(path)


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def make_idempotency_key(*parts: Any) -> str:
    """A stable key from its parts (e.g. dag_id, run_id, snapshot hash, config hash)."""
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:32]


def _check_frame(df: pd.DataFrame, categorical: list[str], numeric: list[str], label: str, where: str) -> None:
    if label not in df.columns:
        raise TrainingError(
            f"snapshot {where} has no label column {label!r} (columns: {sorted(map(str, df.columns))}). "
            "Fix training.label in the YAML or rebuild the snapshot with the label."
        )
    missing = [c for c in [*categorical, *numeric, label, "split"] if c not in df.columns]
    if missing:
        raise TrainingError(
            f"snapshot {where} lacks columns {missing}. The model's features (YAML model.features) must be "
            "columns of the training snapshot: fix the YAML or rebuild the snapshot."
        )
    labels = pd.to_numeric(df[label], errors="coerce")
    if labels.isna().any() or not labels.isin([0, 1]).all():
        raise TrainingError(f"snapshot {where}: label column {label!r} must be 0/1 without missing values.")


def split_frames(
    df: pd.DataFrame, categorical: list[str], numeric: list[str], label: str, where: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    _check_frame(df, categorical, numeric, label, where)
    train_df = df[df["split"] == "train"].reset_index(drop=True)
    val_df = df[df["split"] == "validation"].reset_index(drop=True)
    if train_df.empty or val_df.empty:
        raise TrainingError(
            f"snapshot {where} has {len(train_df)} train and {len(val_df)} validation rows; both splits must be "
            "non-empty. Widen the training window in the YAML."
        )
    if val_df[label].nunique() < 2:
        raise TrainingError(
            f"snapshot {where}: the validation split holds a single class, so ROC AUC is undefined. "
            "Widen the validation window."
        )
    return train_df, val_df


def binary_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """``roc_auc`` and ``log_loss`` of probabilities ``p`` against 0/1 labels ``y``.

    Plain numpy (rank-based Mann-Whitney AUC with average ranks for ties, clipped log loss): the
    same values as scikit-learn's ``roc_auc_score`` / ``log_loss`` (tested) at ~1/20 of the cost,
    which matters because the training loop scores the validation split every epoch.
    """
    y = np.asarray(y, dtype=np.int64).ravel()
    p = np.asarray(p, dtype=np.float64).ravel()
    n = len(y)
    if n == 0:
        return {"roc_auc": float("nan"), "log_loss": float("nan")}
    pc = np.clip(p, 1e-7, 1 - 1e-7)
    pos = y == 1
    ll = float(-np.mean(np.where(pos, np.log(pc), np.log1p(-pc))))
    n_pos = int(pos.sum())
    n_neg = n - n_pos
    if n_pos == 0 or n_neg == 0 or not np.all(np.isfinite(p)):
        return {"roc_auc": float("nan"), "log_loss": ll}
    order = np.argsort(p, kind="mergesort")
    sp = p[order]
    # average rank (1-based) of each run of tied scores
    starts = np.flatnonzero(np.r_[True, sp[1:] != sp[:-1]])
    ends = np.r_[starts[1:], n]
    avg = (starts + ends + 1) / 2.0
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    auc = (ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)
    return {"roc_auc": float(auc), "log_loss": ll}


def select_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _seed_everything(seed: int) -> None:
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


# ---------------------------------------------------------------------------- sanity check
def sanity_check(
    df: pd.DataFrame,
    categorical: list[str],
    numeric: list[str],
    label: str,
    arch: dict[str, Any] | None,
    *,
    seed: int = 0,
    rows: int = 128,
    steps: int = 80,
    lr: float = 1e-2,
    min_improvement: float = 0.3,
    build: Callable[[dict[str, Any], int, list[int]], nn.Module] = build_mlp,
) -> dict[str, Any]:
    """Cheap pre-flight: output shape, finiteness, and the net can overfit one small batch.

    Trains ``steps`` full-batch Adam steps (dropout off) on ``rows`` train rows and requires the
    loss to fall by at least ``min_improvement`` (relative). Raises :class:`SanityCheckError`.
    """
    if "split" in df.columns:
        _check_frame(df, categorical, numeric, label, "given to the sanity check")
        df = df[df["split"] == "train"]
    batch = df.head(rows).reset_index(drop=True)
    if len(batch) < 2:
        raise SanityCheckError(f"sanity check: only {len(batch)} train rows; need at least 2.")
    _seed_everything(seed)
    pre = Preprocessor.fit(batch, categorical, numeric)
    x_num, x_cat = pre.transform(batch)
    xn, xc = torch.from_numpy(x_num), torch.from_numpy(x_cat)
    y = torch.as_tensor(pd.to_numeric(batch[label]).to_numpy(dtype=np.float32))
    net = build(normalize_architecture(arch), len(numeric), pre.cardinalities)
    for module in net.modules():  # dropout off (any architecture, entry points included)
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    net.train()
    out = net(xn, xc)
    if tuple(out.shape) != (len(batch),):
        raise SanityCheckError(
            f"sanity check: the network returns shape {tuple(out.shape)} for a batch of {len(batch)}; "
            f"expected ({len(batch)},) logits. Fix the architecture / model code."
        )
    params = [p for p in net.parameters() if p.requires_grad]
    if not params:
        raise SanityCheckError("sanity check: the network has no trainable parameters.")
    opt = torch.optim.Adam(params, lr=lr)
    loss_fn = nn.BCEWithLogitsLoss()
    initial = final = float("nan")
    for step in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(net(xn, xc), y)
        if step == 0:
            initial = float(loss.detach())
        if not torch.isfinite(loss):
            raise SanityCheckError(f"sanity check: loss became {float(loss)} at step {step}.")
        loss.backward()
        opt.step()
    with torch.no_grad():
        final = float(loss_fn(net(xn, xc), y))
    result = {"rows": len(batch), "steps": steps, "initial_loss": initial, "final_loss": final}
    if not (math.isfinite(final) and final <= initial * (1.0 - min_improvement)):
        raise SanityCheckError(
            f"sanity check: the model cannot overfit {len(batch)} rows in {steps} steps (loss {initial:.4f} -> "
            f"{final:.4f}, required a {min_improvement:.0%} drop). The training loop, learning rate or "
            "architecture is broken; the expensive run was not started."
        )
    log.info("sanity check passed: loss %.4f -> %.4f on %d rows", initial, final, len(batch))
    return result


# ---------------------------------------------------------------------------- the loop
def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """Host array -> device tensor; pinned + non-blocking copy on CUDA (one copy, whole split in memory)."""
    t = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t


def _rng_state(gen: torch.Generator) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "perm": gen.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict[str, Any], gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    gen.set_state(state["perm"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def train_epoch(
    net: Any,
    opt: Any,
    loss_fn: Any,
    xn: torch.Tensor,
    xc: torch.Tensor,
    y: torch.Tensor,
    order: torch.Tensor,
    batch_size: int,
    *,
    use_amp: bool,
) -> tuple[torch.Tensor, int]:
    """One pass over the rows in ``order``: in-memory index batches, no host sync.

    ``loss_fn`` reduces by mean (as a hand-written loop would). Returns the summed loss as a device
    tensor (read it once per epoch) and the number of steps. The per-step work is exactly a minimal
    loop's plus one in-place add (the epoch loss); autocast is entered only when it is on (bf16 on
    CUDA). Shared by the single-process loop and the DDP ranks (``runtime/training/ddp.py``).
    """
    total = torch.zeros((), device=xn.device)
    steps = 0
    amp = (lambda: torch.autocast(device_type=xn.device.type, dtype=torch.bfloat16)) if use_amp else None
    for i in range(0, len(order), batch_size):
        idx = order[i : i + batch_size]
        opt.zero_grad(set_to_none=True)
        if amp is not None:
            with amp():
                logits = net(xn[idx], xc[idx])
            loss = loss_fn(logits.float(), y[idx])
        else:
            loss = loss_fn(net(xn[idx], xc[idx]), y[idx])
        loss.backward()
        opt.step()
        total.add_(loss.detach(), alpha=len(idx))
        steps += 1
    return total, steps


def fit_network(
    pre: Preprocessor,
    train_df: pd.DataFrame,
    val_df: pd.DataFrame,
    label: str,
    arch: dict[str, Any],
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    patience: int,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    device: torch.device | str | None = None,
    compile_model: bool = False,
    checkpoint: CheckpointStore | None = None,
    checkpoint_every: int = 1,
    checkpoint_extra: dict[str, Any] | None = None,
    resume: dict[str, Any] | None = None,
) -> tuple[nn.Module, list[dict[str, float]], int]:
    """Train; return (best network on CPU, per-epoch history, best epoch; 0 = untrained init).

    Whole splits live on the device as tensors and batches are index slices of a per-epoch
    permutation (no DataLoader); the only host syncs are one per epoch (loss + validation for
    logging). CUDA: bf16 autocast, pinned host->device copy. ``compile_model``: ``torch.compile``.
    ``checkpoint``: every ``checkpoint_every`` epochs (and at the end) the full state is saved;
    ``resume`` (a loaded checkpoint) continues from its epoch with identical RNG streams, so on CPU
    the result equals an uninterrupted run.
    """
    device = torch.device(device) if device is not None else select_device()
    _seed_everything(seed)
    net = build_network(arch, len(pre.numeric), pre.cardinalities).to(device)
    step_net: Callable[..., torch.Tensor] = net
    if compile_model:
        step_net = torch.compile(net)  # type: ignore[assignment]
    x_num, x_cat = pre.transform(train_df)
    xn, xc = _to_device(x_num, device), _to_device(x_cat, device)
    y = _to_device(pd.to_numeric(train_df[label]).to_numpy(dtype=np.float32), device)
    y_val = pd.to_numeric(val_df[label]).to_numpy(dtype=np.int64)
    n = len(train_df)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    loss_fn = nn.BCEWithLogitsLoss()
    use_amp = device.type == "cuda" and torch.cuda.is_bf16_supported()
    history: list[dict[str, float]] = []
    best_loss, best_epoch, bad_epochs, start = math.inf, 0, 0, 0
    best_state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    stopped = False
    if resume is not None:
        net.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        _restore_rng(resume["rng"], gen)
        es = resume["early_stopping"]
        best_loss, best_epoch, bad_epochs = es["best_loss"], es["best_epoch"], es["bad_epochs"]
        best_state = es["best_state"]
        history = list(resume["history"])
        start, stopped = int(resume["epoch"]), bool(resume.get("stopped", False))
        log.info("resuming from the checkpoint of epoch %d (best epoch %d)", start, best_epoch)

    def save(epoch: int, done: bool) -> None:
        if checkpoint is None:
            return
        checkpoint.save_async({  # state copied here, written + fsynced on a background thread
            **(checkpoint_extra or {}),
            "epoch": epoch,
            "stopped": done,
            "model": net.state_dict(),
            "optimizer": opt.state_dict(),
            "rng": _rng_state(gen),
            "early_stopping": {"best_loss": best_loss, "best_epoch": best_epoch, "bad_epochs": bad_epochs,
                               "best_state": best_state},
            "history": history,
        })

    val_arrays = pre.transform(val_df)  # once, not every epoch
    log.info("training on %s: %d rows, epochs %d..%d, batch %d, amp %s, compile %s",
             device, n, start + 1, epochs, batch_size, use_amp, compile_model)
    try:
        for epoch in range(start + 1, epochs + 1):
            if stopped:
                break
            net.train()
            perm = torch.randperm(n, generator=gen).to(device, non_blocking=True)
            total, _ = train_epoch(step_net, opt, loss_fn, xn, xc, y, perm, batch_size, use_amp=use_amp)
            train_loss = float(total) / n  # one device sync per epoch
            p_val = predict_proba_arrays(net, *val_arrays)
            if not math.isfinite(train_loss) or not np.all(np.isfinite(p_val)):
                raise TrainingError(
                    f"training diverged at epoch {epoch}: train loss {train_loss} (NaN/inf loss or predictions); "
                    "nothing was registered. Lower training.learning_rate in the YAML or check the architecture."
                )
            m = binary_metrics(y_val, p_val)
            row = {"train_loss": train_loss, "val_loss": m["log_loss"], "val_roc_auc": m["roc_auc"]}
            history.append(row)
            if m["log_loss"] < best_loss - 1e-6:
                best_loss, best_epoch, bad_epochs = m["log_loss"], epoch, 0
                best_state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
            else:
                bad_epochs += 1
            stopped = bad_epochs >= patience
            if stopped or epoch == epochs or epoch % max(1, checkpoint_every) == 0:
                save(epoch, stopped or epoch == epochs)
            log.info("epoch %d: train_loss %.4f val_loss %.4f val_auc %.4f", epoch, *row.values())
            if on_epoch is not None:
                on_epoch(epoch, row)
            if stopped:
                log.info("early stopping at epoch %d (best %d)", epoch, best_epoch)
    except BaseException:
        if checkpoint is not None:  # the error that stopped training wins over a failed background write
            with contextlib.suppress(Exception):
                checkpoint.close()
        raise
    if checkpoint is not None:
        checkpoint.close()  # the last checkpoint is durable (or its write error raised) before the result is used
    net = net.cpu()
    net.load_state_dict(best_state)
    net.eval()
    return net, history, best_epoch


# ---------------------------------------------------------------------------- MLflow
def configure_tracking(tracking: dict[str, Any] | None, *, check: bool = False) -> MlflowClient:
    """Point this process at the store of ``tracking`` and return a client.

    ``check``: probe a remote server first with bounded retries and backoff
    (``tracking["connect_attempts"]`` / ``["connect_backoff_s"]`` / ``["connect_timeout_s"]``, or the
    ``$MLOPS_MLFLOW_CONNECT_*`` variables); raises ``MlflowUnreachableError`` (a ModelRegistryError).
    """
    tracking = tracking or {}
    uri = tracking.get("tracking_uri") or mlflow.get_tracking_uri()
    registry = tracking.get("registry_uri") or uri
    if str(uri).startswith("sqlite:///"):
        Path(str(uri)[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    if check:
        from mlops_provider.hooks.mlflow import check_reachable

        check_reachable(str(uri), attempts=tracking.get("connect_attempts"),
                        backoff_s=tracking.get("connect_backoff_s"), timeout_s=tracking.get("connect_timeout_s"))
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(registry)
    return MlflowClient(tracking_uri=uri, registry_uri=registry)


def get_or_create_experiment(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    try:
        return str(client.create_experiment(name, artifact_location=artifact_location))
    except Exception:  # a concurrent task created it first
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return str(exp.experiment_id)


def find_keyed_run(client: MlflowClient, experiment_id: str, key: str) -> Any | None:
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.`{IDEMPOTENCY_TAG}` = '{key}'", order_by=["attributes.start_time DESC"]
    )
    return runs[0] if runs else None


def registered_version(client: MlflowClient, model_name: str, run: Any) -> Any | None:
    """The model version this run registered (run tag first, then a registry search)."""
    tagged = run.data.tags.get(VERSION_TAG)
    if tagged:
        try:
            return client.get_model_version(model_name, tagged)
        except Exception:  # noqa: BLE001 - deleted version: fall through to the search
            pass
    try:
        versions = client.search_model_versions(f"name = '{model_name}' and run_id = '{run.info.run_id}'")
    except Exception:  # noqa: BLE001 - registered model does not exist yet
        return None
    return max(versions, key=lambda v: int(v.version)) if versions else None


def _result(
    run_id: str, version: Any | None, metrics: dict[str, float], uri: str, reused: bool, **extra: Any
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "model_version": str(version.version) if version is not None else None,
        "model_uri": (f"models:/{version.name}/{version.version}" if version is not None
                      else f"runs:/{run_id}/{MODEL_ARTIFACT_NAME}"),
        "metrics": {k: float(v) for k, v in sorted(metrics.items())},
        "tracking_uri": uri,
        "reused": reused,
        **extra,
    }


def _flatten_params(config: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in config.items():
        if isinstance(v, dict):
            for k2, v2 in v.items():
                out[f"{k}.{k2}"] = (json.dumps(v2, sort_keys=True) if isinstance(v2, list | dict) else str(v2))[:500]
        elif isinstance(v, list):
            out[k] = json.dumps(v)[:500]
        else:
            out[k] = str(v)
    return out


def _git(args: list[str], cwd: Path) -> str | None:
    import subprocess

    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_tags(project_dir: str | os.PathLike[str] | None = None, dag_file: str | None = None) -> dict[str, str]:
    """Best-effort git lineage tags: the project's HEAD (+ dirty flag) and the DAG file's last commit.

    ``project_dir`` defaults to the working directory. Outside a git repository (or without git)
    the tags are simply absent; this never raises.
    """
    tags: dict[str, str] = {}
    try:
        proj = Path(project_dir or os.getcwd()).resolve()
        head = _git(["rev-parse", "HEAD"], proj)
        if head:
            tags["mlops.git.project_commit"] = head
            dirty = _git(["status", "--porcelain", "--untracked-files=no"], proj)
            tags["mlops.git.project_dirty"] = str(bool(dirty)).lower()
            root = _git(["rev-parse", "--show-toplevel"], proj)
            if root:
                tags["mlops.git.project_root"] = root
        if dag_file:
            f = Path(dag_file).resolve()
            if f.exists():
                tags["mlops.git.dag_file"] = str(f)
                commit = _git(["log", "-1", "--format=%H", "--", f.name], f.parent)
                if commit:
                    tags["mlops.git.dag_commit"] = commit
                    changed = _git(["status", "--porcelain", "--", f.name], f.parent)
                    tags["mlops.git.dag_dirty"] = str(bool(changed)).lower()
    except Exception as e:  # noqa: BLE001 - lineage is best effort
        log.info("git lineage unavailable: %s", e)
    return tags


def _logged_steps(client: MlflowClient, run_id: str, key: str = "train_loss") -> set[int]:
    try:
        return {int(m.step) for m in client.get_metric_history(run_id, key)}
    except Exception:  # noqa: BLE001
        return set()


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
) -> dict[str, Any]:
    """Train, log and (by default) register a new version of ``model_name``. Returns
    ``{"run_id", "model_version", "model_uri", "metrics", "tracking_uri", "reused",
    "resumed_from_epoch", "epochs_run"}`` (``model_version`` is None when ``register=False``).

    ``tracking``: ``{"tracking_uri", "registry_uri", "artifact_location"}`` (MLflowHook's public
    config) plus optional ``connect_attempts`` / ``connect_backoff_s`` / ``connect_timeout_s`` for the
    bounded first contact with a remote server; ``tags``: model version tags from the caller
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
    whose manifest hash differs).
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

    client = configure_tracking(tracking, check=True)
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
            return _result(existing.info.run_id, version, metrics, uri, reused=True, resumed_from_epoch=None,
                           epochs_run=int(existing.data.metrics.get("epochs_run", 0)))
        resume_run_id = existing.info.run_id
        log.info("resuming MLflow run %s (key %s, status %s)", resume_run_id, key, existing.info.status)

    train_df, val_df = split_frames(df, categorical, numeric, label, str(snapshot_path))
    del df
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
    dev = torch.device(device) if device else select_device()
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
        try:
            if on_run_start is not None:
                on_run_start(run_id, experiment_id)
            if resumed_from:
                client.set_tag(run_id, "mlops.resumed_from_epoch", str(resumed_from))
            mlflow.log_params({**_flatten_params({k: v for k, v in resolved.items() if k != "features"}),
                               "n_categorical": len(categorical), "n_numeric": len(numeric),
                               "rows_train": len(train_df), "rows_validation": len(val_df)})
            mlflow.log_dict(resolved, CONFIG_ARTIFACT)
            inputs = client.get_run(run_id).inputs if resume_run_id else None
            if not (inputs is not None and inputs.dataset_inputs):
                _log_inputs(train_df, val_df, snapshot_path, snapshot_hash, feature_service, label)

            logged = _logged_steps(client, run_id) if resume_run_id else set()
            if checkpoint is not None:  # epochs the dead worker finished but whose metrics it never flushed
                for step, row in enumerate(checkpoint["history"], start=1):
                    if step not in logged:
                        mlflow.log_metrics(row, step=step, synchronous=False)
                        logged.add(step)

            def epoch_done(epoch: int, row: dict[str, float]) -> None:
                if epoch not in logged:  # one point per step, even across a resume
                    mlflow.log_metrics(row, step=epoch, synchronous=False)  # batched, async
                if on_epoch is not None:
                    on_epoch(epoch, row)

            net, history, best_epoch = fit_network(
                pre, train_df, val_df, label, arch_n, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                patience=patience, on_epoch=epoch_done, device=dev, compile_model=compile_model,
                checkpoint=store, checkpoint_every=checkpoint_every,
                checkpoint_extra={"run_id": run_id, "key": key, "config_hash": config_hash(resolved)},
                resume=checkpoint,
            )
            p_val = predict_proba(net, pre, val_df)
            if not np.all(np.isfinite(p_val)):
                raise TrainingError(f"the trained model predicts non-finite probabilities on {snapshot_path}.")
            final = binary_metrics(pd.to_numeric(val_df[label]).to_numpy(), p_val)
            metrics = {**final, "best_epoch": float(best_epoch), "epochs_run": float(len(history))}
            mlflow.log_metrics(metrics, synchronous=False)

            feature_cols = [*categorical, *numeric]
            info = _log_model(net, pre, arch_n, val_df[feature_cols])
            version = None
            if register:
                version = register_model_version(info.model_uri, model_name, version_tags)
                client.set_tag(run_id, VERSION_TAG, str(version.version))
            client.set_tag(run_id, COMPLETE_TAG, "true")
        finally:
            mlflow.flush_async_logging()  # every queued metric reaches the store before the task ends
    if not keep_checkpoint:
        store.clear()
    log.info("%s %s from run %s: %s", "registered" if version is not None else "logged",
             f"{model_name} v{version.version}" if version is not None else model_name, run_id, final)
    return _result(run_id, version, {k: metrics[k] for k in FINAL_METRICS}, uri, False,
                   resumed_from_epoch=resumed_from, epochs_run=len(history))


def register_model_version(model_uri: str, model_name: str, version_tags: dict[str, str]) -> Any:
    """Register ``model_uri`` (e.g. ``runs:/<id>/model``) as a new version of ``model_name`` with tags."""
    try:
        return mlflow.register_model(model_uri, model_name, tags=version_tags)
    except Exception as e:
        raise ModelRegistryError(
            f"could not register {model_uri} as a version of {model_name!r} in {mlflow.get_registry_uri()}: "
            f"{e}. Check the MLflow connection (registry_uri) and retry the task."
        ) from e


def _log_inputs(
    train_df: pd.DataFrame, val_df: pd.DataFrame, path: str, snapshot_hash: str, feature_service: str, label: str
) -> None:
    from mlflow.data.pandas_dataset import from_pandas

    for context, frame in (("training", train_df), ("validation", val_df)):
        ds = from_pandas(
            frame, source=str(path), targets=label, name=f"{feature_service or 'snapshot'}@{snapshot_hash[:16]}",
            digest=f"{snapshot_hash[:16]}-{context}",
        )
        mlflow.log_input(ds, context=context,
                         tags={"snapshot_hash": snapshot_hash, "feature_service": feature_service})


def _example_frame(features: pd.DataFrame, pre: Preprocessor) -> pd.DataFrame:
    example = features.head(5).copy()
    for col in pre.numeric:
        example[col] = pd.to_numeric(example[col], errors="coerce").astype("float64")
    for col in pre.categorical:
        example[col] = example[col].astype(object).where(example[col].notna(), None).astype(str)
    return example.reset_index(drop=True)


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _pip_requirements() -> list[str]:
    import cloudpickle

    return [
        f"mlflow=={mlflow.__version__}",
        f"torch=={torch.__version__.split('+')[0]}",
        f"pandas=={pd.__version__}",
        f"numpy=={np.__version__}",
        f"cloudpickle=={cloudpickle.__version__}",
    ]


def _log_model(net: nn.Module, pre: Preprocessor, arch: dict[str, Any], features: pd.DataFrame) -> Any:
    """Log the pyfunc (weights + model_config artifacts, signature, input example) into the active run."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    example = _example_frame(features, pre)
    # pip_requirements are explicit (no slow inference); do not copy the cwd's uv project into the model
    with tempfile.TemporaryDirectory() as tmp, _env(MLFLOW_LOG_UV_FILES="false"):
        state_path = Path(tmp) / "state_dict.pt"
        config_path = Path(tmp) / "model_config.json"
        torch.save(net.state_dict(), state_path)
        config_path.write_text(json.dumps(model_config(pre, arch), sort_keys=True))
        from mlops_provider.runtime.training.model import load_network

        reloaded, _ = load_network(json.loads(config_path.read_text()), str(state_path))
        check = predict_proba(reloaded, pre, example)
        if check.shape != (len(example),) or not np.all(np.isfinite(check)):
            raise TrainingError("the saved model does not reload to the trained one (bad shape or non-finite output).")
        # explicit schema: categoricals are strings, every numeric column is double (NaN allowed, imputed)
        cols: list[ColSpec | TensorSpec] = [ColSpec("string", c) for c in pre.categorical]
        cols += [ColSpec("double", c) for c in pre.numeric]
        signature = ModelSignature(
            inputs=Schema(cols),
            outputs=Schema([TensorSpec(np.dtype("float64"), (-1,))]),
        )
        metadata = {"requires_python_package": "mlops_provider (airflow-provider-mlops)"}
        if "entry_point" in arch:
            metadata["requires_entry_point_module"] = str(arch["entry_point"]).split(":")[0]
        return mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT_NAME,
            python_model=TabularTorchModel(),
            artifacts={STATE_DICT_ARTIFACT: str(state_path), MODEL_CONFIG_ARTIFACT: str(config_path)},
            signature=signature,
            input_example=example,
            pip_requirements=_pip_requirements(),
            metadata=metadata,
        )
