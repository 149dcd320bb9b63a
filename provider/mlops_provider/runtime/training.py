"""Training of the tabular model, tracked in MLflow (runtime module: runs inside the task).

``train()`` loads a snapshot, fits the preprocessor on its train split, trains the MLP with
in-memory tensor batches (CUDA + bf16 autocast when available, CPU otherwise), early-stops on
validation log loss, logs everything to MLflow and registers a NEW model version. It never
moves an alias (the gate / promote step does).

Idempotency: the MLflow run carries the tag ``mlops.idempotency_key``. A run with that key
that already registered a version is returned as is (no retraining); a run with that key and
no version yet (the task died mid-way) is reopened under the same ``run_id`` and trained again.
"""

from __future__ import annotations

import contextlib
import copy
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
from mlops_provider.runtime.model import (
    MODEL_CONFIG_ARTIFACT,
    STATE_DICT_ARTIFACT,
    Preprocessor,
    TabularTorchModel,
    build_mlp,
    model_config,
    normalize_architecture,
    predict_proba,
)

log = logging.getLogger(__name__)

IDEMPOTENCY_TAG = "mlops.idempotency_key"
VERSION_TAG = "mlops.model_version"
MODEL_ARTIFACT_NAME = "model"


# ---------------------------------------------------------------------------- helpers
def load_snapshot_frame(path: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``(DataFrame, manifest)`` of a snapshot directory (features area's reader)."""
    from mlops_provider.runtime.snapshot import load_snapshot

    return load_snapshot(path)


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def make_idempotency_key(*parts: Any) -> str:
    """A stable key from its parts (e.g. dag_id, run_id, snapshot hash, config hash)."""
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:32]


def _check_frame(df: pd.DataFrame, categorical: list[str], numeric: list[str], label: str, where: str) -> None:
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
    """``roc_auc`` and ``log_loss`` of probabilities ``p`` against 0/1 labels ``y``."""
    from sklearn.metrics import log_loss, roc_auc_score

    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(p, dtype=np.float64)
    auc = float(roc_auc_score(y, p)) if len(np.unique(y)) == 2 else float("nan")
    return {"roc_auc": auc, "log_loss": float(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1]))}


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
    net = build({**normalize_architecture(arch), "dropout": 0.0}, len(numeric), pre.cardinalities)
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
) -> tuple[nn.Module, list[dict[str, float]], int]:
    """Train; return (best network on CPU, per-epoch history, best epoch; 0 = untrained init)."""
    device = select_device()
    _seed_everything(seed)
    net = build_mlp(arch, len(pre.numeric), pre.cardinalities).to(device)
    x_num, x_cat = pre.transform(train_df)
    xn = torch.from_numpy(x_num).to(device)
    xc = torch.from_numpy(x_cat).to(device)
    y = torch.as_tensor(pd.to_numeric(train_df[label]).to_numpy(dtype=np.float32), device=device)
    y_val = pd.to_numeric(val_df[label]).to_numpy(dtype=np.int64)
    n = len(train_df)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    loss_fn = nn.BCEWithLogitsLoss(reduction="sum")
    use_amp = device.type == "cuda"
    history: list[dict[str, float]] = []
    best_loss, best_epoch, bad_epochs = math.inf, 0, 0
    best_state = copy.deepcopy({k: v.detach().cpu() for k, v in net.state_dict().items()})
    log.info("training on %s: %d rows, %d epochs max, batch %d", device, n, epochs, batch_size)
    for epoch in range(1, epochs + 1):
        net.train()
        perm = torch.randperm(n, generator=gen).to(device)
        total = torch.zeros((), device=device)
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
                logits = net(xn[idx], xc[idx])
            loss = loss_fn(logits.float(), y[idx])
            (loss / len(idx)).backward()
            opt.step()
            total += loss.detach()
        train_loss = float(total) / n  # one device sync per epoch
        p_val = predict_proba(net, pre, val_df)
        if not np.all(np.isfinite(p_val)) or not math.isfinite(train_loss):
            raise TrainingError(
                f"training diverged at epoch {epoch} (train loss {train_loss}); lower learning_rate in the YAML."
            )
        m = binary_metrics(y_val, p_val)
        row = {"train_loss": train_loss, "val_loss": m["log_loss"], "val_roc_auc": m["roc_auc"]}
        history.append(row)
        if on_epoch is not None:
            on_epoch(epoch, row)
        log.info("epoch %d: train_loss %.4f val_loss %.4f val_auc %.4f", epoch, *row.values())
        if m["log_loss"] < best_loss - 1e-6:
            best_loss, best_epoch, bad_epochs = m["log_loss"], epoch, 0
            best_state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
        else:
            bad_epochs += 1
            if bad_epochs >= patience:
                log.info("early stopping at epoch %d (best %d)", epoch, best_epoch)
                break
    net = net.cpu()
    net.load_state_dict(best_state)
    net.eval()
    return net, history, best_epoch


