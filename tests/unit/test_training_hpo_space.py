"""Search-space expansion, trial settings, best-trial choice and the DAG wiring of the HPO tasks."""

from __future__ import annotations

import itertools

import pytest

from mlops_provider.exceptions import ConfigError, TrainingError
from mlops_provider.operators.hpo import (
    add_search_tasks,
    apply_trial,
    best_trial,
    expand_search_space,
    search_digest,
)

SPACE = {"learning_rate": [0.001, 0.003], "hidden": [[64, 32], [128, 64]]}
BASE = {"architecture": {"hidden": [32, 16], "dropout": 0.1}, "epochs": 3, "batch_size": 256,
        "learning_rate": 0.002, "seed": 7, "patience": 2}


def test_small_grid_is_expanded_fully_in_product_order():
    trials = expand_search_space(SPACE, max_trials=4)
    assert [t["params"] for t in trials] == [
        {"architecture.hidden": h, "learning_rate": lr}
        for h, lr in itertools.product([[64, 32], [128, 64]], [0.001, 0.003])
    ]
    assert [t["index"] for t in trials] == [0, 1, 2, 3]
    assert len({t["trial_id"] for t in trials}) == 4
    assert all(t["trial_id"].startswith(f"trial-{i:03d}-") for i, t in enumerate(trials))


def test_expansion_is_deterministic_and_key_order_independent():
    a = expand_search_space(SPACE, max_trials=4, seed=1)
    b = expand_search_space(dict(reversed(list(SPACE.items()))), max_trials=4, seed=99)  # seed unused: full grid
    assert a == b


def test_grid_larger_than_max_trials_is_a_seeded_sample_in_grid_order():
    space = {"learning_rate": [1e-4, 3e-4, 1e-3, 3e-3], "dropout": [0.0, 0.1, 0.2], "batch_size": [128, 256, 512]}
    full = expand_search_space(space, max_trials=36)
    assert len(full) == 36
    s1 = expand_search_space(space, max_trials=5, seed=3)
    s2 = expand_search_space(space, max_trials=5, seed=3)
    s3 = expand_search_space(space, max_trials=5, seed=4)
    assert s1 == s2 and len(s1) == 5
    assert [t["params"] for t in s1] != [t["params"] for t in s3]
    grid_ids = [t["grid_index"] for t in s1]
    assert grid_ids == sorted(grid_ids) and len(set(grid_ids)) == 5
    by_grid = {t["grid_index"]: t["params"] for t in full}
    assert all(by_grid[t["grid_index"]] == t["params"] for t in s1)


def test_huge_grid_does_not_materialise():
    space = {f"p{i}": list(range(10)) for i in range(12)}  # 10**12 combinations
    space = {("architecture." + k): v for k, v in space.items()}
    trials = expand_search_space(space, max_trials=3, seed=0)
    assert len(trials) == 3 and all(len(t["params"]) == 12 for t in trials)


@pytest.mark.parametrize("bad", [
    {},
    {"learning_rate": []},
    {"learning_rate": 0.001},
    {"learning_rate": "0.001"},
    {"optimizer.momentum": [0.9]},
    {"hidden": [[64]], "architecture.hidden": [[32]]},
])
def test_bad_spaces_raise_config_error(bad):
    with pytest.raises(ConfigError):
        expand_search_space(bad, max_trials=4)


def test_bad_max_trials():
    with pytest.raises(ConfigError):
        expand_search_space(SPACE, max_trials=0)


def test_apply_trial_overrides_training_and_architecture_keys():
    trial = expand_search_space(SPACE, max_trials=4)[3]
    settings = apply_trial(BASE, trial["params"])
    assert settings["learning_rate"] == 0.003
    assert settings["architecture"] == {"hidden": [128, 64], "dropout": 0.1}
    assert settings["epochs"] == 3 and BASE["architecture"]["hidden"] == [32, 16]  # base untouched


