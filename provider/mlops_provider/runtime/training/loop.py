"""The training loop of the tabular model (runtime module: runs inside the task).

:func:`fit_network` trains with in-memory tensor batches (whole splits on the device, batches are
index slices of a per-epoch permutation: no DataLoader), CUDA + bf16 autocast when available, CPU
otherwise; it validates every epoch, early-stops on the validation loss of the task's head (:mod:`.heads`) and
checkpoints the full
state (model, optimizer, RNG streams, early-stopping state, history) every ``checkpoint_every``
epochs on a background thread, so a resumed run equals an uninterrupted one on CPU.
:func:`train_epoch` is the per-step work shared with the DDP ranks (``runtime/training/ddp.py``);
:func:`sanity_check` is the cheap pre-flight (the net can overfit one small batch).

The MLflow run around it (keyed runs, logging, registration) is :mod:`.tracking`; one training run
end to end is :func:`mlops_provider.runtime.training.run.train`. Architectures:
:mod:`.architectures` (built-ins ``mlp`` / ``resmlp`` / ``linear`` and user entry points ``module:function``).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from mlops_provider.exceptions import SanityCheckError, TrainingError
from mlops_provider.runtime.training.architectures import build_network
from mlops_provider.runtime.training.checkpoint import CheckpointStore
from mlops_provider.runtime.training.data import check_frame
from mlops_provider.runtime.training.heads import Head
from mlops_provider.runtime.training.model import (
    Preprocessor,
    build_mlp,
    normalize_architecture,
    predict_logits_arrays,
)

log = logging.getLogger(__name__)


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
    head: Head | None = None,
    seed: int = 0,
    rows: int = 128,
    steps: int = 80,
    lr: float = 1e-2,
    min_improvement: float = 0.3,
    build: Callable[..., nn.Module] = build_mlp,
) -> dict[str, Any]:
    """Cheap pre-flight: output shape, finiteness, and the net can overfit one small batch.

    Trains ``steps`` full-batch Adam steps (dropout off) on ``rows`` train rows with the task's loss
    (``head``: the fitted :class:`~.heads.Head`; default a binary head) and requires the loss to fall by at
    least ``min_improvement`` (relative). ``build(arch, n_numeric, cardinalities, n_outputs, task)`` makes the
    network. Raises :class:`SanityCheckError`. (``lr`` / ``steps`` / ``rows`` belong to this probe, not to
    training.)
    """
    if "split" in df.columns:
        check_frame(df, categorical, numeric, label, "given to the sanity check")
        df = df[df["split"] == "train"]
    batch = df.head(rows).reset_index(drop=True)
    if len(batch) < 2:
        raise SanityCheckError(f"sanity check: only {len(batch)} train rows; need at least 2.")
    head = head or Head(label=label)
    _seed_everything(seed)
    pre = Preprocessor.fit(batch, categorical, numeric)
    x_num, x_cat = pre.transform(batch)
    xn, xc = torch.from_numpy(x_num), torch.from_numpy(x_cat)
    y = torch.as_tensor(head.encode(batch[label], "the sanity check batch", "train"))
    net = build(normalize_architecture(arch), len(numeric), pre.cardinalities, head.n_outputs, head.task)
    for module in net.modules():  # dropout off (any architecture, entry points included)
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    net.train()
    out = net(xn, xc)
    expected = (len(batch),) if head.n_outputs == 1 else (len(batch), head.n_outputs)
    if tuple(out.shape) != expected:
        raise SanityCheckError(
            f"sanity check: the network returns shape {tuple(out.shape)} for a batch of {len(batch)}; "
            f"expected {expected} ({head.n_outputs} output(s) per row for task {head.task}). Fix the "
            "architecture / model code (an entry point gets n_outputs when its signature names it)."
        )
    params = [p for p in net.parameters() if p.requires_grad]
    if not params:
        raise SanityCheckError("sanity check: the network has no trainable parameters.")
    opt = torch.optim.Adam(params, lr=lr)
    loss_fn = head.loss_fn()
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


def cpu_threads(device: torch.device, requested: int | None = None, *, background: bool = False) -> int | None:
    """Intra-op threads for training on ``device``: ``requested``, else torch's count minus the one core left to
    background work (the checkpoint writer, MLflow's async logger), at least 1; None on an accelerator.

    Why: on a small CPU box torch's intra-op pool and our background threads compete for the same cores,
    and a parallel region stalls whenever one of its threads is descheduled (measured on 2 shared cores:
    an epoch of the example's network took 0.7-1.3 s with 2 intra-op threads, 0.10-0.17 s with 1;
    ``benchmarks/train_loop.py``). Tabular networks are too small for the second thread to pay anyway.
    """
    if device.type != "cpu":
        return None
    if requested is not None:
        return max(1, int(requested))
    return max(1, torch.get_num_threads() - (1 if background else 0))


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Set torch's intra-op thread count for the block (None: leave it) and restore it afterwards."""
    before = torch.get_num_threads()
    if n is not None and n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


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
    head: Head | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    device: torch.device | str | None = None,
    compile_model: bool = False,
    checkpoint: CheckpointStore | None = None,
    checkpoint_every: int = 1,
    checkpoint_extra: dict[str, Any] | None = None,
    resume: dict[str, Any] | None = None,
    num_threads: int | None = None,
) -> tuple[nn.Module, list[dict[str, float]], int]:
    """Train; return (best network on CPU, per-epoch history, best epoch; 0 = untrained init).

    Whole splits live on the device as tensors and batches are index slices of a per-epoch
    permutation (no DataLoader); the only host syncs are one per epoch (loss + validation for
    logging). CUDA: bf16 autocast, pinned host->device copy. ``compile_model``: ``torch.compile``.
    ``checkpoint``: every ``checkpoint_every`` epochs (and at the end) the full state is saved;
    ``resume`` (a loaded checkpoint) continues from its epoch with identical RNG streams, so on CPU
    the result equals an uninterrupted run. ``num_threads``: torch intra-op threads while training on CPU
    (default :func:`cpu_threads`: one core is left to the background checkpoint writer); restored on return.
    ``head``: the task's :class:`~.heads.Head` (outputs, loss, targets, validation; default binary); early
    stopping watches its validation loss (log loss of a classifier, the training loss of a regression).
    """
    device = torch.device(device) if device is not None else select_device()
    head = head or Head(label=label)
    where = "the training snapshot"
    with torch_threads(cpu_threads(device, num_threads, background=checkpoint is not None)):
        _seed_everything(seed)
        net = build_network(arch, len(pre.numeric), pre.cardinalities, head.n_outputs, head.task).to(device)
        step_net: Callable[..., torch.Tensor] = net
        if compile_model:
            step_net = torch.compile(net)  # type: ignore[assignment]
        x_num, x_cat = pre.transform(train_df)
        xn, xc = _to_device(x_num, device), _to_device(x_cat, device)
        y = _to_device(head.encode(train_df[label], where, "train"), device)
        y_val = head.truth(val_df[label], where, "validation")
        n = len(train_df)
        gen = torch.Generator(device="cpu").manual_seed(seed)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        loss_fn = head.loss_fn().to(device)
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
                z_val = predict_logits_arrays(net, *val_arrays)
                if not math.isfinite(train_loss) or not np.all(np.isfinite(z_val)):
                    raise TrainingError(
                        f"training diverged at epoch {epoch}: train loss {train_loss} (NaN/inf loss or predictions); "
                        "nothing was registered. Lower training.learning_rate in the YAML or check the architecture."
                    )
                val_loss, val_metrics = head.validate(y_val, z_val)
                row = {"train_loss": train_loss, "val_loss": val_loss, **val_metrics}
                history.append(row)
                if val_loss < best_loss - 1e-6:
                    best_loss, best_epoch, bad_epochs = val_loss, epoch, 0
                    best_state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
                else:
                    bad_epochs += 1
                stopped = bad_epochs >= patience
                if stopped or epoch == epochs or epoch % max(1, checkpoint_every) == 0:
                    save(epoch, stopped or epoch == epochs)
                log.info("epoch %d: %s", epoch, " ".join(f"{k} {v:.4f}" for k, v in row.items()))
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
