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

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator, Context

from mlops_provider.exceptions import ConfigError
from mlops_provider.links.mlflow import MLFLOW_RUN_URL_XCOM_KEY, MLflowRunLink
from mlops_provider.operators.training import (
    GPU_QUEUE,
    TrainingSpecOperator,
    _dag_and_run,
    _data_interval,
    force_retrain,
    training_spec,
)
from mlops_provider.search_space import (  # noqa: F401 - re-exported: the search's public names
    MAX_GRID_TRIALS,
    TRAINING_KEYS,
    apply_trial,
    best_trial,
    expand_search_space,
    search_digest,
    trial_spec,
)
from mlops_provider.specs import TrainingSpec, as_dict
from mlops_provider.tasks import TRAINING_METRICS

#: metric -> True when larger is better (the validation metrics of a binary training run)
METRICS = TRAINING_METRICS


# ---------------------------------------------------------------------------- helpers
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


# ---------------------------------------------------------------------------- operators
class HpoParentOperator(BaseOperator):
    """Open the MLflow parent run of a search (idempotent by content: model, snapshot, search, base training
    config; ``force_retrain`` adds the Airflow run id).

    ``training``: the TrainingSpec dict (``specs.as_dict``); ``search``: the expanded search's description
    (params, max_trials, metric, seed, n_trials, digest). Returns ``{"parent_run_id", "experiment_id", "key",
    "reused", "n_trials", "metric"}``.
    """

    template_fields: Sequence[str] = ("snapshot", "model_name", "training")
    operator_extra_links = (MLflowRunLink(),)
    ui_color = "#f7b267"

    def __init__(
        self,
        *,
        snapshot: str,
        model_name: str,
        training: dict[str, Any],
        search: dict[str, Any],
        force_retrain: bool = False,
        mlflow_conn_id: str = "mlflow_default",
        aws_conn_id: str | None = "aws_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.snapshot = snapshot
        self.model_name = model_name
        self.training = training
        self.search = search
        self.force_retrain = force_retrain
        self.mlflow_conn_id = mlflow_conn_id
        self.aws_conn_id = aws_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_provider.hooks.mlflow import MLflowHook
        from mlops_provider.operators import object_store
        from mlops_provider.runtime.training import hpo

        spec = training_spec(self.training, self.task_id)
        hook = MLflowHook(self.mlflow_conn_id)
        cfg = hook.configure()
        dag_id, run_id = _dag_and_run(context, self.dag_id)
        result = hpo.start_parent_run(
            self.snapshot, self.model_name, self.search, base=spec, tracking=cfg.public(), dag_id=dag_id,
            airflow_run_id=run_id, force_retrain=force_retrain(context, self.force_retrain),
            store=object_store(self.aws_conn_id),
        )
        url = hook.run_url(result["parent_run_id"], result["experiment_id"]) or f"runs:/{result['parent_run_id']}"
        context["ti"].xcom_push(key=MLFLOW_RUN_URL_XCOM_KEY, value=url)
        self.log.info("HPO parent run %s (%s, %d trials): %s", result["parent_run_id"],
                      "reused" if result["reused"] else "new", result["n_trials"], url)
        return result


class HpoTrialOperator(TrainingSpecOperator):
    """Train ONE trial in an MLflow child run of the search's parent run; log, do not register.

    Meant to be mapped: ``HpoTrialOperator.partial(task_id="hpo_trial", parent=parent.output,
    training=..., ...).expand(trial=expand_search_space(...))``; the trial's params override ``training``'s
    loop settings (:func:`~mlops_provider.search_space.trial_spec`). A retry reopens the same child run; a
    re-run of a finished trial returns its recorded result. Returns ``{"trial_id", "index", "params",
    "run_id", "parent_run_id", "model_uri", "metrics", "reused"}``.
    """

    template_fields: Sequence[str] = (*TrainingSpecOperator.template_fields, "parent", "trial")

    def __init__(self, *, parent: Any, trial: Any, sanity_check: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.parent = parent
        self.trial = trial
        self.sanity_check = sanity_check

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_provider.runtime.training import hpo

        parent = _as_dict(self.parent, "parent", self.task_id)
        trial = _as_dict(self.trial, "trial", self.task_id)
        base, _, tracking, on_run_start = self.prepare(context)
        spec = trial_spec(base, trial.get("params", {}))
        self.log.info("trial %s: %s", trial.get("trial_id"), trial.get("params"))
        result = hpo.run_trial(
            self.snapshot, self.model_name, spec, trial, parent_run_id=str(parent["parent_run_id"]),
            tracking=tracking, sanity_check=self.sanity_check, on_run_start=on_run_start, store=self.object_store(),
            checkpoint_root=self.checkpoint_root,
        )
        self.log.info("trial %s: %s (run %s%s)", result["trial_id"], result["metrics"], result["run_id"],
                      ", reused" if result["reused"] else "")
        return result


class HpoSelectBestOperator(BaseOperator):
    """Pick the best trial by the validation metric and register its model as the new version.

    ``metric``: one of ``task``'s training metrics (``tasks.training_metrics``). Returns TorchTrainOperator's
    dict shape: ``{"run_id", "model_version", "model_uri", "metrics", "tracking_uri", "reused"}`` plus
    ``"hpo": {...}``. Version tags: dag_id, run_id, data_interval, snapshot_path, snapshot_hash,
    feature_service, the task tags and ``hpo.*``. Idempotent: a re-run returns the version already
    registered for this parent run. Never moves an alias.
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
        metric: str,
        task: str,
        mlflow_conn_id: str = "mlflow_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.parent = parent
        self.trials = trials
        self.metric = metric
        self.task = task
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
        best = best_trial(trials, self.metric, self.task)
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
    training: TrainingSpec,
    mlflow_conn_id: str = "mlflow_default",
    aws_conn_id: str | None = "aws_default",
    checkpoint_root: str | None = None,
    queue: str = GPU_QUEUE,
    pool: str | None = None,
    task_prefix: str = "",
    retries: int | None = None,
    retry_delay: timedelta | None = None,
) -> SearchTasks:
    """Add ``hpo_parent >> hpo_trial (mapped) >> select_best`` to a DAG or TaskGroup for ``training.search``.

    Every trial starts from ``training`` (its loop settings overridden by the trial's params); the space
    (``search.params`` / ``max_trials`` / ``seed``, default ``training.seed``) is expanded here, at parse time
    (cheap, deterministic); ``search.metric`` (default the task's primary metric) selects the best trial.
    """
    search = training.search
    if search is None:
        raise ConfigError("add_search_tasks: training.search is not set.")
    metric = training.search_metric
    sample_seed = int(training.seed if search.seed is None else search.seed)
    trials = expand_search_space(search.params, search.max_trials, sample_seed)
    described = {"params": {k: list(v) for k, v in search.params.items()}, "max_trials": search.max_trials,
                 "metric": metric, "seed": sample_seed, "n_trials": len(trials),
                 "digest": search_digest(search.params, search.max_trials, sample_seed, metric)}
    trial_kwargs: dict[str, Any] = {}
    if pool:
        trial_kwargs["pool"] = pool
    if retries is not None:  # a lost worker's trial is retried and resumes from its checkpoint
        trial_kwargs["retries"] = retries
    if retry_delay is not None:
        trial_kwargs["retry_delay"] = retry_delay
    if search.max_active_trials:
        trial_kwargs["max_active_tis_per_dagrun"] = search.max_active_trials
    spec = as_dict(training)
    with dag_or_group:
        parent = HpoParentOperator(
            task_id=f"{task_prefix}hpo_parent", snapshot=snapshot, model_name=model_name, training=spec,
            search=described, mlflow_conn_id=mlflow_conn_id, aws_conn_id=aws_conn_id,
        )
        mapped = HpoTrialOperator.partial(
            task_id=f"{task_prefix}hpo_trial", snapshot=snapshot, model_name=model_name, parent=parent.output,
            training=spec, mlflow_conn_id=mlflow_conn_id, aws_conn_id=aws_conn_id, checkpoint_root=checkpoint_root,
            queue=queue, **trial_kwargs,
        ).expand(trial=trials)
        select = HpoSelectBestOperator(
            task_id=f"{task_prefix}select_best", model_name=model_name, parent=parent.output,
            trials=mapped.output, metric=metric, task=training.task, mlflow_conn_id=mlflow_conn_id,
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
    "trial_spec",
]