def test_apply_trial_puts_entry_point_arguments_under_kwargs():
    base = {**BASE, "architecture": {"entry_point": "my_nets:build", "kwargs": {"width": 8}}}
    settings = apply_trial(base, {"architecture.width": 32, "learning_rate": 0.01})
    assert settings["architecture"] == {"entry_point": "my_nets:build", "kwargs": {"width": 32}}
    assert base["architecture"]["kwargs"] == {"width": 8}


def test_best_trial_by_metric_direction_and_ties():
    trials = [
        {"trial_id": "a", "index": 0, "metrics": {"roc_auc": 0.70, "log_loss": 0.50}},
        {"trial_id": "b", "index": 1, "metrics": {"roc_auc": 0.72, "log_loss": 0.55}},
        {"trial_id": "c", "index": 2, "metrics": {"roc_auc": 0.72, "log_loss": 0.45}},
        {"trial_id": "d", "index": 3, "metrics": {"roc_auc": float("nan"), "log_loss": float("nan")}},
    ]
    assert best_trial(trials, "roc_auc")["trial_id"] == "b"  # tie with c: lowest index
    assert best_trial(trials, "log_loss")["trial_id"] == "c"
    with pytest.raises(TrainingError):
        best_trial(trials[3:], "roc_auc")
    with pytest.raises(ConfigError, match="not one of the binary training metrics"):
        best_trial(trials, "accuracy")
    regression = [{"trial_id": "a", "index": 0, "metrics": {"rmse": 9.0}},
                  {"trial_id": "b", "index": 1, "metrics": {"rmse": 7.5}}]
    assert best_trial(regression, "rmse", "regression")["trial_id"] == "b"  # lower is better


def test_search_digest_changes_with_the_space():
    assert search_digest(SPACE, 4, 0, "roc_auc") == search_digest(dict(SPACE), 4, 0, "roc_auc")
    assert search_digest(SPACE, 4, 0, "roc_auc") != search_digest(SPACE, 3, 0, "roc_auc")


def test_add_search_tasks_builds_a_mapped_trial_task():
    from airflow.sdk import DAG

    from mlops_provider.specs import TrainingSpec, as_dict

    spec = TrainingSpec.parse({**BASE, "label": "y", "features": {"categorical": ["a"], "numeric": ["b"]},
                               "search": {"params": {**SPACE, "dropout": [0.0, 0.2]}, "max_trials": 3,
                                          "metric": "log_loss", "max_active_trials": 2}})
    with DAG("hpo_wiring", schedule=None) as dag:
        tasks = add_search_tasks(dag, snapshot="/tmp/snap", model_name="m", training=spec, queue="gpu", pool="gpu")
    assert tasks.n_trials == 3
    assert set(dag.task_dict) == {"hpo_parent", "hpo_trial", "select_best"}
    mapped = dag.task_dict["hpo_trial"]
    assert type(mapped).__name__ == "MappedOperator"
    assert len(mapped.expand_input.value["trial"]) == 3
    assert mapped.queue == "gpu" and mapped.pool == "gpu"
    assert mapped.max_active_tis_per_dagrun == 2
    assert dag.task_dict["select_best"].upstream_task_ids == {"hpo_parent", "hpo_trial"}
    assert dag.task_dict["select_best"].trigger_rule == "all_done_min_one_success"  # one failed trial loses nothing else
    assert tasks.last.metric == "log_loss" and tasks.last.task == "binary"
    # every task holds the training spec as one templated dict
    assert dag.task_dict["hpo_parent"].training == as_dict(spec)
    assert mapped.partial_kwargs["training"] == as_dict(spec)


def test_trial_spec_applies_a_trial_to_the_training_spec():
    from mlops_provider.search_space import trial_spec
    from mlops_provider.specs import TrainingSpec

    spec = TrainingSpec.parse({**BASE, "label": "y", "features": {"numeric": ["b"]}})
    trial = expand_search_space(SPACE, max_trials=4)[3]
    t = trial_spec(spec, trial["params"])
    assert t.learning_rate == 0.003 and t.architecture == {"hidden": [128, 64], "dropout": 0.1}
    assert t.epochs == spec.epochs and t.label == "y" and spec.learning_rate == 0.002
