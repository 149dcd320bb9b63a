"""TorchTrainOperator: sanity check, then train + register a model version in MLflow (light module).

The training settings travel as ONE templated argument, ``training``: the model's
:class:`~mlops_provider.specs.TrainingSpec` as a plain dict (``specs.as_dict(cfg.training)``), turned back
into the dataclass with :func:`~mlops_provider.specs.from_dict` in ``execute``; the other arguments are
what is not config (snapshot path, model name, connection ids, routing). torch / mlflow / pandas are
imported inside ``execute()`` through ``mlops_provider.runtime``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context

from mlops_provider.exceptions import ConfigError
from mlops_provider.links.mlflow import MLFLOW_RUN_URL_XCOM_KEY, MLflowRunLink
from mlops_provider.specs import TrainingSpec, from_dict

#: DAG param / dag_run.conf key that makes a training DAG run train a new version on unchanged data
FORCE_RETRAIN = "force_retrain"
#: the Celery queue of the GPU workers (``training.queue``'s default, read from the spec: written once)
GPU_QUEUE: str = str(TrainingSpec.__dataclass_fields__["queue"].default)


def _data_interval(context: Context) -> str:
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is None and end is None:
        return "none"
    return f"{start.isoformat() if start else 'none'}/{end.isoformat() if end else 'none'}"


def _dag_file(context: Context) -> str | None:
    dag = context.get("dag")
    return str(getattr(dag, "fileloc", "") or "") or None


def _dag_and_run(context: Context, default_dag_id: str) -> tuple[str, str]:
    dag = context.get("dag")
    dag_id = dag.dag_id if dag is not None else default_dag_id
    dag_run = context.get("dag_run")
    run_id = dag_run.run_id if dag_run is not None else str(context.get("run_id", "manual"))
    return dag_id, run_id


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def force_retrain(context: Context, explicit: Any = False) -> bool:
    """True when this DAG run must train a new version even on an unchanged snapshot and config: the
    operator's ``force_retrain``, the ``force_retrain`` DAG param, or ``dag_run.conf["force_retrain"]``."""
    if _truthy(explicit):
        return True
    params = context.get("params") or {}
    dag_run = context.get("dag_run")
    conf = (getattr(dag_run, "conf", None) or {}) if dag_run is not None else {}
    return _truthy(params.get(FORCE_RETRAIN, False)) or _truthy(conf.get(FORCE_RETRAIN, False))


