"""Tabular network architectures: a registry of built-ins plus user entry points (runtime module).

The YAML ``training.architecture`` block selects one of:

``{"name": "mlp", "hidden": [64, 32], "dropout": 0.1}``
    the default (also what a block without ``name`` means, for backward compatibility);
``{"name": "resmlp", "width": 64, "blocks": 2, "dropout": 0.1}``
    pre-norm residual MLP blocks (LayerNorm -> Linear -> ReLU -> Dropout -> Linear, + skip);
``{"name": "linear"}``
    logistic regression over the standardised numerics and the categorical embeddings;
``{"entry_point": "my_pkg.nets:build", **kwargs}``
    a user function returning an ``nn.Module`` that maps a float tensor ``[batch, n_inputs]`` to
    ``[batch, n_outputs]`` (or ``[batch]`` when ``n_outputs`` is 1). It is called as
    ``build(n_inputs, **kwargs)`` plus, for each of these parameters its signature names, the provider's
    value: ``n_outputs`` (1 binary, k multiclass, 1 + len(quantiles) regression), ``task``,
    ``n_numeric``, ``cardinalities`` (embedding table sizes, index 0 = unseen). Example (any task)::

        def build(n_inputs: int, n_outputs: int, hidden: int = 32) -> nn.Module:
            return nn.Sequential(nn.Linear(n_inputs, hidden), nn.ReLU(), nn.Linear(hidden, n_outputs))

    with ``architecture: {entry_point: my_pkg.nets:build, hidden: 64}`` in the YAML
    (``tests/unit/training_user_nets.py:any_task`` is this example, tested for every task). A function
    without an ``n_outputs`` parameter must return the right width itself (checked before training).

Every network takes ``(x_num, x_cat)``: the provider embeds the categoricals (one table per
column, :func:`embedding_dim` wide, index 0 = unseen) and concatenates them with the numerics,
so ``n_inputs = n_numeric + sum(embedding dims)``; a user body only sees that dense vector.

The normalised block is stored in the model's ``model_config`` artifact and the MLflow pyfunc
rebuilds the network from it at load time. For an entry point this means **the user module must
be importable wherever the model is loaded** (Airflow workers, the gate, the serving image): ship
it as an installed package or on ``PYTHONPATH``. Errors raise :class:`TrainingError` naming the fix.
"""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from mlops_provider.exceptions import TrainingError
from mlops_provider.specs import ARCHITECTURE_DEFAULTS

DEFAULT_ARCHITECTURE: dict[str, Any] = {"name": "mlp", **ARCHITECTURE_DEFAULTS["mlp"]}
#: what a user entry point may ask for by naming the parameter (besides n_inputs and its YAML kwargs)
PROVIDED_ARGUMENTS = ("n_outputs", "task", "n_numeric", "cardinalities")


def embedding_dim(cardinality: int) -> int:
    return int(min(16, max(2, round(1.6 * cardinality**0.56))))


def _dropout(value: Any, where: str) -> float:
    try:
        d = float(value)
    except (TypeError, ValueError) as e:
        raise TrainingError(f"architecture {where}: dropout {value!r} is not a number.") from e
    if not 0.0 <= d < 1.0:
        raise TrainingError(f"architecture {where}: dropout must satisfy 0 <= dropout < 1, got {d}.")
    return d


def _positive_int(value: Any, what: str, where: str) -> int:
    try:
        v = int(value)
    except (TypeError, ValueError) as e:
        raise TrainingError(f"architecture {where}: {what} {value!r} is not an integer.") from e
    if v <= 0 or (not isinstance(value, str) and v != value):
        raise TrainingError(f"architecture {where}: {what} must be a positive integer, got {value!r}.")
    return v


# ---------------------------------------------------------------------------- building blocks
class TabularMLP(nn.Module):
    """Embeddings for categoricals, concatenated with numerics, then an MLP to one logit.

    Kept as its own class (state dict keys ``embeddings.*`` / ``mlp.*``) so models registered
    before the registry existed still load.
    """

    def __init__(
        self, n_numeric: int, cardinalities: list[int], hidden: list[int], dropout: float, n_outputs: int = 1
    ) -> None:
        super().__init__()
        dims = [embedding_dim(c) for c in cardinalities]
        self.embeddings = nn.ModuleList([nn.Embedding(c, d) for c, d in zip(cardinalities, dims, strict=True)])
        width = n_numeric + sum(dims)
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, n_outputs))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        parts = [x_num] + [emb(x_cat[:, j]) for j, emb in enumerate(self.embeddings)]
        out = self.mlp(torch.cat(parts, dim=1))
        return out.squeeze(-1) if out.shape[-1] == 1 else out


