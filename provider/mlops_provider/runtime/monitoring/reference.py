"""The monitor's reference: the champion's training snapshot found through MLflow lineage, and its
statistics, cached per model version (runtime module)."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from mlops_provider.exceptions import (
    DriftError,
    ModelRegistryError,
    NothingToMonitorError,
    ReferenceSnapshotMissingError,
)
from mlops_provider.runtime.io.objstore import ObjectStore, is_s3
from mlops_provider.runtime.monitoring.drift import DriftRules, reference_statistics
from mlops_provider.runtime.monitoring.statistics import ReferenceStats, cache_key

log = logging.getLogger(__name__)


def reference_version(client: Any, model: str, alias: str) -> Any:
    """The model version under ``models:/<model>@<alias>``.

    :class:`NothingToMonitorError` when the model or the alias does not exist yet (normal before the
    first promotion: the monitor's cron starts with the deployment), :class:`ModelRegistryError` on any
    other registry error.
    """
    try:
        return client.get_model_version_by_alias(model, alias)
    except Exception as e:  # mlflow raises MlflowException / RestException
        if getattr(e, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            raise NothingToMonitorError(
                f"Nothing to monitor yet: models:/{model}@{alias} does not exist ({e}). The first training "
                "run's gate promotes one."
            ) from e
        raise ModelRegistryError(
            f"models:/{model}@{alias} does not resolve ({e}). Drift needs a model version under alias "
            f"'{alias}': run the training DAG and let the gate promote a champion, or set reference_alias."
        ) from e


def snapshot_from_lineage(client: Any, version: Any) -> str | None:
    """The training snapshot of a model version, through MLflow lineage.

    Order: the version's ``snapshot_path`` tag (set at registration), the source of the training
    run's dataset input (``log_snapshot_input``), the run's ``mlops.snapshot_path`` tag.
    """
    tags = dict(getattr(version, "tags", None) or {})
    if tags.get("snapshot_path"):
        return str(tags["snapshot_path"])
    run_id = getattr(version, "run_id", None)
    if not run_id:
        return None
    try:
        run = client.get_run(run_id)
    except Exception as e:  # noqa: BLE001 - a deleted run simply has no lineage
        log.warning("Run %s of the model version is unreadable (%s); no lineage", run_id, e)
        return None
    for inp in getattr(run.inputs, "dataset_inputs", None) or []:
        ctx = {t.key: t.value for t in inp.tags or []}.get("mlflow.data.context")
        if ctx in (None, "training"):
            try:
                uri = json.loads(inp.dataset.source).get("uri")
            except (TypeError, ValueError, AttributeError):
                uri = None
            if uri:
                return str(uri)
    return run.data.tags.get("mlops.snapshot_path") or None


def check_reference(
    snapshot_path: str | None, *, model: str, model_version: str | int | None, store: ObjectStore | None = None
) -> str:
    """The snapshot a model version references; :class:`ReferenceSnapshotMissingError` if untagged or gone."""
    where = f"models:/{model} version {model_version}"
    if not snapshot_path:
        raise ReferenceSnapshotMissingError(
            f"{where} has no 'snapshot_path' tag, so drift has no reference. Register versions through the "
            "training DAG (it sets the tag), or add the tag to the version in MLflow."
        )
    exists: bool
    if is_s3(snapshot_path):
        from mlops_provider.exceptions import DataValidationError
        from mlops_provider.runtime.features.snapshot import read_manifest

        try:
            read_manifest(snapshot_path, store=store)
            exists = True
        except DataValidationError:
            exists = False
    else:
        exists = Path(snapshot_path).exists()
    if not exists:
        raise ReferenceSnapshotMissingError(
            f"Reference snapshot {snapshot_path} (tag 'snapshot_path' of {where}) does not exist. "
            "Snapshots are immutable: restore the directory, or retrain and promote a champion whose "
            "snapshot exists."
        )
    return str(snapshot_path)


def load_reference(
    snapshot_path: str | None, *, model: str, model_version: str | int | None, store: ObjectStore | None = None
) -> pd.DataFrame:
    """The training split (``split == "train"``) of the snapshot a model version references.

    Raises :class:`DriftError` naming the path and the model version when it is missing or unreadable.
    """
    from mlops_provider.exceptions import DataValidationError
    from mlops_provider.runtime.features.snapshot import load_snapshot

    path = check_reference(snapshot_path, model=model, model_version=model_version, store=store)
    try:
        frame, _manifest = load_snapshot(path, store=store)
    except DataValidationError as e:
        raise DriftError(
            f"Reference snapshot {snapshot_path} of models:/{model} version {model_version} is unusable: {e}"
        ) from e
    if "split" in frame.columns:
        frame = frame[frame["split"] == "train"]
    log.info("Reference: %d training rows from %s (models:/%s v%s)", len(frame), path, model, model_version)
    return frame.reset_index(drop=True)


def load_reference_stats(
    snapshot_path: str | None,
    *,
    model: str,
    model_version: str | int | None,
    numeric: Sequence[str],
    categorical: Sequence[str],
    rules: DriftRules,
    cache_dir: str | os.PathLike[str] | None,
    store: ObjectStore | None = None,
) -> tuple[ReferenceStats, bool]:
    """Reference statistics of a model version, cached per (model, version, snapshot hash, settings), with
    the drift thresholds calibrated on its chunks (computed once per version and calibration settings).

    Returns ``(stats, cache_hit)``. The cache lives under ``<cache_dir>/<model>/v<version>/<key>/``;
    a snapshot is immutable, so an entry never goes stale. The snapshot must still exist (lineage is
    checked on every run even when the cache hits).
    """
    from mlops_provider.runtime.features.snapshot import read_manifest

    path = check_reference(snapshot_path, model=model, model_version=model_version, store=store)
    try:
        digest = str(read_manifest(path, store=store).get("hash", ""))
    except Exception:  # noqa: BLE001 - a missing manifest is reported by load_snapshot below
        digest = ""
    settings = rules.calibration_settings
    calibration = (
        ["calibration-v1", sorted(dict(rules.calibration).items()), rules.chunk_hours()] if settings.enabled else None
    )
    key = cache_key(
        path, digest, list(numeric), list(categorical), rules.reference_rows, rules.seed, rules.bins, calibration
    )
    entry = Path(cache_dir) / model / f"v{model_version}" / key if cache_dir else None
    if entry is not None and entry.is_dir():
        cached = ReferenceStats.from_dir(entry)
        if cached is not None:
            log.info("Reference statistics of models:/%s v%s from cache %s", model, model_version, entry)
            return cached, True
    frame = load_reference(path, model=model, model_version=model_version, store=store)
    stats = reference_statistics(frame, numeric, categorical, rules, where=f"{path}, models:/{model} v{model_version}")
    stats.key = key
    if entry is not None:
        stats.to_dir(entry)
        log.info("Cached reference statistics in %s", entry)
    return stats, False

