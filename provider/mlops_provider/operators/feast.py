"""Feature operators: offline partitions, ``feast apply``, materialization, training snapshot.

Parse-safe: only the standard library and ``airflow.sdk`` at module level; Feast, pandas and the
runtime helpers (``mlops_provider.runtime.features.*``) are imported inside ``execute()``.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator, Context

from mlops_provider.hooks.feast import FeastHook


def as_path_list(value: Any) -> list[str]:
    """Normalise a rendered ``list[str] | str`` of paths.

    Accepts a list, a JSON / Python list literal (what Jinja renders a list to), a comma-separated
    string, or one path. Directories expand to the ``*.parquet`` files in them (sorted). ``s3://``
    URLs pass through unchanged (they are objects, not directories).
    """
    if value is None:
        return []
    items: list[Any]
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                items = list(json.loads(text))
            except ValueError:
                items = list(ast.literal_eval(text))
        else:
            items = [p for p in (s.strip() for s in text.split(",")) if p]
    elif isinstance(value, Sequence):
        items = list(value)
    else:
        items = [value]
    out: list[str] = []
    for item in items:
        if str(item).startswith("s3://"):
            out.append(str(item))
            continue
        p = Path(str(item)).expanduser()
        if p.is_dir():
            out.extend(str(f) for f in sorted(p.glob("*.parquet")) if not f.name.startswith("."))
        else:
            out.append(str(p))
    return out


def as_name_list(value: Any) -> list[str]:
    """Normalise a rendered ``list[str] | str`` of names (list, JSON / Python list literal, comma-separated)."""
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if text in ("", "None"):
            return []
        if text.startswith("["):
            try:
                return [str(v) for v in json.loads(text)]
            except ValueError:
                return [str(v) for v in ast.literal_eval(text)]
        return [p for p in (s.strip() for s in text.split(",")) if p]
    return [str(v) for v in value]


def _set_outlet_extras(operator: BaseOperator, context: Context, extra: dict[str, Any]) -> None:
    for outlet in operator.outlets or []:
        context["outlet_events"][outlet].extra = extra


class _FeastOperator(BaseOperator):
    """Shared hook plumbing of the Feast operators."""

    def __init__(self, *, repo_path: str, feast_conn_id: str = FeastHook.default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.repo_path = repo_path
        self.feast_conn_id = feast_conn_id

    @cached_property
    def hook(self) -> FeastHook:
        return FeastHook(feast_conn_id=self.feast_conn_id, repo_path=self.repo_path)

    @cached_property
    def feature_store(self) -> Any:
        """The repo's ``feast.FeatureStore``, opened (once) from the hook's resolved settings."""
        from mlops_provider.runtime.features.store import open_store

        return open_store(**self.hook.store_settings(self.repo_path))


class OfflinePartitionOperator(BaseOperator):
    """Run the model's feature pipeline ``transform(landed_files, lake_dir) -> dict`` and return its dict.

    **The transform contract.** ``transform`` is called with ``landed_files``, a list of *local* paths of the
    run's landed files (``s3://`` objects are downloaded first, file names kept), and ``lake_dir``; it returns a
    JSON-able dict (the task's XCom). The files are already normalised per the data ``contract``: every column
    whose contract declares the zone of its naive timestamps (``tz: America/New_York``) holds UTC instants -
    parquet: a ``timestamp[tz=UTC]`` column; CSV: ISO 8601 text with ``+00:00`` - so a transform that reads
    them with plain pandas (or anything else) sees no local time, whether or not it calls
    :func:`~mlops_provider.runtime.features.contracts.read_landed`. Every other column is handed over as
    landed (same types and values; a CSV cell keeps its text), and files without such a column are the landed
    files themselves. The normalised copies live in a temporary directory while the transform runs
    (:func:`~mlops_provider.runtime.features.landed.normalize_landed`).

    :param transform: ``"path/to/file.py:function"`` or ``"package.module:function"``.
    :param landed_files: paths of the landed files (list, or a rendered string; directories expand
        to their ``*.parquet`` files). Templated.
    :param lake_dir: the model's lake directory (``ModelPaths.lake``). Templated.
    :param contract: the data contract (``{"tables": {table: spec}}``, the model YAML's ``features.contract``
        as the validation task gets it); None: files are handed over as landed.
    :param aws_conn_id: connection for ``s3://`` landed files; they are downloaded to a temporary
        directory (file names kept) and the transform gets the local paths.
    """

    template_fields: Sequence[str] = ("transform", "landed_files", "lake_dir")
    ui_color = "#c6e2ff"

    def __init__(
        self,
        *,
        transform: str,
        landed_files: list[str] | str,
        lake_dir: str,
        contract: dict[str, Any] | None = None,
        aws_conn_id: str | None = "aws_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.transform = transform
        self.landed_files = landed_files
        self.lake_dir = lake_dir
        self.contract = contract
        self.aws_conn_id = aws_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        import tempfile

        from mlops_provider.exceptions import DataValidationError
        from mlops_provider.operators import object_store
        from mlops_provider.runtime.features.landed import normalize_landed
        from mlops_provider.runtime.features.transform_loader import load_callable

        files = as_path_list(self.landed_files)
        if not files:
            raise DataValidationError(
                f"no landed files to process (landed_files={self.landed_files!r}); check the landing asset event"
            )
        fn = load_callable(self.transform)
        self.log.info("running %s on %d file(s) into %s", self.transform, len(files), self.lake_dir)
        store = object_store(self.aws_conn_id)
        with store.localized(files) as local_files, tempfile.TemporaryDirectory(prefix="mlops-landed-") as tmp:
            result = fn(normalize_landed(local_files, self.contract, tmp), self.lake_dir)
        if not isinstance(result, dict):
            raise DataValidationError(f"transform {self.transform} returned {type(result).__name__}, expected a dict")
        self.log.info("offline partitions: %s", result)
        return result


class FeastApplyOperator(_FeastOperator):
    """``feast apply`` the repo when its definitions differ from the registry.

    Returns ``{"changed": bool, "diff": str}``. A no-op when nothing changed (materialization history is
    kept). Raises :class:`~mlops_provider.exceptions.FeatureStoreError` on an invalid repo.
    """

    template_fields: Sequence[str] = ("repo_path",)
    ui_color = "#d5f5e3"

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_provider.runtime.features.store import apply_repo

        result = apply_repo(self.feature_store)
        if result["changed"]:
            self.log.info("feast apply of %s: applied these changes:\n%s", self.repo_path, result["diff"])
        else:
            self.log.info(
                "feast apply of %s: no-op, the registry already matches the definitions (nothing written, "
                "materialization history kept)", self.repo_path
            )
        return result


class FeastMaterializeOperator(_FeastOperator):
    """Materialize a window of the (given or all online) feature views into the online store, in time chunks.

    The window is ``[start - overlap, end]`` (Feast's inclusive bounds); ``start``/``end`` default to the
    run's data interval. Each view is read ``chunk_hours`` of event time at a time and written to the
    online store oldest chunk first, so peak memory is bounded by the chunk, not the window; a re-run of
    the same window rewrites the same rows (upsert). The window is recorded on each view in the registry
    like ``FeatureStore.materialize`` does (``materialize_incremental`` and
    :class:`~mlops_provider.sensors.feast.FeatureFreshnessSensor` read it).

    Returns ``{"feature_views", "window": {"start", "end", "overlap_seconds", "materialized_start"},
    "rows": {view: entities written}, "rows_read": {view: n}, "rows_written": {view: n}, "chunks": n,
    "engine": {view: "arrow"|"feast"}}`` and puts it on the outlet asset events (``extra``).

    :param start: ISO timestamp; default the run's ``data_interval_start``. Templated.
    :param end: ISO timestamp; default the run's ``data_interval_end``. Templated.
    :param feature_views: names (default: every online view). Templated.
    :param overlap: re-read this much before ``start`` for late data: seconds, ``timedelta`` or an ISO-8601
        duration (``PT2H``). Templated.
    :param chunk_hours: event-time hours read per chunk (``0``/``None``: the whole window at once).
    :param write_batch_size: rows per online-store write call.
    """

    template_fields: Sequence[str] = ("repo_path", "start", "end", "feature_views", "overlap", "chunk_hours")
    ui_color = "#d5f5e3"

    def __init__(
        self,
        *,
        repo_path: str,
        start: str | None = None,
        end: str | None = None,
        feature_views: list[str] | None = None,
        feast_conn_id: str = FeastHook.default_conn_name,
        overlap: float | str | timedelta | None = None,
        chunk_hours: float | None = 168,
        write_batch_size: int = 10_000,
        **kwargs: Any,
    ) -> None:
        super().__init__(repo_path=repo_path, feast_conn_id=feast_conn_id, **kwargs)
        self.start = start
        self.end = end
        self.feature_views = feature_views
        self.overlap = overlap
        self.chunk_hours = chunk_hours
        self.write_batch_size = write_batch_size

    def _bound(self, value: Any, context: Context, key: str) -> Any:
        from mlops_provider.exceptions import FeatureStoreError

        if value is not None and str(value).strip() not in ("", "None"):
            return value
        interval = context.get(key)  # type: ignore[misc]
        if interval is None:
            raise FeatureStoreError(
                f"no materialization {key.removeprefix('data_interval_')}: pass start/end, or run the task in a "
                f"DAG run that has a data interval ({key} is not set)"
            )
        return interval

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_provider.runtime.features.materialize import materialize

        start = self._bound(self.start, context, "data_interval_start")
        end = self._bound(self.end, context, "data_interval_end")
        views = as_name_list(self.feature_views)
        chunk = timedelta(hours=float(self.chunk_hours)) if self.chunk_hours else None
        self.log.info("materializing %s over [%s, %s] (overlap %s, chunk %s)", views or "all online views",
                      start, end, self.overlap or 0, chunk or "whole window")
        result = materialize(
            self.feature_store,
            start,
            end,
            views or None,
            overlap=self.overlap,
            chunk=chunk,
            write_batch_size=int(self.write_batch_size),
        )
        for view in result["feature_views"]:
            self.log.info("  %s: read %s rows, wrote %s rows (%s entities) [%s]", view, result["rows_read"][view],
                          result["rows_written"][view], result["rows"][view], result["engine"][view])
        _set_outlet_extras(self, context, result)
        return result


class FeastTrainingDatasetOperator(_FeastOperator):
    """Point-in-time join of the label frames with a feature service -> immutable training snapshot.

    Returns ``{"path", "hash", "rows": {"train", "validation"}, "split": {...}, "window": {...},
    "feature_service", "label"}``; the snapshot format is documented in ``runtime/features/snapshot.py``.

    :param labels_dir: directory of label partitions (``ModelPaths.labels``). Templated.
    :param snapshot_root: where snapshots go (``ModelPaths.snapshots``). Templated.
    :param validation_days: the N days before the evaluation days form the validation split.
    :param evaluation_days: the last N days form the ``evaluation`` split the gate scores challenger and
        champion on (after every train / validation row); 0 (default): no evaluation split.
    :param end: ISO timestamp; label rows at or after it are excluded. Templated.
    :param max_rows: keep a deterministic (hash-based) sample of at most this many rows.
    :param aws_conn_id: connection used when ``snapshot_root`` is an ``s3://`` URL.
    :param mlflow_run_id: when set, the snapshot is logged as an MLflow dataset input of this run
        (source = snapshot path, digest = its hash; idempotent). Templated.
    :param mlflow_conn_id: MLflow connection for ``mlflow_run_id``.
    """

    template_fields: Sequence[str] = (
        "repo_path", "feature_service", "labels_dir", "snapshot_root", "end", "mlflow_run_id",
    )
    ui_color = "#fdebd0"

    def __init__(
        self,
        *,
        repo_path: str,
        feature_service: str,
        labels_dir: str,
        label: str,
        snapshot_root: str,
        validation_days: int = 21,
        evaluation_days: int = 0,
        end: str | None = None,
        max_rows: int | None = None,
        feast_conn_id: str = FeastHook.default_conn_name,
        aws_conn_id: str | None = "aws_default",
        mlflow_run_id: str | None = None,
        mlflow_conn_id: str = "mlflow_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(repo_path=repo_path, feast_conn_id=feast_conn_id, **kwargs)
        self.aws_conn_id = aws_conn_id
        self.mlflow_run_id = mlflow_run_id
        self.mlflow_conn_id = mlflow_conn_id
        self.feature_service = feature_service
        self.labels_dir = labels_dir
        self.label_column = label  # BaseOperator.label is the task's display label
        self.snapshot_root = snapshot_root
        self.validation_days = validation_days
        self.evaluation_days = evaluation_days
        self.end = end
        self.max_rows = max_rows

    def execute(self, context: Context) -> dict[str, Any]:
        import tempfile

        from mlops_provider.runtime.features.dataset import build_training_dataset
        from mlops_provider.runtime.features.snapshot import add_evaluation_split, publish_snapshot
        from mlops_provider.runtime.io.objstore import is_s3

        objects = self._objects()

        remote_root = str(self.snapshot_root) if is_s3(self.snapshot_root) else None
        evaluation_days = int(self.evaluation_days or 0)
        with tempfile.TemporaryDirectory(prefix="mlops-snapshot-") as local_root:
            # an s3:// snapshot is built locally (same content hash), then published: data first, manifest last
            root = local_root if remote_root else self.snapshot_root
            result = build_training_dataset(
                self.feature_store,
                feature_service=self.feature_service,
                labels_dir=self.labels_dir,
                label=self.label_column,
                # with an evaluation split the joined frame is written to a scratch root first, then re-split
                snapshot_root=str(Path(local_root, "scratch")) if evaluation_days else root,
                validation_days=int(self.validation_days) + evaluation_days,
                end=self.end or None,
                max_rows=int(self.max_rows) if self.max_rows else None,
                objects=objects,
            )
            if evaluation_days:
                path, manifest = add_evaluation_split(result["path"], evaluation_days, root, store=objects)
                result.update({"path": path, "hash": manifest["hash"], "rows": manifest["rows"],
                               "split": manifest["split"], "window": manifest["window"]})
            if remote_root:
                result["path"], _ = publish_snapshot(result["path"], remote_root, store=objects)
        self.log.info("training snapshot %s rows=%s split=%s", result["path"], result["rows"], result["split"])
        if self.mlflow_run_id:
            result["mlflow_dataset"] = self.log_dataset_input(str(self.mlflow_run_id), result)
        return result

    def _objects(self) -> Any:
        """The object store of an ``s3://`` snapshot root (the connection is resolved at its first S3 use)."""
        from mlops_provider.operators import object_store

        return object_store(self.aws_conn_id)

    def log_dataset_input(self, run_id: str, result: dict[str, Any]) -> dict[str, Any]:
        """Record the snapshot as a dataset input of the MLflow run ``run_id`` (idempotent)."""
        from mlops_provider.hooks.mlflow import MLflowHook
        from mlops_provider.runtime.features.snapshot import log_snapshot_input, read_manifest

        manifest = read_manifest(result["path"], store=self._objects())
        info = log_snapshot_input(MLflowHook(mlflow_conn_id=self.mlflow_conn_id).get_client(), run_id,
                                  result["path"], manifest)
        self.log.info("logged snapshot as MLflow dataset input %s of run %s", info["name"], run_id)
        return info
