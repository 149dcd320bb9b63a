"""Training data: the snapshot frame and its train / validation splits (runtime module).

The snapshot itself (content-addressed directory, manifest, hash check) belongs to the features
area (:mod:`mlops_provider.runtime.features.snapshot`); this module only checks that a snapshot
can train the configured model (feature and label columns, labels that fit the task: :mod:`.heads`,
non-empty splits, both classes in a binary validation split) and cuts it into the splits the loop uses.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from mlops_provider.exceptions import TrainingError
from mlops_provider.runtime.training.heads import Head
from mlops_provider.specs import TrainingSpec

TRAIN_SPLIT = "train"
VALIDATION_SPLIT = "validation"


def load_snapshot_frame(path: str, *, store: Any = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``(DataFrame, manifest)`` of a snapshot directory or ``s3://`` prefix (features area's reader; verifies
    the hash). ``store``: the :class:`~mlops_provider.runtime.io.objstore.ObjectStore` of the task's ``aws``
    connection (None: the process default)."""
    from mlops_provider.runtime.features.snapshot import load_snapshot

    return load_snapshot(path, store=store)


def check_frame(df: pd.DataFrame, categorical: list[str], numeric: list[str], label: str, where: str) -> None:
    """Named :class:`TrainingError` unless ``df`` has the feature, label and split columns (the label's values
    are the task head's business: :meth:`~.heads.Head.fit` / :meth:`~.heads.Head.encode`)."""
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


def split_frames(df: pd.DataFrame, spec: TrainingSpec, where: str) -> tuple[pd.DataFrame, pd.DataFrame, Head]:
    """``(train, validation, head)`` of a snapshot frame: columns checked, the task's head fitted on the train
    labels and both splits' labels validated (:class:`~mlops_provider.exceptions.LabelError`); named errors
    for an empty split or (binary) a validation split with a single class."""
    check_frame(df, spec.features.categorical, spec.features.numeric, spec.label, where)
    train_df = df[df["split"] == TRAIN_SPLIT].reset_index(drop=True)
    val_df = df[df["split"] == VALIDATION_SPLIT].reset_index(drop=True)
    if train_df.empty or val_df.empty:
        raise TrainingError(
            f"snapshot {where} has {len(train_df)} train and {len(val_df)} validation rows; both splits must be "
            "non-empty. Widen the training window in the YAML."
        )
    head = Head.fit(spec, train_df[spec.label], where)
    for split, frame in ((TRAIN_SPLIT, train_df), (VALIDATION_SPLIT, val_df)):  # named errors before any run
        head.encode(frame[spec.label], where, split)
    if spec.task == "binary" and val_df[spec.label].nunique() < 2:
        raise TrainingError(
            f"snapshot {where}: the validation split holds a single class, so ROC AUC is undefined. "
            "Widen the validation window."
        )
    return train_df, val_df, head


__all__ = ["check_frame", "load_snapshot_frame", "split_frames"]
