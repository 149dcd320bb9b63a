"""Hyperparameter search the Airflow way: a parent run, mapped trials, select the best (light module).

    hpo_parent  ->  hpo_trial[0..n-1]  (dynamic task mapping, queue ``gpu``)  ->  select_best

- ``hpo_parent`` (:class:`HpoParentOperator`) opens (or finds, by key) the MLflow parent run;
- ``hpo_trial`` (:class:`HpoTrialOperator`, ``.partial(...).expand(trial=trials)``) trains one
  trial config in an MLflow CHILD run (tag ``mlflow.parentRunId``) and logs its model WITHOUT
  registering it;
- ``select_best`` (:class:`HpoSelectBestOperator`) picks the best trial by the validation metric
  and registers that trial's logged model as the new version; it returns the dict shape of
  :class:`~mlops_provider.operators.training.TorchTrainOperator`, so the gate consumes it unchanged.

The search space is expanded at DAG-parse time by :func:`expand_search_space` (pure stdlib,
deterministic): the grid in sorted-key order, capped by ``max_trials`` with a seeded sample
when the grid is larger. :func:`add_search_tasks` wires the three tasks into a DAG / TaskGroup.

torch / mlflow / pandas are imported inside ``execute()`` through ``mlops_provider.runtime.training.hpo``.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow.sdk import BaseOperator, Context

from mlops_provider.exceptions import ConfigError, TrainingError
from mlops_provider.links.mlflow import MLFLOW_RUN_URL_XCOM_KEY, MLflowRunLink
from mlops_provider.operators.training import GpuRoutedOperator
from mlops_provider.tasks import TRAINING_METRICS

#: search keys that override training settings; any other key is an architecture key
TRAINING_KEYS = ("learning_rate", "batch_size", "epochs", "patience", "seed")
#: metric -> True when larger is better (the validation metrics of a training run)
METRICS = TRAINING_METRICS
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


def best_trial(trials: Sequence[Mapping[str, Any]], metric: str) -> dict[str, Any]:
    """The best finished trial result by ``metric`` (ties: the lowest trial index)."""
    if metric not in METRICS:
        raise ConfigError(f"search metric {metric!r} is not one of {sorted(METRICS)}.")
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
    sign = -1.0 if METRICS[metric] else 1.0
    return dict(min(scored, key=lambda s: (sign * s[0], s[1]))[2])


# ---------------------------------------------------------------------------- helpers
def _dag_and_run(context: Context, default_dag_id: str) -> tuple[str, str]:
    dag = context.get("dag")
    dag_id = dag.dag_id if dag is not None else default_dag_id
    dag_run = context.get("dag_run")
    run_id = dag_run.run_id if dag_run is not None else str(context.get("run_id", "manual"))
    return dag_id, run_id


def _data_interval(context: Context) -> str:
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is None and end is None:
        return "none"
    return f"{start.isoformat() if start else 'none'}/{end.isoformat() if end else 'none'}"


def _as_dict(value: Any, what: str, task_id: str) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            return parsed
    raise ConfigError(f"{task_id}: {what} must be a dict (the upstream task's XCom), got {value!r:.200}.")


def _feature_lists(features: Mapping[str, Sequence[str]], task_id: str) -> tuple[list[str], list[str]]:
    unknown = set(features) - {"categorical", "numeric"}
    if unknown:
        raise ConfigError(f"{task_id}: features has unknown keys {sorted(unknown)}; use 'categorical' and 'numeric'.")
    categorical, numeric = list(features.get("categorical", [])), list(features.get("numeric", []))
    if not categorical and not numeric:
        raise ConfigError(f"{task_id}: features lists no columns (model.features in the YAML).")
    return categorical, numeric


# ---------------------------------------------------------------------------- operators
class HpoParentOperator(BaseOperator):
    """Open the MLflow parent run of a search (idempotent: keyed by dag_id, run_id, snapshot, search).

    Returns ``{"parent_run_id", "experiment_id", "key", "reused", "n_trials", "metric"}``.
    """

    template_fields: Sequence[str] = ("snapshot", "model_name")
    operator_extra_links = (MLflowRunLink(),)
    ui_color = "#f7b267"

    def __init__(
        self,
        *,
        snapshot: str,
        model_name: str,
        search: dict[str, Any],
        base_config: dict[str, Any] | None = None,
        mlflow_conn_id: str = "mlflow_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.snapshot = snapshot
        self.model_name = model_name
        self.search = search
        self.base_config = base_config or {}
        self.mlflow_conn_id = mlflow_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_provider.hooks.mlflow import MLflowHook
        from mlops_provider.runtime.training import hpo

        hook = MLflowHook(self.mlflow_conn_id)
        cfg = hook.configure()
        dag_id, run_id = _dag_and_run(context, self.dag_id)
        result = hpo.start_parent_run(
            self.snapshot, self.model_name, self.search, base_config=self.base_config,
            tracking=cfg.public(), dag_id=dag_id, airflow_run_id=run_id,
        )
        url = hook.run_url(result["parent_run_id"], result["experiment_id"]) or f"runs:/{result['parent_run_id']}"
        context["ti"].xcom_push(key=MLFLOW_RUN_URL_XCOM_KEY, value=url)
        self.log.info("HPO parent run %s (%s, %d trials): %s", result["parent_run_id"],
                      "reused" if result["reused"] else "new", result["n_trials"], url)
        return result


class HpoTrialOperator(GpuRoutedOperator):
    """Train ONE trial in an MLflow child run of the search's parent run; log, do not register.

    Meant to be mapped: ``HpoTrialOperator.partial(task_id="hpo_trial", parent=parent.output,
    ...).expand(trial=expand_search_space(...))``. A retry reopens the same child run; a re-run
    of a finished trial returns its recorded result. Returns ``{"trial_id", "index", "params",
    "run_id", "parent_run_id", "model_uri", "metrics", "reused"}``.
    """

    template_fields: Sequence[str] = ("snapshot", "model_name", "parent", "trial")
    operator_extra_links = (MLflowRunLink(),)
    ui_color = "#ee4c2c"

    def __init__(
        self,
        *,
        snapshot: str,
        model_name: str,
        parent: Any,
        trial: Any,
        features: dict[str, list[str]],
        label: str,
        base_config: dict[str, Any],
        mlflow_conn_id: str = "mlflow_default",
        sanity_check: bool = True,
        queue: str = "gpu",
        pool: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(queue=queue, pool=pool, **kwargs)
        self.snapshot = snapshot
        self.model_name = model_name
        self.parent = parent
        self.trial = trial
        self.features = features
        self.label_column = label
        self.base_config = base_config
        self.mlflow_conn_id = mlflow_conn_id
        self.sanity_check = sanity_check

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_provider.hooks.mlflow import MLflowHook
        from mlops_provider.runtime.training import hpo

        parent = _as_dict(self.parent, "parent", self.task_id)
        trial = _as_dict(self.trial, "trial", self.task_id)
        categorical, numeric = _feature_lists(self.features, self.task_id)
        settings = apply_trial(self.base_config, trial.get("params", {}))
        self.log.info("trial %s: %s", trial.get("trial_id"), trial.get("params"))
        hook = MLflowHook(self.mlflow_conn_id)
        cfg = hook.configure()
        hook.wait_until_reachable()  # bounded retries, then MlflowUnreachableError
        ti = context["ti"]

        def on_run_start(mlflow_run_id: str, experiment_id: str | None) -> None:
            url = hook.run_url(mlflow_run_id, experiment_id) or f"runs:/{mlflow_run_id}"
            ti.xcom_push(key=MLFLOW_RUN_URL_XCOM_KEY, value=url)

        result = hpo.run_trial(
            self.snapshot, self.model_name, categorical, numeric, self.label_column, settings, trial,
            parent_run_id=str(parent["parent_run_id"]), tracking=cfg.public(),
            sanity_check=self.sanity_check, on_run_start=on_run_start,
        )
        self.log.info("trial %s: %s (run %s%s)", result["trial_id"], result["metrics"], result["run_id"],
                      ", reused" if result["reused"] else "")
        return result


class HpoSelectBestOperator(BaseOperator):
    """Pick the best trial by the validation metric and register its model as the new version.

    Returns TorchTrainOperator's dict shape: ``{"run_id", "model_version", "model_uri",
    "metrics", "tracking_uri", "reused"}`` plus ``"hpo": {...}``. Version tags: dag_id, run_id,
    data_interval, snapshot_path, snapshot_hash, feature_service and ``hpo.*``. Idempotent: a
    re-run returns the version already registered for this parent run. Never moves an alias.
    """

    template_fields: Sequence[str] = ("model_name", "parent", "trials")
    operator_extra_links = (MLflowRunLink(),)
    ui_color = "#f7b267"

    def __init__(
        self,
        *,
        model_name: str,
        parent: Any,
        trials: Any,
        metric: str = "roc_auc",
        mlflow_conn_id: str = "mlflow_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.parent = parent
        self.trials = trials
        self.metric = metric
        self.mlflow_conn_id = mlflow_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_provider.hooks.mlflow import MLflowHook
        from mlops_provider.runtime.training import hpo

        parent = _as_dict(self.parent, "parent", self.task_id)
        trials = [_as_dict(t, "each trial result", self.task_id) for t in list(self.trials or []) if t is not None]
        expected = int(parent.get("n_trials") or 0)
        if expected and len(trials) < expected:
            self.log.warning("%d of %d trials did not finish (see the failed hpo_trial map indexes); "
                             "selecting among the %d that did", expected - len(trials), expected, len(trials))
        best = best_trial(trials, self.metric)
        self.log.info("best of %d trials by %s: %s = %s", len(trials), self.metric, best["trial_id"],
                      best["metrics"][self.metric])
        hook = MLflowHook(self.mlflow_conn_id)
        cfg = hook.configure()
        dag_id, run_id = _dag_and_run(context, self.dag_id)
        result = hpo.register_best(
            trials, best, self.model_name, metric=self.metric, parent_run_id=str(parent["parent_run_id"]),
            tracking=cfg.public(), tags={"dag_id": dag_id, "run_id": run_id, "data_interval": _data_interval(context)},
        )
        url = hook.run_url(result["run_id"]) or f"runs:/{result['run_id']}"
        context["ti"].xcom_push(key=MLFLOW_RUN_URL_XCOM_KEY, value=url)
        self.log.info("%s v%s from trial %s: %s", self.model_name, result["model_version"], best["trial_id"],
                      result["metrics"])
        return result


# ---------------------------------------------------------------------------- wiring
@dataclass(frozen=True)
class SearchTasks:
    """The tasks :func:`add_search_tasks` created: wire ``first`` after the dataset, ``last`` before the gate."""

    parent: HpoParentOperator
    trials: Any  # the MappedOperator of HpoTrialOperator
    select: HpoSelectBestOperator
    n_trials: int

    @property
    def first(self) -> HpoParentOperator:
        return self.parent

    @property
    def last(self) -> HpoSelectBestOperator:
        return self.select


def add_search_tasks(
    dag_or_group: Any,
    *,
    snapshot: str,
    model_name: str,
    features: dict[str, list[str]],
    label: str,
    base_config: dict[str, Any],
    params: dict[str, list[Any]],
    max_trials: int = 8,
    metric: str = "roc_auc",
    seed: int | None = None,
    max_active_trials: int | None = None,
    mlflow_conn_id: str = "mlflow_default",
    queue: str = "gpu",
    pool: str | None = None,
    task_prefix: str = "",
) -> SearchTasks:
    """Add ``hpo_parent >> hpo_trial (mapped) >> select_best`` to a DAG or TaskGroup.

    ``base_config``: the training settings every trial starts from (``architecture``, ``epochs``,
    ``batch_size``, ``learning_rate``, ``seed``, ``patience``); ``params``/``max_trials``/``seed``:
    the search space (seed defaults to ``base_config["seed"]``); ``metric``: ``roc_auc`` (max) or
    ``log_loss`` (min). The trials are expanded here, at parse time (cheap, deterministic).
    """
    if metric not in METRICS:
        raise ConfigError(f"training.search.metric must be one of {sorted(METRICS)}, got {metric!r}.")
    sample_seed = int(base_config.get("seed", 0) if seed is None else seed)
    trials = expand_search_space(params, max_trials, sample_seed)
    search = {"params": {k: list(v) for k, v in params.items()}, "max_trials": max_trials, "metric": metric,
              "seed": sample_seed, "n_trials": len(trials),
              "digest": search_digest(params, max_trials, sample_seed, metric)}
    trial_kwargs: dict[str, Any] = {}
    if pool:
        trial_kwargs["pool"] = pool
    if max_active_trials:
        trial_kwargs["max_active_tis_per_dagrun"] = max_active_trials
    with dag_or_group:
        parent = HpoParentOperator(
            task_id=f"{task_prefix}hpo_parent", snapshot=snapshot, model_name=model_name, search=search,
            base_config=base_config, mlflow_conn_id=mlflow_conn_id,
        )
        mapped = HpoTrialOperator.partial(
            task_id=f"{task_prefix}hpo_trial", snapshot=snapshot, model_name=model_name, parent=parent.output,
            features=features, label=label, base_config=base_config, mlflow_conn_id=mlflow_conn_id,
            queue=queue, **trial_kwargs,
        ).expand(trial=trials)
        select = HpoSelectBestOperator(
            task_id=f"{task_prefix}select_best", model_name=model_name, parent=parent.output,
            trials=mapped.output, metric=metric, mlflow_conn_id=mlflow_conn_id,
            # a failed trial (e.g. one diverging learning rate) must not throw away the others
            trigger_rule="all_done_min_one_success",
        )
        parent >> mapped >> select
    return SearchTasks(parent=parent, trials=mapped, select=select, n_trials=len(trials))


__all__ = [
    "HpoParentOperator",
    "HpoSelectBestOperator",
    "HpoTrialOperator",
    "SearchTasks",
    "add_search_tasks",
    "apply_trial",
    "best_trial",
    "expand_search_space",
    "search_digest",
]
