"""MLflow side of training: store, experiments, keyed runs, model logging and registration (runtime module).

Runtime code receives the store as resolved settings (``tracking``: the public dict of
:class:`~mlops_provider.hooks.mlflow.TrackingConfig`, built by the operator through the hook); it never
looks up an Airflow connection. Reachability of a remote server is checked by the hook / operator
before runtime code runs (``MLflowHook.wait_until_reachable``).

Idempotency: a training run carries the tag ``mlops.idempotency_key``; :func:`find_keyed_run` finds
it again after a retry and :func:`registered_version` tells whether it already registered a version.
Lineage: :func:`git_tags` (project and DAG file commits), :func:`log_inputs` (the snapshot's splits
as MLflow datasets). The pyfunc: :func:`log_model` (weights + model config artifacts, explicit
signature, pinned pip requirements, reload check).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import queue
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
import torch
from mlflow import MlflowClient
from torch import nn

from mlops_provider.exceptions import ModelRegistryError, TrainingError
from mlops_provider.runtime.training.heads import Head
from mlops_provider.runtime.training.model import (
    MODEL_CONFIG_ARTIFACT,
    STATE_DICT_ARTIFACT,
    Preprocessor,
    TabularTorchModel,
    model_config,
    predict_outputs,
)
from mlops_provider.tasks import ALL_TRAINING_METRICS, TRAINING_METRICS

log = logging.getLogger(__name__)

IDEMPOTENCY_TAG = "mlops.idempotency_key"
VERSION_TAG = "mlops.model_version"
COMPLETE_TAG = "mlops.training_complete"
MODEL_ARTIFACT_NAME = "model"
CONFIG_ARTIFACT = "config/training_config.json"
#: the model version's tags as registered (a retry completes a version from it)
VERSION_TAGS_ARTIFACT = "config/version_tags.json"
SUPERSEDED_TAG = "mlops.superseded_by"
#: metrics of a binary training run's result (XCom): the validation metrics and the best epoch
FINAL_METRICS = (*TRAINING_METRICS, "best_epoch")
#: the result metrics of any task (a reused run's metrics are read back without knowing its task)
ALL_FINAL_METRICS = (*ALL_TRAINING_METRICS, "best_epoch")


def final_metrics(metrics: dict[str, float]) -> dict[str, float]:
    """The result metrics (the task's validation metrics + ``best_epoch``) among a run's metrics."""
    return {k: float(v) for k, v in metrics.items() if k in ALL_FINAL_METRICS}


# ---------------------------------------------------------------------------- keys
def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def make_idempotency_key(*parts: Any) -> str:
    """A stable key from its parts (e.g. dag_id, run_id, snapshot hash, config hash)."""
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:32]


# ---------------------------------------------------------------------------- store, experiments, runs
def configure_tracking(tracking: dict[str, Any] | None) -> MlflowClient:
    """Point this process at the store of ``tracking`` (``tracking_uri`` / ``registry_uri``) and return a client."""
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


def close_dead_run(client: MlflowClient, run: Any, reason: str) -> None:
    """Mark an abandoned attempt's run KILLED (unless it already ended) with the reason; a fresh run follows."""
    if run.info.status in ("RUNNING", "SCHEDULED"):
        client.set_terminated(run.info.run_id, "KILLED")
    client.set_tag(run.info.run_id, "mlops.closed_reason", reason)
    log.warning("closed MLflow run %s (%s): %s", run.info.run_id, run.info.status, reason)


def complete_registration(client: MlflowClient, run: Any, version: Any, *, end: bool = True) -> None:
    """Make a registered version's run whole: ``mlops.model_version`` and ``mlops.training_complete`` on the
    run, every tag of ``config/version_tags.json`` on the version, and (``end``) the run FINISHED. Idempotent:
    what a kill between registration and tagging left out is written on the retry."""
    tags = run.data.tags
    if tags.get(VERSION_TAG) != str(version.version):
        client.set_tag(run.info.run_id, VERSION_TAG, str(version.version))
    expected = _version_tags(run.info.run_id)
    have = dict(version.tags or {})
    for k, v in expected.items():
        if have.get(k) != v:
            client.set_model_version_tag(version.name, str(version.version), k, v)
    if tags.get(COMPLETE_TAG) != "true":
        client.set_tag(run.info.run_id, COMPLETE_TAG, "true")
    if end and run.info.status != "FINISHED":
        client.set_terminated(run.info.run_id, "FINISHED")


def _version_tags(run_id: str) -> dict[str, str]:
    try:
        return {str(k): str(v) for k, v in mlflow.artifacts.load_dict(
            f"runs:/{run_id}/{VERSION_TAGS_ARTIFACT}").items()}
    except Exception:  # noqa: BLE001 - a version registered before the artifact existed: nothing to compare
        return {}


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


def logged_steps(client: MlflowClient, run_id: str, key: str = "train_loss") -> set[int]:
    """Steps of ``key`` already in the run (a resumed run logs each epoch once)."""
    try:
        return {int(m.step) for m in client.get_metric_history(run_id, key)}
    except Exception:  # noqa: BLE001
        return set()


def run_result(
    run_id: str, version: Any | None, metrics: dict[str, float], uri: str, reused: bool, **extra: Any
) -> dict[str, Any]:
    """The training result shape every training entry point returns (TorchTrainOperator's XCom)."""
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


def flatten_params(config: dict[str, Any]) -> dict[str, str]:
    """A nested config as MLflow params (``a.b`` keys, JSON for lists, 500 characters at most)."""
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


class MetricWriter:
    """Metrics of one MLflow run, written by a background thread: :meth:`log` only enqueues (no store
    round trip on the training thread); rows arriving within ``interval_s`` of each other go out in one
    ``log_batch`` call; :meth:`close` writes what is queued at once and returns.

    Why not ``mlflow.log_metrics(..., synchronous=False)``: MLflow's async queue notices a flush only when
    its 1 s ``queue.get`` times out, and ``end_run`` waits for it once more (measured: 0.8 s + 1.0 s per run,
    more than a whole training of the example; ``benchmarks/train_loop.py``), and it writes every epoch
    (a sqlite ``log_batch`` costs ~5 ms of CPU, 5 % of a 100 ms epoch on a shared 2-core worker). A failed
    write is logged and does not stop training (as with MLflow's queue); after a crash, the epochs not yet
    written are replayed from the checkpoint's history by the resumed run.
    """

    MAX_BATCH = 1000  # metric values per log_batch call (MLflow's limit)

    def __init__(self, client: MlflowClient, run_id: str, *, interval_s: float = 1.0) -> None:
        self.client, self.run_id, self.interval_s = client, run_id, float(interval_s)
        self._queue: queue.Queue[list[Any] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name=f"mlops-metrics-{run_id[:8]}", daemon=True)
        self._thread.start()

    def log(self, metrics: dict[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._queue.put([Metric(str(k), float(v), now, int(step)) for k, v in metrics.items()])

    def _write(self, batch: list[Any]) -> None:
        if not batch:
            return
        try:
            self.client.log_batch(self.run_id, metrics=batch)
        except Exception as e:  # noqa: BLE001 - metrics are best effort, like MLflow's async queue
            log.error("run %s: could not log %d metric values: %s", self.run_id, len(batch), e)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, deadline = list(first), time.monotonic() + self.interval_s
            while True:  # gather what arrives within interval_s; close() (None) cuts the wait short
                try:
                    more = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if more is None:
                    self._write(batch)
                    return
                if len(batch) + len(more) > self.MAX_BATCH:
                    self._write(batch)
                    batch = []
                batch.extend(more)
            self._write(batch)

    def close(self) -> None:
        """Write what is queued, then stop the thread (idempotent)."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()


# ---------------------------------------------------------------------------- lineage
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


def log_inputs(
    train_df: pd.DataFrame, val_df: pd.DataFrame, path: str, snapshot_hash: str, feature_service: str, label: str
) -> None:
    """The snapshot's train / validation splits as MLflow dataset inputs of the active run."""
    from mlflow.data.pandas_dataset import from_pandas

    for context, frame in (("training", train_df), ("validation", val_df)):
        ds = from_pandas(
            frame, source=str(path), targets=label, name=f"{feature_service or 'snapshot'}@{snapshot_hash[:16]}",
            digest=f"{snapshot_hash[:16]}-{context}",
        )
        mlflow.log_input(ds, context=context,
                         tags={"snapshot_hash": snapshot_hash, "feature_service": feature_service})


# ---------------------------------------------------------------------------- model logging and registration
def register_model_version(model_uri: str, model_name: str, version_tags: dict[str, str]) -> Any:
    """Register ``model_uri`` (e.g. ``runs:/<id>/model``) as a new version of ``model_name`` with tags."""
    try:
        return mlflow.register_model(model_uri, model_name, tags=version_tags)
    except Exception as e:
        raise ModelRegistryError(
            f"could not register {model_uri} as a version of {model_name!r} in {mlflow.get_registry_uri()}: "
            f"{e}. Check the MLflow connection (registry_uri) and retry the task."
        ) from e


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


def pip_requirements() -> list[str]:
    """The pinned requirements of the logged pyfunc (explicit: MLflow's inference is slow)."""
    import cloudpickle

    return [
        f"mlflow=={mlflow.__version__}",
        f"torch=={torch.__version__.split('+')[0]}",
        f"pandas=={pd.__version__}",
        f"numpy=={np.__version__}",
        f"cloudpickle=={cloudpickle.__version__}",
    ]


def output_schema(head: Head) -> Any:
    """The pyfunc's output signature: 1-D float64, or n x k (multiclass) / n x (1 + q) (regression quantiles)."""
    from mlflow.types import Schema, TensorSpec

    width = head.n_outputs
    shape = (-1,) if width == 1 else (-1, width)
    return Schema([TensorSpec(np.dtype("float64"), shape)])


def log_model(
    net: nn.Module, pre: Preprocessor, arch: dict[str, Any], features: pd.DataFrame, head: Head | None = None
) -> Any:
    """Log the pyfunc (weights + model_config artifacts with the task's head, signature, input example)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    from mlops_provider.runtime.training.model import load_model_parts

    head = head or Head()
    example = _example_frame(features, pre)
    # pip_requirements are explicit (no slow inference); do not copy the cwd's uv project into the model
    with tempfile.TemporaryDirectory() as tmp, _env(MLFLOW_LOG_UV_FILES="false"):
        state_path = Path(tmp) / "state_dict.pt"
        config_path = Path(tmp) / "model_config.json"
        torch.save(net.state_dict(), state_path)
        config_path.write_text(json.dumps(model_config(pre, arch, head), sort_keys=True))
        reloaded, _, reloaded_head = load_model_parts(json.loads(config_path.read_text()), str(state_path))
        check = predict_outputs(reloaded, pre, reloaded_head, example)
        width = head.n_outputs if head.task != "binary" else 1
        expected = (len(example),) if width == 1 else (len(example), width)
        if check.shape != expected or not np.all(np.isfinite(check)):
            raise TrainingError("the saved model does not reload to the trained one (bad shape or non-finite output).")
        # explicit schema: categoricals are strings, every numeric column is double (NaN allowed, imputed)
        cols: list[ColSpec | TensorSpec] = [ColSpec("string", c) for c in pre.categorical]
        cols += [ColSpec("double", c) for c in pre.numeric]
        signature = ModelSignature(inputs=Schema(cols), outputs=output_schema(head))
        metadata = {"requires_python_package": "mlops_provider (airflow-provider-mlops)", **head.tags()}
        if "entry_point" in arch:
            metadata["requires_entry_point_module"] = str(arch["entry_point"]).split(":")[0]
        return mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT_NAME,
            python_model=TabularTorchModel(),
            artifacts={STATE_DICT_ARTIFACT: str(state_path), MODEL_CONFIG_ARTIFACT: str(config_path)},
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements(),
            metadata=metadata,
        )


__all__ = [
    "COMPLETE_TAG",
    "CONFIG_ARTIFACT",
    "ALL_FINAL_METRICS",
    "FINAL_METRICS",
    "IDEMPOTENCY_TAG",
    "MODEL_ARTIFACT_NAME",
    "SUPERSEDED_TAG",
    "VERSION_TAG",
    "VERSION_TAGS_ARTIFACT",
    "MetricWriter",
    "close_dead_run",
    "complete_registration",
    "config_hash",
    "configure_tracking",
    "final_metrics",
    "find_keyed_run",
    "flatten_params",
    "get_or_create_experiment",
    "git_tags",
    "log_inputs",
    "log_model",
    "logged_steps",
    "make_idempotency_key",
    "output_schema",
    "pip_requirements",
    "register_model_version",
    "registered_version",
    "run_result",
]
