"""The hyperparameter search space (light module: stdlib only): shared by the config validation at parse
time and the HPO operators, so a search that validates is exactly the one that runs."""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

from mlops_provider.exceptions import ConfigError, TrainingError

#: search keys that override training settings; any other key is an architecture key
TRAINING_KEYS = ("learning_rate", "batch_size", "epochs", "patience", "seed")
MAX_GRID_TRIALS = 1000


# ---------------------------------------------------------------------------- search space
def _canonical_key(key: str) -> str:
    key = str(key).strip()
    if key in TRAINING_KEYS or key.startswith("architecture."):
        return key
    if "." in key:
        raise ConfigError(
            f"search parameter {key!r}: use a training setting ({', '.join(TRAINING_KEYS)}), an architecture "
            "key (e.g. hidden, dropout) or 'architecture.<key>'."
        )
    return f"architecture.{key}"


def search_digest(params: Mapping[str, Sequence[Any]], max_trials: int, seed: int, metric: str) -> str:
    """Stable hash of a search definition (part of the parent run's idempotency key)."""
    body = {"params": {k: list(v) for k, v in params.items()}, "max_trials": max_trials, "seed": seed,
            "metric": metric}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def expand_search_space(
    params: Mapping[str, Sequence[Any]], max_trials: int, seed: int = 0
) -> list[dict[str, Any]]:
    """Deterministic trial configs of a discrete search space.

    ``params`` maps a key to its candidate values (``{"learning_rate": [1e-3, 3e-3],
    "hidden": [[64, 32], [128, 64]]}``). Keys are canonicalised (architecture keys get the
    ``architecture.`` prefix) and sorted; the grid is their cartesian product (last key varies
    fastest). With at most ``max_trials`` combinations every one is a trial; otherwise a
    ``random.Random(seed)`` sample of ``max_trials`` grid indices, kept in grid order.

    Returns ``[{"trial_id", "index", "grid_index", "params"}]``; ``trial_id`` embeds a hash of the
    params, so a trial keeps its id (and its MLflow run) across DAG runs of the same search.
    """
    if not isinstance(params, Mapping) or not params:
        raise ConfigError("training.search.params must map at least one parameter to a list of values.")
    if not isinstance(max_trials, int) or isinstance(max_trials, bool) or max_trials < 1:
        raise ConfigError(f"training.search.max_trials must be an integer >= 1, got {max_trials!r}.")
    if max_trials > MAX_GRID_TRIALS:
        raise ConfigError(f"training.search.max_trials={max_trials} exceeds {MAX_GRID_TRIALS} mapped tasks.")
    space: dict[str, list[Any]] = {}
    for raw_key, values in params.items():
        key = _canonical_key(raw_key)
        if key in space:
            raise ConfigError(f"search parameter {raw_key!r} is given twice (as {key!r}).")
        if isinstance(values, str | bytes) or not isinstance(values, Sequence) or len(values) == 0:
            raise ConfigError(
                f"search parameter {raw_key!r}: expected a non-empty list of candidate values, got {values!r}. "
                "Write e.g. learning_rate: [0.001, 0.003]."
            )
        try:
            json.dumps(list(values))
        except TypeError as e:
            raise ConfigError(f"search parameter {raw_key!r}: values must be JSON-serialisable ({e}).") from e
        space[key] = list(values)
    keys = sorted(space)
    sizes = [len(space[k]) for k in keys]
    total = math.prod(sizes)
    if total <= max_trials:
        indices: Sequence[int] = range(total)
    else:
        indices = sorted(random.Random(seed).sample(range(total), max_trials))
    trials = []
    for n, grid_index in enumerate(indices):
        combo: dict[str, Any] = {}
        rest = grid_index
        for key, size in zip(reversed(keys), reversed(sizes), strict=True):
            rest, j = divmod(rest, size)
            combo[key] = space[key][j]
        ordered = {k: combo[k] for k in keys}
        digest = hashlib.sha256(json.dumps(ordered, sort_keys=True).encode()).hexdigest()[:8]
        trials.append({"trial_id": f"trial-{n:03d}-{digest}", "index": n, "grid_index": grid_index,
                       "params": ordered})
    return trials


def apply_trial(base: Mapping[str, Any], trial_params: Mapping[str, Any]) -> dict[str, Any]:
    """Training settings of one trial: ``base`` (``architecture``, ``epochs``, ``batch_size``,
    ``learning_rate``, ``seed``, ``patience``) overridden by the trial's params."""
    out = {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in base.items()}
    arch = dict(out.get("architecture") or {})
    # an entry point taking its arguments under 'kwargs' gets the searched ones there too
    arch_args = arch.setdefault("kwargs", {}) if isinstance(arch.get("kwargs"), Mapping) else arch
    if arch_args is not arch:
        arch_args = arch["kwargs"] = dict(arch_args)
    for key, value in trial_params.items():
        if key.startswith("architecture."):
            arch_args[key[len("architecture."):]] = value
        elif key in TRAINING_KEYS:
            out[key] = value
        else:
            raise ConfigError(f"trial parameter {key!r} is neither a training setting nor an architecture key.")
    out["architecture"] = arch
    return out


def trial_spec(spec: Any, trial_params: Mapping[str, Any]) -> Any:
    """The TrainingSpec of one trial: ``spec`` with :func:`apply_trial` applied to its loop settings."""
    return spec.replace(**apply_trial(spec.loop_config(), trial_params))


def best_trial(trials: Sequence[Mapping[str, Any]], metric: str, task: str = "binary") -> dict[str, Any]:
    """The best finished trial result by ``metric``, one of ``task``'s training metrics (ties: the lowest
    trial index)."""
    from mlops_provider.tasks import training_metrics

    metrics = training_metrics(task)
    if metric not in metrics:
        raise ConfigError(f"search metric {metric!r} is not one of the {task} training metrics {sorted(metrics)}.")
    scored = []
    for t in trials:
        value = (t.get("metrics") or {}).get(metric)
        if value is not None and isinstance(value, int | float) and math.isfinite(value):
            scored.append((float(value), int(t.get("index", 0)), t))
    if not scored:
        raise TrainingError(
            f"no hyperparameter trial produced a finite validation {metric} ({len(trials)} trial result(s)); "
            "check the hpo_trial task logs."
        )
    sign = -1.0 if metrics[metric] else 1.0
    return dict(min(scored, key=lambda s: (sign * s[0], s[1]))[2])