# ---------------------------------------------------------------------------- MLflow
def configure_tracking(tracking: dict[str, Any] | None) -> MlflowClient:
    tracking = tracking or {}
    uri = tracking.get("tracking_uri") or mlflow.get_tracking_uri()
    registry = tracking.get("registry_uri") or uri
    if str(uri).startswith("sqlite:///"):
        Path(str(uri)[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
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


def _result(run_id: str, version: Any, metrics: dict[str, float], uri: str, reused: bool) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "model_version": str(version.version),
        "model_uri": f"models:/{version.name}/{version.version}",
        "metrics": {k: float(v) for k, v in sorted(metrics.items())},
        "tracking_uri": uri,
        "reused": reused,
    }


def _flatten_params(config: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in config.items():
        if isinstance(v, dict):
            for k2, v2 in v.items():
                out[f"{k}.{k2}"] = json.dumps(v2) if isinstance(v2, list | dict) else str(v2)
        elif isinstance(v, list):
            out[k] = json.dumps(v)[:500]
        else:
            out[k] = str(v)
    return out


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
) -> dict[str, Any]:
    """Train, log and register a new version of ``model_name``. Returns
    ``{"run_id", "model_version", "model_uri", "metrics", "tracking_uri", "reused"}``.

    ``tracking``: ``{"tracking_uri", "registry_uri", "artifact_location"}`` (MLflowHook's public
    config); ``tags``: model version tags from the caller (dag_id, run_id, data_interval);
    snapshot_path / snapshot_hash / feature_service are added here from the manifest.
    ``on_run_start(run_id, experiment_id)`` is called once the MLflow run exists (extra links).
    """
    if epochs < 0 or batch_size <= 0 or lr <= 0 or patience < 1:
        raise TrainingError(
            f"invalid training settings epochs={epochs} batch_size={batch_size} learning_rate={lr} "
            f"patience={patience}: need epochs >= 0, batch_size > 0, learning_rate > 0, patience >= 1."
        )
    arch_n = normalize_architecture(arch)
    df, manifest = load_snapshot_frame(snapshot_path)
    snapshot_hash = str(manifest.get("hash", ""))
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
    key = idempotency_key or make_idempotency_key(model_name, snapshot_hash, config_hash(resolved))

    client = configure_tracking(tracking)
    uri = mlflow.get_tracking_uri()
    experiment_id = get_or_create_experiment(
        client, experiment_name or model_name, (tracking or {}).get("artifact_location")
    )
    existing = find_keyed_run(client, experiment_id, key)
    resume_run_id: str | None = None
    if existing is not None:
        version = registered_version(client, model_name, existing)
        if version is not None:
            if existing.info.status != "FINISHED":
                client.set_terminated(existing.info.run_id, "FINISHED")
            log.info("run %s (key %s) already registered %s v%s; not retraining",
                     existing.info.run_id, key, model_name, version.version)
            metrics = {k: v for k, v in existing.data.metrics.items() if k in ("roc_auc", "log_loss", "best_epoch")}
            return _result(existing.info.run_id, version, metrics, uri, reused=True)
        resume_run_id = existing.info.run_id
        log.info("resuming MLflow run %s (key %s, status %s)", resume_run_id, key, existing.info.status)

    train_df, val_df = split_frames(df, categorical, numeric, label, str(snapshot_path))
    version_tags = {str(k): str(v) for k, v in (tags or {}).items()}
    version_tags.update(
        {"snapshot_path": str(snapshot_path), "snapshot_hash": snapshot_hash, "feature_service": feature_service,
         IDEMPOTENCY_TAG: key}
    )
    run_tags = {IDEMPOTENCY_TAG: key, **{f"mlops.{k}": v for k, v in version_tags.items() if k != IDEMPOTENCY_TAG}}

    with mlflow.start_run(
        run_id=resume_run_id,
        experiment_id=None if resume_run_id else experiment_id,
        run_name=None if resume_run_id else f"{model_name}-{snapshot_hash[:8] or 'snapshot'}",
        tags=run_tags,
    ) as run:
        run_id = run.info.run_id
        if on_run_start is not None:
            on_run_start(run_id, experiment_id)
        device = select_device()
        mlflow.log_params({**_flatten_params({k: v for k, v in resolved.items() if k != "features"}),
                           "n_categorical": len(categorical), "n_numeric": len(numeric),
                           "device": device.type, "rows_train": len(train_df), "rows_validation": len(val_df)})
        mlflow.log_dict(resolved, "config/training_config.json")
        _log_inputs(train_df, val_df, snapshot_path, snapshot_hash, feature_service, label)

        pre = Preprocessor.fit(train_df, categorical, numeric)

        def on_epoch(epoch: int, row: dict[str, float]) -> None:
            mlflow.log_metrics(row, step=epoch)

        net, history, best_epoch = fit_network(
            pre, train_df, val_df, label, arch_n, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
            patience=patience, on_epoch=on_epoch,
        )
        p_val = predict_proba(net, pre, val_df)
        if not np.all(np.isfinite(p_val)):
            raise TrainingError(f"the trained model predicts non-finite probabilities on {snapshot_path}.")
        final = binary_metrics(pd.to_numeric(val_df[label]).to_numpy(), p_val)
        metrics = {**final, "best_epoch": float(best_epoch), "epochs_run": float(len(history))}
        mlflow.log_metrics(metrics)

        feature_cols = [*categorical, *numeric]
        version = _log_and_register(client, net, pre, arch_n, val_df[feature_cols], model_name, version_tags)
        client.set_tag(run_id, VERSION_TAG, str(version.version))
    log.info("registered %s v%s from run %s: %s", model_name, version.version, run_id, final)
    return _result(run_id, version, {k: metrics[k] for k in ("roc_auc", "log_loss", "best_epoch")}, uri, False)


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


def _log_and_register(
    client: MlflowClient,
    net: nn.Module,
    pre: Preprocessor,
    arch: dict[str, Any],
    features: pd.DataFrame,
    model_name: str,
    version_tags: dict[str, str],
) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    example = _example_frame(features, pre)
    # pip_requirements are explicit (no slow inference); do not copy the cwd's uv project into the model
    with tempfile.TemporaryDirectory() as tmp, _env(MLFLOW_LOG_UV_FILES="false"):
        state_path = Path(tmp) / "state_dict.pt"
        config_path = Path(tmp) / "model_config.json"
        torch.save(net.state_dict(), state_path)
        config_path.write_text(json.dumps(model_config(pre, arch), sort_keys=True))
        from mlops_provider.runtime.model import load_network

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
        info = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT_NAME,
            python_model=TabularTorchModel(),
            artifacts={STATE_DICT_ARTIFACT: str(state_path), MODEL_CONFIG_ARTIFACT: str(config_path)},
            signature=signature,
            input_example=example,
            pip_requirements=_pip_requirements(),
            metadata={"requires_python_package": "mlops_provider (airflow-provider-mlops)"},
        )
    try:
        return mlflow.register_model(info.model_uri, model_name, tags=version_tags)
    except Exception as e:
        raise ModelRegistryError(
            f"could not register {info.model_uri} as a version of {model_name!r} in {mlflow.get_registry_uri()}: "
            f"{e}. Check the MLflow connection (registry_uri) and retry the task."
        ) from e
