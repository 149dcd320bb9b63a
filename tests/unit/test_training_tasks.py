"""Task types: the registry, label checks and heads, losses, calibration, per-task metrics and networks."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from mlops_provider import tasks  # noqa: E402
from mlops_provider.exceptions import LabelError  # noqa: E402
from mlops_provider.runtime import metrics  # noqa: E402
from mlops_provider.runtime.training import calibration  # noqa: E402
from mlops_provider.runtime.training.architectures import build_network  # noqa: E402
from mlops_provider.runtime.training.heads import Head  # noqa: E402
from mlops_provider.specs import TrainingSpec  # noqa: E402

FEATURES = {"categorical": ["c"], "numeric": ["x"]}


def spec(**kw) -> TrainingSpec:
    return TrainingSpec.parse({"label": "y", "features": FEATURES, **kw})


# ---------------------------------------------------------------------------- registry
def test_registry_names_the_contracts_metrics_primary_and_guards():
    assert tasks.TASKS == ("binary", "multiclass", "regression") and tasks.DEFAULT_TASK == "binary"
    assert (tasks.BINARY.primary, tasks.BINARY.guards) == ("roc_auc", ("log_loss", "brier", "ece"))
    assert (tasks.MULTICLASS.primary, tasks.MULTICLASS.guards) == ("log_loss", ("log_loss", "ece"))
    assert (tasks.REGRESSION.primary, tasks.REGRESSION.guards) == ("rmse", ("mae",))
    assert set(tasks.metric_directions("multiclass", ["a", "b", "c"])) == {
        "log_loss", "macro_f1", "accuracy", "top_k_accuracy", "ece", "recall_a", "recall_b", "recall_c"}
    assert tasks.metric_directions("regression", quantiles=[0.1, 0.9]) == {
        "rmse": False, "mae": False, "r2": True, "pinball_0.1": False, "pinball_0.9": False}
    assert tasks.higher_is_better("multiclass", "recall_x") and not tasks.higher_is_better("regression", "pinball_0.5")
    with pytest.raises(ValueError, match=r"'f1' is not a metric of task binary; valid: \['brier'"):
        tasks.check_metrics("binary", ["f1"], "floors")
    tasks.check_metrics("multiclass", ["recall_anything"], "floors")  # classes learned from data: any name
    with pytest.raises(ValueError, match="recall_z"):
        tasks.check_metrics("multiclass", ["recall_z"], "floors", classes=["a", "b", "c"])


def test_training_spec_task_settings_and_model_config():
    s = spec(task="regression", quantiles=[0.1, 0.5, 0.9], regression_loss="huber")
    assert s.search_metric == "rmse" and s.model_config()["quantiles"] == [0.1, 0.5, 0.9]
    assert spec().model_config() != spec(calibration="none").model_config()  # part of the content key
    assert spec().model_config() == spec(queue="other", system_metrics_interval=None).model_config()
    for bad, match in (({"task": "multiclass", "classes": [1, 1, 2]}, "repeated"),
                       ({"task": "regression", "quantiles": [0.5, 1.0]}, "ascending in|in \\(0, 1\\)"),
                       ({"regression_loss": "huber"}, "only a regression task"),
                       ({"task": "regression", "calibration": "platt"}, "no probabilities")):
        with pytest.raises(Exception, match=match):
            spec(**bad)


# ---------------------------------------------------------------------------- labels and heads
def test_binary_labels_are_0_1_or_bool_else_a_named_error():
    head = Head.fit(spec(), pd.Series([0, 1, 1, 0]), "snap")
    np.testing.assert_array_equal(head.encode(pd.Series([True, False]), "snap", "train"), [1.0, 0.0])
    np.testing.assert_array_equal(head.encode(pd.Series([0.0, 1.0]), "snap", "train"), [0.0, 1.0])
    with pytest.raises(LabelError, match=r"must be 0/1 or bool for task binary; found \[2\].*task: multiclass"):
        Head.fit(spec(), pd.Series([0, 1, 2]), "snap")
    with pytest.raises(LabelError, match="1 missing value"):
        Head.fit(spec(), pd.Series([0, None, 1]), "snap")


def test_multiclass_classes_are_declared_or_learned_and_need_three():
    head = Head.fit(spec(task="multiclass"), pd.Series(["b", "a", "c", "a"]), "snap")
    assert head.classes == ["a", "b", "c"] and head.n_outputs == 3
    np.testing.assert_array_equal(head.encode(pd.Series(["c", "a"]), "snap", "validation"), [2, 0])
    ints = Head.fit(spec(task="multiclass"), pd.Series([3, 1, 2, 2]), "snap")
    assert ints.classes == [1, 2, 3] and isinstance(ints.classes[0], int)  # ints stay ints
    np.testing.assert_array_equal(ints.encode(pd.Series([2.0, 3.0]), "snap", "train"), [1, 2])
    declared = Head.fit(spec(task="multiclass", classes=["lo", "mid", "hi"]), pd.Series(["lo", "hi"]), "snap")
    assert declared.classes == ["lo", "mid", "hi"]
    with pytest.raises(LabelError, match=r"values \['top'\] outside the classes \['lo', 'mid', 'hi'\]"):
        declared.encode(pd.Series(["lo", "top"]), "snap", "validation")
    with pytest.raises(LabelError, match="has 2 class.*use training.task: binary"):
        Head.fit(spec(task="multiclass"), pd.Series(["a", "b", "a"]), "snap")


def test_regression_labels_must_be_finite_and_are_standardised():
    head = Head.fit(spec(task="regression", quantiles=[0.1, 0.9]), pd.Series([10.0, 20.0, 30.0]), "snap")
    assert head.target_mean == 20.0 and head.n_outputs == 3
    z = head.encode(pd.Series([10.0, 30.0]), "snap", "train")
    np.testing.assert_allclose(z * head.target_std + head.target_mean, [10.0, 30.0], rtol=1e-6)
    with pytest.raises(LabelError, match=r"finite numbers for task regression; 2 row\(s\)"):
        head.encode(pd.Series([1.0, np.inf, "x"]), "snap", "validation")
    out = head.outputs(np.array([[0.0, 1.0, -1.0]]))  # crossing quantiles are rearranged
    assert out.shape == (1, 3) and out[0, 0] == 20.0 and out[0, 1] < out[0, 2]
    assert Head.fit(spec(task="regression"), pd.Series([1.0, 2.0]), "s").outputs(np.array([0.0, 1.0])).ndim == 1


def test_losses_per_task():
    y = torch.tensor([0.5, -1.0])
    out = torch.tensor([[0.5, 0.0, 1.0], [-1.0, -2.0, 0.0]])
    loss = Head(task="regression", quantiles=[0.1, 0.9]).loss_fn()
    # a perfect point: only the pinball of the quantile columns remains
    pin = np.mean([max(q * d, (q - 1) * d) for q, d in ((0.1, 0.5), (0.9, -0.5), (0.1, 1.0), (0.9, -1.0))])
    assert float(loss(out, y)) == pytest.approx(pin)
    huber = Head(task="regression", loss="huber").loss_fn()
    assert float(huber(torch.tensor([3.0]), torch.tensor([0.0]))) == pytest.approx(2.5)  # delta 1: linear tail
    assert isinstance(Head(task="multiclass", classes=[0, 1, 2]).loss_fn(), torch.nn.CrossEntropyLoss)


def test_head_round_trips_and_tags_the_version():
    head = Head(task="multiclass", label="y", classes=["a", "b", "c"],
                calibration={"method": "temperature", "params": {"temperature": 1.7}})
    assert Head.from_dict(head.to_dict()) == head
    assert head.tags() == {"mlops.task": "multiclass", "mlops.label": "y", "mlops.classes": '["a", "b", "c"]',
                           "mlops.calibration": '{"method": "temperature", "params": {"temperature": 1.7}}'}
    assert Head.from_dict(None) == Head()  # a model logged before task types: binary, uncalibrated
    assert "mlops.quantiles" in Head(task="regression", quantiles=[0.5]).tags()


# ---------------------------------------------------------------------------- calibration
def test_calibration_is_kept_only_when_it_improves_out_of_sample():
    rng = np.random.default_rng(0)
    z = rng.normal(scale=2.0, size=4000)
    y = (rng.random(4000) < 1 / (1 + np.exp(-z / 3.0))).astype(float)  # the network is 3x overconfident
    rec = calibration.fit_calibration("binary", z * 1.0, y, method="auto", seed=0)
    assert rec["method"] in ("platt", "temperature") and rec["cv_log_loss"][rec["method"]] < rec["cv_log_loss"]["none"]
    assert rec["log_loss_after"] < rec["log_loss_before"] and rec["ece_after"] < rec["ece_before"]
    p = calibration.apply("binary", z, rec)
    assert abs(float(np.mean(p)) - float(np.mean(y))) < 0.02
    honest = (rng.random(4000) < 1 / (1 + np.exp(-z))).astype(float)  # already calibrated: nothing kept, or ~1
    rec = calibration.fit_calibration("binary", z, honest, method="temperature", seed=0)
    assert rec["method"] == "none" or abs(rec["params"]["temperature"] - 1.0) < 0.1
    small = calibration.fit_calibration("binary", z[:50], y[:50], method="auto", seed=0)
    assert small["method"] == "none" and "validation rows" in small["reason"]
    assert calibration.fit_calibration("binary", z, y, method="none", seed=0)["method"] == "none"


def test_multiclass_temperature_keeps_the_argmax():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3000, 4)) * 3
    y = np.array([rng.choice(4, p=np.exp(r / 3) / np.exp(r / 3).sum()) for r in logits])
    rec = calibration.fit_calibration("multiclass", logits, y, method="auto", seed=0)
    assert rec["method"] == "temperature" and rec["params"]["temperature"] == pytest.approx(3.0, rel=0.2)
    p = calibration.apply("multiclass", logits, rec)
    assert (p.argmax(axis=1) == logits.argmax(axis=1)).all() and np.allclose(p.sum(axis=1), 1.0)


# ---------------------------------------------------------------------------- metrics
def test_multiclass_and_regression_metrics_match_scikit_learn():
    from sklearn.metrics import (
        f1_score,
        log_loss,
        mean_absolute_error,
        mean_pinball_loss,
        r2_score,
        recall_score,
        top_k_accuracy_score,
    )

    rng = np.random.default_rng(2)
    y = rng.integers(0, 4, 600)
    p = rng.dirichlet(np.ones(4), 600)
    p[np.arange(600), y] += 0.5
    p /= p.sum(axis=1, keepdims=True)
    m = metrics.multiclass_metrics(y, p, ["a", "b", "c", "d"])
    assert m["log_loss"] == pytest.approx(log_loss(y, p))
    assert m["macro_f1"] == pytest.approx(f1_score(y, p.argmax(axis=1), average="macro"))
    assert m["accuracy"] == pytest.approx(float(np.mean(p.argmax(axis=1) == y)))
    assert m["top_k_accuracy"] == pytest.approx(top_k_accuracy_score(y, p, k=2))
    assert m["recall_c"] == pytest.approx(recall_score(y, p.argmax(axis=1), average=None)[2])
    assert 0 <= m["ece"] <= 1
    yr = rng.normal(size=500)
    pred = np.c_[yr + rng.normal(scale=0.5, size=500), yr - 0.6, yr + 0.6]
    r = metrics.regression_metrics(yr, pred, [0.1, 0.9])
    assert r["mae"] == pytest.approx(mean_absolute_error(yr, pred[:, 0]))
    assert r["r2"] == pytest.approx(r2_score(yr, pred[:, 0]))
    assert r["rmse"] == pytest.approx(float(np.sqrt(np.mean((yr - pred[:, 0]) ** 2))))
    assert r["pinball_0.9"] == pytest.approx(mean_pinball_loss(yr, pred[:, 2], alpha=0.9))
    assert set(metrics.task_metrics("regression", yr, pred, quantiles=[0.1, 0.9])) == set(
        tasks.metric_directions("regression", quantiles=[0.1, 0.9]))


def test_bootstrap_gives_paired_standard_errors_for_the_power_statement():
    rng = np.random.default_rng(3)
    y = rng.normal(size=800)
    a, b = y + rng.normal(scale=0.5, size=800), y + rng.normal(scale=0.5, size=800)
    ci = metrics.bootstrap_intervals(y, {"challenger": a, "champion": b}, samples=100, confidence=0.95, seed=0,
                                     metrics=metrics.metrics_fn("regression"))
    assert ci["delta_se"]["rmse"] > 0 and ci["delta"]["rmse"][0] < ci["delta"]["rmse"][1]
    assert ci["se"]["challenger"]["rmse"] > 0
    assert metrics.detectable_difference(1.0, confidence=0.95, power=0.8) == pytest.approx(2.8016, abs=1e-3)


# ---------------------------------------------------------------------------- networks
@pytest.mark.parametrize("arch", [{"name": "mlp", "hidden": [8]}, {"name": "resmlp", "width": 8, "blocks": 1},
                                  {"name": "linear"}, {"entry_point": "training_user_nets:any_task", "hidden": 6}])
@pytest.mark.parametrize("n_outputs", [1, 3])
def test_every_architecture_serves_every_task_width(arch, n_outputs):
    net = build_network(arch, 2, [4], n_outputs)
    out = net(torch.randn(5, 2), torch.randint(0, 4, (5, 1)))
    assert out.shape == ((5,) if n_outputs == 1 else (5, n_outputs))


def test_an_entry_point_gets_the_arguments_its_signature_names():
    net = build_network({"entry_point": "training_user_nets:with_context", "width": 4}, 2, [4, 3], 5, "multiclass")
    assert net.body.seen == {"n_outputs": 5, "task": "multiclass", "cardinalities": [4, 3]}
    legacy = build_network({"entry_point": "training_user_nets:two_layer"}, 2, [4], 3)  # knows no n_outputs
    assert legacy(torch.randn(2, 2), torch.zeros(2, 1, dtype=torch.int64)).shape == (2,)  # caught by sanity check


def test_split_frames_checks_every_split_against_the_declared_classes():
    from mlops_provider.runtime.training.data import split_frames

    df = pd.DataFrame({"c": ["a"] * 6, "x": np.arange(6.0), "y": ["lo", "mid", "hi", "top", "lo", "mid"],
                       "split": ["train"] * 4 + ["validation"] * 2})
    with pytest.raises(LabelError, match=r"train split of snap has values \['top'\] outside the classes"):
        split_frames(df, spec(task="multiclass", classes=["lo", "mid", "hi"]), "snap")
    _, _, head = split_frames(df, spec(task="multiclass"), "snap")
    assert head.classes == ["hi", "lo", "mid", "top"]
