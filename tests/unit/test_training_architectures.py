"""Unit tests of the architecture registry, user entry points, checkpoints, git tags and MLflow reachability."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))

from mlops_provider.exceptions import ModelRegistryError, TrainingError  # noqa: E402
from mlops_provider.runtime.training.architectures import (  # noqa: E402
    ARCHITECTURES,
    TabularMLP,
    TabularNet,
    build_network,
    normalize_architecture,
    tabular_inputs,
)

CARD = [4, 5]
N_NUM = 3


def _inputs(n: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(n, N_NUM), torch.randint(0, 4, (n, 2))


@pytest.mark.parametrize("spec", [
    {"name": "mlp", "hidden": [8, 4], "dropout": 0.0},
    {"hidden": [8]},  # legacy block without a name = mlp
    {"name": "resmlp", "width": 8, "blocks": 2},
    {"name": "linear"},
    {"entry_point": "training_user_nets:two_layer", "hidden": 6},
    {"entry_point": "training_user_nets:two_layer", "kwargs": {"hidden": 6}},
])
def test_every_architecture_maps_a_batch_to_one_logit_per_row(spec):
    net = build_network(spec, N_NUM, CARD)
    out = net(*_inputs())
    assert out.shape == (7,) and torch.isfinite(out).all()
    out.sum().backward()  # trainable end to end
    assert any(p.grad is not None for p in net.parameters())


def test_builtins_and_entry_points_normalise_to_recordable_json():
    assert set(ARCHITECTURES) >= {"mlp", "resmlp", "linear"}
    assert normalize_architecture({"name": "resmlp"}) == {"name": "resmlp", "width": 64, "blocks": 2,
                                                          "dropout": 0.1}
    ep = normalize_architecture({"entry_point": "training_user_nets:two_layer", "hidden": 6})
    assert ep == {"entry_point": "training_user_nets:two_layer", "kwargs": {"hidden": 6}}
    assert normalize_architecture(ep) == ep  # idempotent: what the model config records rebuilds the same net
    assert isinstance(build_network(None, N_NUM, CARD), TabularMLP)  # old model configs still load
    net = build_network(ep, N_NUM, CARD)
    assert isinstance(net, TabularNet) and net.n_inputs == tabular_inputs(N_NUM, CARD)


def test_unknown_architecture_names_the_builtins():
    with pytest.raises(TrainingError, match=r"unknown architecture 'transformer'.*\['linear', 'mlp', 'resmlp'\]"):
        build_network({"name": "transformer"}, N_NUM, CARD)
    with pytest.raises(TrainingError, match="unknown architecture keys"):
        normalize_architecture({"name": "linear", "hidden": [3]})
    with pytest.raises(TrainingError, match="dropout"):
        normalize_architecture({"name": "resmlp", "dropout": 1.5})


@pytest.mark.parametrize(("entry_point", "match"), [
    ("no_such_module_xyz:build", r"cannot import module 'no_such_module_xyz'.*PYTHONPATH"),
    ("training_user_nets:missing", r"has no attribute 'missing'"),
    ("training_user_nets", r"must look like 'package.module:function'"),
    ("training_user_nets:not_a_module", r"returned dict, not a torch.nn.Module"),
])
def test_bad_entry_points_raise_a_named_error_with_the_fix(entry_point, match):
    with pytest.raises(TrainingError, match=match):
        build_network({"entry_point": entry_point}, N_NUM, CARD)


def test_an_entry_point_that_raises_is_reported_with_its_arguments():
    with pytest.raises(TrainingError, match=r"training_user_nets:broken\(n_inputs.*raised RuntimeError: cannot build "
                                            r"with hidden=3.*kwargs \{'hidden': 3\}") as info:
        build_network({"entry_point": "training_user_nets:broken", "hidden": 3}, N_NUM, CARD)
    assert isinstance(info.value.__cause__, RuntimeError)


def test_checkpoint_store_is_atomic_and_survives_garbage(tmp_path):
    from mlops_provider.runtime.training.checkpoint import CheckpointStore, checkpoint_dir

    assert checkpoint_dir("m", "k", tmp_path) == tmp_path.resolve() / "checkpoints" / "m" / "k"
    store = CheckpointStore(tmp_path / "ck")
    assert store.load() is None
    net = nn.Linear(3, 1)
    store.save({"epoch": 2, "model": net.state_dict(), "rng": {"numpy": np.random.get_state()}})
    state = store.load()
    assert state is not None and state["epoch"] == 2
    assert torch.equal(state["model"]["weight"], net.state_dict()["weight"])
    assert [p.name for p in (tmp_path / "ck").iterdir()] == ["checkpoint.pt"]  # no temp file left
    store.path.write_bytes(b"torn")
    assert store.load() is None  # corrupt -> start over, never crash
    store.clear()
    assert not (tmp_path / "ck").exists()


def test_async_checkpoint_snapshots_the_state_when_queued_and_surfaces_write_errors(tmp_path):
    from mlops_provider.runtime.training.checkpoint import CheckpointStore

    store = CheckpointStore(tmp_path / "ck")
    net = nn.Linear(3, 1)
    opt = torch.optim.Adam(net.parameters())
    net(torch.ones(2, 3)).sum().backward()
    opt.step()
    queued_w = net.weight.detach().clone()
    queued_m = opt.state_dict()["state"][0]["exp_avg"].clone()
    store.save_async({"epoch": 1, "model": net.state_dict(), "optimizer": opt.state_dict(), "history": [{"a": 1.0}]})
    with torch.no_grad():  # the next steps mutate parameters and optimizer moments in place
        net.weight.add_(5.0)
    opt.state_dict()["state"][0]["exp_avg"].add_(7.0)
    store.wait()
    state = store.load()
    assert state is not None and state["epoch"] == 1
    assert torch.equal(state["model"]["weight"], queued_w)  # what was queued, not what happened after
    assert torch.equal(state["optimizer"]["state"][0]["exp_avg"], queued_m)
    store.save_async({"epoch": 2, "model": net.state_dict()})
    store.close()
    assert store.load()["epoch"] == 2

    (tmp_path / "blocker").write_text("a file where the checkpoint directory should be")
    bad = CheckpointStore(tmp_path / "blocker" / "ck")
    bad.save_async({"epoch": 1})
    with pytest.raises(OSError):
        bad.wait()  # the background write error reaches the training thread
    bad.close()


def test_binary_metrics_match_scikit_learn_with_ties():
    from sklearn.metrics import log_loss, roc_auc_score

    from mlops_provider.runtime.metrics import binary_metrics

    rng = np.random.default_rng(0)
    for n in (2, 17, 1000, 5000):
        y = np.r_[0, 1, rng.integers(0, 2, n - 2)]
        p = np.round(rng.random(n), 2)  # many ties
        got = binary_metrics(y, p)
        assert got["roc_auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
        assert got["log_loss"] == pytest.approx(log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1]), abs=1e-12)
    one_class = binary_metrics(np.zeros(5), np.full(5, 0.2))
    assert np.isnan(one_class["roc_auc"]) and one_class["log_loss"] == pytest.approx(-np.log(0.8))


def test_git_tags_are_best_effort(tmp_path):
    import subprocess

    from mlops_provider.runtime.training.tracking import git_tags

    assert git_tags(tmp_path, str(tmp_path / "dag.py")) == {}  # not a repo: no tags, no error
    repo = tmp_path / "repo"
    repo.mkdir()
    dag = repo / "dag.py"
    dag.write_text("x = 1\n")
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([*git, "add", "dag.py"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "dag"], cwd=repo, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    tags = git_tags(repo, str(dag))
    assert tags["mlops.git.project_commit"] == head and tags["mlops.git.dag_commit"] == head
    assert tags["mlops.git.project_dirty"] == "false" and tags["mlops.git.dag_dirty"] == "false"
    dag.write_text("x = 2\n")
    assert git_tags(repo, str(dag))["mlops.git.dag_dirty"] == "true"


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_unreachable_mlflow_server_is_retried_with_backoff_then_named(monkeypatch):
    from mlops_provider.hooks import mlflow as hook_mod

    sleeps: list[float] = []
    monkeypatch.setattr(hook_mod.time, "sleep", sleeps.append)
    uri = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(hook_mod.MlflowUnreachableError, match=rf"{uri} is not reachable after 4 attempts") as info:
        hook_mod.check_reachable(uri, attempts=4, backoff_s=0.05, timeout_s=1)
    assert isinstance(info.value, ModelRegistryError)
    assert sleeps == [0.05, 0.1, 0.2]  # exponential backoff, bounded
    assert hook_mod.check_reachable("sqlite:///x.db") == 0  # local stores are not probed


def test_reachability_recovers_when_the_server_comes_back():
    from mlops_provider.hooks.mlflow import check_reachable

    calls = []

    def flaky() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("refused")

    assert check_reachable("http://mlflow:5000", attempts=5, backoff_s=0.01, probe=flaky) == 3