def stage_spec(cls: type[Any], value: Any, task_id: str, argument: str) -> Any:
    """A stage-spec argument (a rendered :func:`specs.as_dict` dict, or the spec itself) as the dataclass."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(f"{task_id}: {argument} must be the {cls.__name__} as a dict (specs.as_dict(cfg."
                          f"{argument})), got {type(value).__name__}.")
    try:
        return from_dict(cls, dict(value))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{task_id}: {argument} is not a valid {cls.__name__} ({e}).") from e


def training_spec(value: Any, task_id: str) -> TrainingSpec:
    """The ``training`` argument as a TrainingSpec."""
    return stage_spec(TrainingSpec, value, task_id, "training")  # type: ignore[no-any-return]


class GpuRoutedOperator(BaseOperator):
    """Runs on the GPU workers: Celery queue ``gpu`` by default and an optional pool (slots = GPUs).

    A CeleryExecutor GPU worker listens on the queue; a KubernetesExecutor pod override can key on it.
    """

    def __init__(self, *, queue: str = GPU_QUEUE, pool: str | None = None, **kwargs: Any) -> None:
        if pool is not None:
            kwargs["pool"] = pool
        super().__init__(queue=queue, **kwargs)


class TrainingSpecOperator(GpuRoutedOperator):
    """Base of the operators that train ``training`` (the TrainingSpec as one templated dict) on ``snapshot``
    into MLflow model ``model_name``: the shared arguments and the MLflow preamble of ``execute``.

    ``snapshot`` may be an ``s3://`` URL, read through ``aws_conn_id`` (a GPU worker needs no AWS environment
    of its own). ``checkpoint_root`` (the factory passes ``<storage.root>/checkpoints`` when the YAML sets
    ``storage.root``): a directory the workers share, or an ``s3://`` prefix every epoch checkpoint is
    mirrored to, so a retry on another worker resumes; None: the worker's ``$MLOPS_HOME/checkpoints``. The
    distributed (torchrun) operator does not checkpoint."""

    template_fields: Sequence[str] = ("snapshot", "model_name", "training")
    operator_extra_links = (MLflowRunLink(),)
    ui_color = "#ee4c2c"

    def __init__(
        self,
        *,
        snapshot: str,
        model_name: str,
        training: dict[str, Any],
        mlflow_conn_id: str = "mlflow_default",
        force_retrain: bool = False,
        aws_conn_id: str | None = "aws_default",
        checkpoint_root: str | None = None,
        queue: str = GPU_QUEUE,
        pool: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(queue=queue, pool=pool, **kwargs)
        self.checkpoint_root = checkpoint_root
        self.snapshot = snapshot
        self.model_name = model_name
        self.training = training
        self.mlflow_conn_id = mlflow_conn_id
        self.force_retrain = force_retrain
        self.aws_conn_id = aws_conn_id

    def object_store(self) -> Any:
        """The store an ``s3://`` snapshot is read through (the ``aws_conn_id`` connection)."""
        from mlops_provider.operators import object_store

        return object_store(self.aws_conn_id)

    def prepare(self, context: Context) -> tuple[TrainingSpec, Any, dict[str, Any], Any]:
        """(the spec, the MLflow hook, its resolved public tracking settings, ``on_run_start`` pushing the run's
        link); a remote server must answer first (bounded retries, ``MlflowUnreachableError``)."""
        from mlops_provider.hooks.mlflow import MLflowHook

        spec = training_spec(self.training, self.task_id)
        hook = MLflowHook(self.mlflow_conn_id)
        cfg = hook.configure()
        hook.wait_until_reachable()  # before any work
        ti = context["ti"]

        def on_run_start(mlflow_run_id: str, experiment_id: str | None) -> None:
            # web UI URL when the store has one; the embedded sqlite store has none -> a runs:/ URI
            url = hook.run_url(mlflow_run_id, experiment_id) or f"runs:/{mlflow_run_id}"
            ti.xcom_push(key=MLFLOW_RUN_URL_XCOM_KEY, value=url)
            self.log.info("MLflow run %s: %s", mlflow_run_id, url)

        return spec, hook, cfg.public(), on_run_start


class TorchTrainOperator(TrainingSpecOperator):
    """Train the tabular PyTorch model of ``training`` on a snapshot and register a new MLflow model version.

    One runtime entry point, :func:`~mlops_provider.runtime.training.run.train_task`: the sanity check
    (fails fast with ``SanityCheckError``), then :func:`~mlops_provider.runtime.training.run.train`. A remote
    MLflow server must answer first (bounded retries, ``MlflowUnreachableError``). The MLflow run is keyed
    by content (model, snapshot hash, training config): a retry resumes the run, and any run on an unchanged
    snapshot and config returns the already registered version (``reused``) unless ``force_retrain`` (or the
    DAG param / ``dag_run.conf`` key ``force_retrain``) asks for a new one. Training never moves an alias.

    Crash safety: the full training state is checkpointed every ``training.checkpoint_every`` epochs under
    ``$MLOPS_HOME/checkpoints/<model>/<key>/``; a retry (or a rerun after ``kill -9``) continues from it in
    the same MLflow run; a run killed before its first checkpoint is closed as KILLED and started afresh.

    Returns ``{"run_id", "model_version", "model_uri", "metrics": {<the task's validation metrics>,
    "best_epoch"}, "tracking_uri", "reused", "resumed_from_epoch", "epochs_run"}``.
    """

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_provider.runtime.training.run import train_task

        spec, _, tracking, on_run_start = self.prepare(context)
        dag_id, run_id = _dag_and_run(context, self.dag_id)
        result = train_task(
            self.snapshot, self.model_name, spec, tracking=tracking, dag_id=dag_id, airflow_run_id=run_id,
            data_interval=_data_interval(context), force_retrain=force_retrain(context, self.force_retrain),
            dag_file=_dag_file(context), on_run_start=on_run_start, store=self.object_store(),
            checkpoint_root=self.checkpoint_root,
        )
        if result.get("resumed_from_epoch"):
            self.log.info("resumed from the checkpoint of epoch %s in MLflow run %s",
                          result["resumed_from_epoch"], result["run_id"])
        if result["reused"]:
            self.log.info("%s v%s was already trained on this snapshot and config: reused (trigger with "
                          "force_retrain to train anew)", self.model_name, result["model_version"])
            on_run_start(result["run_id"], None)  # link still points at the run
        self.log.info("%s v%s: %s", self.model_name, result["model_version"], result["metrics"])
        return result


