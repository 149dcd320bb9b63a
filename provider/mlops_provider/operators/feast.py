"""Feature operators: offline partitions, ``feast apply``, materialization, training snapshot.

Parse-safe: only the standard library and ``airflow.sdk`` at module level; Feast, pandas and the
runtime helpers (``mlops_provider.runtime.feast_ops``) are imported inside ``execute()``.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator, Context

from mlops_provider.hooks.feast import FeastHook


def as_path_list(value: Any) -> list[str]:
    """Normalise a rendered ``list[str] | str`` of paths.

    Accepts a list, a JSON / Python list literal (what Jinja renders a list to), a comma-separated
    string, or one path. Directories expand to the ``*.parquet`` files in them (sorted).
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
        p = Path(str(item)).expanduser()
        if p.is_dir():
            out.extend(str(f) for f in sorted(p.glob("*.parquet")) if not f.name.startswith("."))
        else:
            out.append(str(p))
    return out


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


class OfflinePartitionOperator(BaseOperator):
    """Run the model's feature pipeline ``transform(landed_files, lake_dir) -> dict`` and return its dict.

    :param transform: ``"path/to/file.py:function"`` or ``"package.module:function"``.
    :param landed_files: paths of the landed files (list, or a rendered string; directories expand
        to their ``*.parquet`` files). Templated.
    :param lake_dir: the model's lake directory (``ModelPaths.lake``). Templated.
    """

    template_fields: Sequence[str] = ("transform", "landed_files", "lake_dir")
    ui_color = "#c6e2ff"

    def __init__(self, *, transform: str, landed_files: list[str] | str, lake_dir: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.transform = transform
        self.landed_files = landed_files
        self.lake_dir = lake_dir

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_provider.exceptions import DataValidationError
        from mlops_provider.runtime.feast_ops import load_callable

        files = as_path_list(self.landed_files)
        if not files:
            raise DataValidationError(
                f"no landed files to process (landed_files={self.landed_files!r}); check the landing asset event"
            )
        fn = load_callable(self.transform)
        self.log.info("running %s on %d file(s) into %s", self.transform, len(files), self.lake_dir)
        result = fn(files, self.lake_dir)
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
        from mlops_provider.runtime.feast_ops import apply_repo

        result = apply_repo(self.hook.get_store(self.repo_path))
        self.log.info("feast apply: changed=%s\n%s", result["changed"], result["diff"] or "(no changes)")
        return result


class FeastMaterializeOperator(_FeastOperator):
    """Materialize ``[start, end)`` of the (given or all online) feature views into the online store.

    Returns ``{"feature_views": [...], "window": {"start", "end"}, "rows": {view: entities written}}``
    and puts the same dict on the task's outlet asset events (``extra``).
    """

    template_fields: Sequence[str] = ("repo_path", "start", "end", "feature_views")
    ui_color = "#d5f5e3"

    def __init__(
        self,
        *,
        repo_path: str,
        start: str,
        end: str,
        feature_views: list[str] | None = None,
        feast_conn_id: str = FeastHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(repo_path=repo_path, feast_conn_id=feast_conn_id, **kwargs)
        self.start = start
        self.end = end
        self.feature_views = feature_views

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_provider.runtime.feast_ops import materialize

        views = as_path_list(self.feature_views) if isinstance(self.feature_views, str) else self.feature_views
        result = materialize(self.hook.get_store(self.repo_path), self.start, self.end, views or None)
        self.log.info("materialized %s", result)
        _set_outlet_extras(self, context, result)
        return result


class FeastTrainingDatasetOperator(_FeastOperator):
    """Point-in-time join of the label frames with a feature service -> immutable training snapshot.

    Returns ``{"path", "hash", "rows": {"train", "validation"}, "split": {...}, "window": {...},
    "feature_service", "label"}``; the snapshot format is documented in ``runtime/snapshot.py``.

    :param labels_dir: directory of label partitions (``ModelPaths.labels``). Templated.
    :param snapshot_root: where snapshots go (``ModelPaths.snapshots``). Templated.
    :param validation_days: the last N days of the window form the validation split.
    :param end: ISO timestamp; label rows at or after it are excluded. Templated.
    :param max_rows: keep a deterministic (hash-based) sample of at most this many rows.
    """

    template_fields: Sequence[str] = ("repo_path", "feature_service", "labels_dir", "snapshot_root", "end")
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
        end: str | None = None,
        max_rows: int | None = None,
        feast_conn_id: str = FeastHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(repo_path=repo_path, feast_conn_id=feast_conn_id, **kwargs)
        self.feature_service = feature_service
        self.labels_dir = labels_dir
        self.label_column = label  # BaseOperator.label is the task's display label
        self.snapshot_root = snapshot_root
        self.validation_days = validation_days
        self.end = end
        self.max_rows = max_rows

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_provider.runtime.feast_ops import build_training_dataset

        result = build_training_dataset(
            self.hook.get_store(self.repo_path),
            feature_service=self.feature_service,
            labels_dir=self.labels_dir,
            label=self.label_column,
            snapshot_root=self.snapshot_root,
            validation_days=int(self.validation_days),
            end=self.end or None,
            max_rows=int(self.max_rows) if self.max_rows else None,
        )
        self.log.info("training snapshot %s rows=%s split=%s", result["path"], result["rows"], result["split"])
        return result
