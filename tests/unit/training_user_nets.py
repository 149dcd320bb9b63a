"""User entry points for the architecture tests (importable as ``training_user_nets``)."""

from __future__ import annotations

import os
import time

import torch
from torch import nn


def two_layer(n_inputs: int, hidden: int = 8) -> nn.Module:
    """A valid user network: [batch, n_inputs] -> [batch, 1] logits."""
    return nn.Sequential(nn.Linear(n_inputs, hidden), nn.ReLU(), nn.Linear(hidden, 1))


def broken(n_inputs: int, hidden: int = 8) -> nn.Module:
    raise RuntimeError(f"cannot build with hidden={hidden}")


def not_a_module(n_inputs: int) -> object:
    return {"n_inputs": n_inputs}


class _NaNNet(nn.Module):
    def __init__(self, n_inputs: int) -> None:
        super().__init__()
        self.lin = nn.Linear(n_inputs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) * float("nan")


def nan_net(n_inputs: int) -> nn.Module:
    """Produces NaN logits: training must stop with a named error."""
    return _NaNNet(n_inputs)


class _SlowWhenAsked(nn.Module):
    """An MLP whose forward sleeps (training mode) once $MLOPS_TEST_SLEEP_AFTER_STEPS steps are done.

    Lets a test SIGKILL a worker in the middle of an epoch; without the variable it is a plain MLP.
    """

    def __init__(self, n_inputs: int, hidden: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_inputs, hidden), nn.ReLU(), nn.Dropout(0.1), nn.Linear(hidden, 1))
        self.steps = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        limit = os.environ.get("MLOPS_TEST_SLEEP_AFTER_STEPS")
        if self.training:
            self.steps += 1
            if limit is not None and self.steps > int(limit):
                marker = os.environ.get("MLOPS_TEST_SLEEP_MARKER")
                if marker:
                    open(marker, "w").close()
                time.sleep(600)
        return self.body(x)


def slow_mlp(n_inputs: int, hidden: int = 16) -> nn.Module:
    return _SlowWhenAsked(n_inputs, hidden)


def any_task(n_inputs: int, n_outputs: int, hidden: int = 32) -> nn.Module:
    """The documented example (runtime/training/architectures.py): a network for any task. The provider passes
    ``n_outputs`` because the signature names it (1 binary, k multiclass, 1 + quantiles regression)."""
    return nn.Sequential(nn.Linear(n_inputs, hidden), nn.ReLU(), nn.Linear(hidden, n_outputs))


def with_context(n_inputs: int, n_outputs: int, task: str, cardinalities: list[int], width: int = 8) -> nn.Module:
    """Asks for every provided argument; records them on the module for the test."""
    net = nn.Sequential(nn.Linear(n_inputs, width), nn.ReLU(), nn.Linear(width, n_outputs))
    net.seen = {"n_outputs": n_outputs, "task": task, "cardinalities": list(cardinalities)}  # type: ignore[assignment]
    return net