class TabularNet(nn.Module):
    """Categorical embeddings + numerics -> ``body`` (dense ``[batch, n_inputs]`` -> logits)."""

    def __init__(self, n_numeric: int, cardinalities: list[int], body: nn.Module) -> None:
        super().__init__()
        dims = [embedding_dim(c) for c in cardinalities]
        self.embeddings = nn.ModuleList([nn.Embedding(c, d) for c, d in zip(cardinalities, dims, strict=True)])
        self.n_inputs = n_numeric + sum(dims)
        self.body = body

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        parts = [x_num] + [emb(x_cat[:, j]) for j, emb in enumerate(self.embeddings)]
        out = self.body(torch.cat(parts, dim=1))
        return out.squeeze(-1) if out.dim() == 2 and out.shape[-1] == 1 else out


def tabular_inputs(n_numeric: int, cardinalities: list[int]) -> int:
    """Width of the dense vector a body receives."""
    return n_numeric + sum(embedding_dim(c) for c in cardinalities)


class ResidualBlock(nn.Module):
    def __init__(self, width: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(self.drop(torch.relu(self.fc1(self.norm(x)))))


def resmlp_body(n_inputs: int, width: int, blocks: int, dropout: float, n_outputs: int = 1) -> nn.Module:
    return nn.Sequential(
        nn.Linear(n_inputs, width),
        *[ResidualBlock(width, dropout) for _ in range(blocks)],
        nn.LayerNorm(width),
        nn.ReLU(),
        nn.Linear(width, n_outputs),
    )


# ---------------------------------------------------------------------------- registry
def _norm_mlp(spec: dict[str, Any]) -> dict[str, Any]:
    defaults = ARCHITECTURE_DEFAULTS["mlp"]
    hidden_raw = spec.get("hidden", defaults["hidden"])
    if not isinstance(hidden_raw, list | tuple):
        raise TrainingError(f"architecture mlp: hidden must be a list of layer widths, got {hidden_raw!r}.")
    hidden = [_positive_int(h, "hidden size", "mlp") for h in hidden_raw]
    return {"name": "mlp", "hidden": hidden, "dropout": _dropout(spec.get("dropout", defaults["dropout"]), "mlp")}


def _build_mlp(spec: dict[str, Any], n_numeric: int, cardinalities: list[int], n_outputs: int) -> nn.Module:
    return TabularMLP(n_numeric, cardinalities, spec["hidden"], spec["dropout"], n_outputs)


def _norm_resmlp(spec: dict[str, Any]) -> dict[str, Any]:
    defaults = ARCHITECTURE_DEFAULTS["resmlp"]
    return {
        "name": "resmlp",
        "width": _positive_int(spec.get("width", defaults["width"]), "width", "resmlp"),
        "blocks": _positive_int(spec.get("blocks", defaults["blocks"]), "blocks", "resmlp"),
        "dropout": _dropout(spec.get("dropout", defaults["dropout"]), "resmlp"),
    }


def _build_resmlp(spec: dict[str, Any], n_numeric: int, cardinalities: list[int], n_outputs: int) -> nn.Module:
    n_inputs = tabular_inputs(n_numeric, cardinalities)
    body = resmlp_body(n_inputs, spec["width"], spec["blocks"], spec["dropout"], n_outputs)
    return TabularNet(n_numeric, cardinalities, body)


def _norm_linear(spec: dict[str, Any]) -> dict[str, Any]:
    return {"name": "linear"}


def _build_linear(spec: dict[str, Any], n_numeric: int, cardinalities: list[int], n_outputs: int) -> nn.Module:
    return TabularNet(n_numeric, cardinalities, nn.Linear(tabular_inputs(n_numeric, cardinalities), n_outputs))


Normalizer = Callable[[dict[str, Any]], dict[str, Any]]
Builder = Callable[[dict[str, Any], int, list[int], int], nn.Module]

#: name -> (allowed keys, normaliser, builder)
ARCHITECTURES: dict[str, tuple[frozenset[str], Normalizer, Builder]] = {
    "mlp": (frozenset({"hidden", "dropout"}), _norm_mlp, _build_mlp),
    "resmlp": (frozenset({"width", "blocks", "dropout"}), _norm_resmlp, _build_resmlp),
    "linear": (frozenset(), _norm_linear, _build_linear),
}


def _parse_entry_point(entry_point: Any) -> tuple[str, str]:
    if not isinstance(entry_point, str) or entry_point.count(":") != 1:
        raise TrainingError(
            f"architecture entry_point {entry_point!r} must look like 'package.module:function' (one colon)."
        )
    module, func = entry_point.split(":")
    if not module or not func or not all(p.isidentifier() for p in [*module.split("."), *func.split(".")]):
        raise TrainingError(
            f"architecture entry_point {entry_point!r} must look like 'package.module:function' "
            "(Python identifiers separated by dots)."
        )
    return module, func


def normalize_architecture(arch: dict[str, Any] | None) -> dict[str, Any]:
    """Validate an architecture block and fill its defaults; raises :class:`TrainingError`.

    Built-ins normalise to ``{"name": ..., <their settings>}``; entry points to
    ``{"entry_point": "m:f", "kwargs": {...}}`` (the kwargs must be JSON-serialisable: they are
    recorded in the run's config and in the model's ``model_config``).
    """
    spec = dict(arch or {})
    if "entry_point" in spec:
        entry_point = spec.pop("entry_point")
        if "name" in spec:
            raise TrainingError("architecture: give either 'name' (a built-in) or 'entry_point', not both.")
        _parse_entry_point(entry_point)
        kwargs = spec.pop("kwargs", None)
        if kwargs is not None and spec:
            raise TrainingError("architecture: pass entry point arguments either under 'kwargs' or inline, not both.")
        kwargs = dict(kwargs if kwargs is not None else spec)
        try:
            kwargs = json.loads(json.dumps(kwargs, sort_keys=True))
        except (TypeError, ValueError) as e:
            raise TrainingError(f"architecture {entry_point}: arguments must be JSON values ({e}).") from e
        return {"entry_point": entry_point, "kwargs": kwargs}
    name = spec.pop("name", "mlp")
    if name not in ARCHITECTURES:
        raise TrainingError(
            f"unknown architecture {name!r}; built-ins are {sorted(ARCHITECTURES)}. Fix training.architecture.name "
            "in the YAML, or use {'entry_point': 'module:function', ...} for your own network."
        )
    allowed, normalise, _ = ARCHITECTURES[name]
    unknown = set(spec) - allowed
    if unknown:
        raise TrainingError(
            f"unknown architecture keys {sorted(unknown)} for {name!r}; allowed: {sorted(allowed) or 'none'}."
        )
    return normalise(spec)


def resolve_entry_point(entry_point: str) -> Callable[..., Any]:
    """Import ``module:function``; :class:`TrainingError` with the fix when it cannot."""
    module_name, func_name = _parse_entry_point(entry_point)
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # ImportError, or the module itself failing at import
        raise TrainingError(
            f"architecture entry point {entry_point!r}: cannot import module {module_name!r} "
            f"({type(e).__name__}: {e}). Install the package that provides it on the worker (and wherever the "
            "model is loaded: gate, serving image) or put it on PYTHONPATH."
        ) from e
    obj: Any = module
    for part in func_name.split("."):
        if not hasattr(obj, part):
            raise TrainingError(
                f"architecture entry point {entry_point!r}: module {module_name!r} has no attribute {func_name!r}. "
                "Fix the function name in training.architecture.entry_point."
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise TrainingError(f"architecture entry point {entry_point!r} is not callable.")
    return obj  # type: ignore[no-any-return]


def _provided(func: Callable[..., Any], values: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The provider's arguments the entry point names explicitly (not through **kwargs), unless YAML sets them."""
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return {}
    return {k: v for k, v in values.items() if k in params and k not in kwargs
            and params[k].kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}


def build_network(
    arch: dict[str, Any] | None, n_numeric: int, cardinalities: list[int], n_outputs: int = 1, task: str = "binary"
) -> nn.Module:
    """The network of a (possibly not yet normalised) architecture block, with ``n_outputs`` outputs."""
    spec = normalize_architecture(arch)
    cardinalities = list(cardinalities)
    if "entry_point" not in spec:
        return ARCHITECTURES[spec["name"]][2](spec, n_numeric, cardinalities, n_outputs)
    entry_point, kwargs = spec["entry_point"], spec["kwargs"]
    func = resolve_entry_point(entry_point)
    n_inputs = tabular_inputs(n_numeric, cardinalities)
    provided = _provided(func, {"n_outputs": n_outputs, "task": task, "n_numeric": n_numeric,
                                "cardinalities": cardinalities}, kwargs)
    try:
        body = func(n_inputs, **provided, **kwargs)
    except TrainingError:
        raise
    except Exception as e:
        try:
            sig = str(inspect.signature(func))
        except (TypeError, ValueError):
            sig = "(...)"
        raise TrainingError(
            f"architecture entry point {entry_point}{sig} raised {type(e).__name__}: {e} when called with "
            f"n_inputs={n_inputs}, {provided} and kwargs {kwargs}. Fix the function or its arguments in "
            "training.architecture."
        ) from e
    if not isinstance(body, nn.Module):
        raise TrainingError(
            f"architecture entry point {entry_point!r} returned {type(body).__name__}, not a torch.nn.Module."
        )
    return TabularNet(n_numeric, cardinalities, body)