class ReproduceTrainingOperator(GpuRoutedOperator):
    """Retrain an MLflow training run from its recorded snapshot, config and seed into a new run.

    ``training`` (optional): the model's TrainingSpec dict; only its runtime settings (system metrics,
    checkpoint cadence) apply: what defines the model comes from the run's record. The new run is tagged
    ``mlops.reproduces=<run_id>``; no version is registered unless ``register=True``. Returns
    ``{"original_run_id", "run_id", "original", "reproduced", "match", "max_abs_diff", "model_version", ...}``;
    with ``fail_on_mismatch`` a metric difference above ``tolerance`` fails the task (``TrainingError``). A
    retry resumes the same reproduction run.
    """

    template_fields: Sequence[str] = ("run_id", "training")
    operator_extra_links = (MLflowRunLink(),)
    ui_color = "#ee4c2c"

    def __init__(
        self,
        *,
        run_id: str,
        training: dict[str, Any] | None = None,
        register: bool = False,
        tolerance: float = 1e-6,
        fail_on_mismatch: bool = False,
        mlflow_conn_id: str = "mlflow_default",
        aws_conn_id: str | None = "aws_default",
        queue: str = GPU_QUEUE,
        pool: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(queue=queue, pool=pool, **kwargs)
        self.run_id = run_id
        self.aws_conn_id = aws_conn_id
        self.training = training
        self.register = register
        self.tolerance = tolerance
        self.fail_on_mismatch = fail_on_mismatch
        self.mlflow_conn_id = mlflow_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_provider.exceptions import TrainingError
        from mlops_provider.hooks.mlflow import MLflowHook
        from mlops_provider.operators import object_store
        from mlops_provider.runtime.training import reproduce

        if not self.run_id:
            raise ConfigError(f"{self.task_id}: run_id is empty; pass the MLflow run id to reproduce.")
        runtime = training_spec(self.training, self.task_id) if self.training else None
        hook = MLflowHook(self.mlflow_conn_id)
        cfg = hook.configure()
        hook.wait_until_reachable()
        dag_id, airflow_run_id = _dag_and_run(context, self.dag_id)
        ti = context["ti"]

        def on_run_start(mlflow_run_id: str, experiment_id: str | None) -> None:
            url = hook.run_url(mlflow_run_id, experiment_id) or f"runs:/{mlflow_run_id}"
            ti.xcom_push(key=MLFLOW_RUN_URL_XCOM_KEY, value=url)

        result = reproduce.reproduce(
            self.run_id, tracking=cfg.public(), register=self.register, key_parts=(dag_id, airflow_run_id),
            tolerance=self.tolerance, runtime=runtime, on_run_start=on_run_start,
            store=object_store(self.aws_conn_id),
            tags={"dag_id": dag_id, "run_id": airflow_run_id, "data_interval": _data_interval(context)},
        )
        self.log.info("\n%s", reproduce.format_report(result))
        if self.fail_on_mismatch and not result["match"]:
            raise TrainingError(
                f"run {self.run_id} did not reproduce: largest metric difference {result['max_abs_diff']:.3g} > "
                f"{self.tolerance} (new run {result['run_id']})."
            )
        return result
