"""training_dataset with evaluation_days: a real Feast point-in-time join, then the gate's frozen split."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest_features import FEATURE_REPO, FEATURE_SERVICE, make_features_home

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def features_home(tmp_path_factory):
    yield from make_features_home(tmp_path_factory)


def test_training_dataset_writes_an_evaluation_split_after_training_rows(features_home):
    from mlops_provider.operators.feast import FeastApplyOperator, FeastTrainingDatasetOperator
    from mlops_provider.runtime.features.snapshot import load_snapshot, training_window
    from mlops_provider.runtime.training.data import split_frames
    from mlops_provider.specs import TrainingSpec

    paths = features_home["paths"]
    FeastApplyOperator(task_id="apply", repo_path=str(FEATURE_REPO)).execute(context={})
    kwargs = dict(
        task_id="training_dataset",
        repo_path=str(FEATURE_REPO),
        feature_service=FEATURE_SERVICE,
        labels_dir=str(paths.labels),
        label="arr_delayed",
        snapshot_root=str(paths.snapshots),
        validation_days=7,
        evaluation_days=5,
        max_rows=3000,
    )
    first = FeastTrainingDatasetOperator(**kwargs).execute(context={})
    second = FeastTrainingDatasetOperator(**kwargs).execute(context={})
    assert first["path"] == second["path"] and first["hash"] == second["hash"]  # idempotent, immutable
    assert [p.name for p in paths.snapshots.iterdir()] == [first["hash"]]  # no scratch copy left behind
    assert set(first["rows"]) == {"train", "validation", "evaluation"} and sum(first["rows"].values()) == 3000
    df, manifest = load_snapshot(first["path"])
    ev = df[df["split"] == "evaluation"]["event_timestamp"]
    seen = df[df["split"] != "evaluation"]["event_timestamp"]
    assert seen.max() < ev.min() and manifest["split"]["evaluation_days"] == 5
    _, end, inclusive = training_window(manifest)
    assert not inclusive and seen.max() < end <= ev.min()
    assert (ev.max() - ev.min()) <= pd.Timedelta(days=5)  # [last event - 5 days, last event]
    # training reads only train / validation
    spec = TrainingSpec.parse(label="arr_delayed", features={"categorical": ["origin", "carrier"], "numeric": ["temp"]})
    train_df, val_df, _ = split_frames(df, spec, first["path"])
    assert len(train_df) + len(val_df) == first["rows"]["train"] + first["rows"]["validation"]
