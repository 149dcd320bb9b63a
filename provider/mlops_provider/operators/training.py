"""TorchTrainOperator: sanity check, then train + register a model version in MLflow (light module).

torch / mlflow / pandas are imported inside ``execute()`` through ``mlops_provider.runtime``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context

from mlops_provider.exceptions import ConfigError
from mlops_provider.links.mlflow import MLFLOW_RUN_URL_XCOM_KEY, MLflowRunLink


def _data_interval(context: Context) -> str:
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is None and end is None:
        return "none"
    return f"{start.isoformat() if start else 'none'}/{end.isoformat() if end else 'none'}"


def _dag_file(context: Context) -> str | None:
    dag = context.get("dag")
    return str(getattr(dag, "fileloc", "") or "") or None


def _airflow_run_id(context: Context) -> str:
    dag_run = context.get("dag_run")
    return dag_run.run_id if dag_run is not None else str(context.get("run_id", "manual"))


class GpuRoutedOperator(BaseOperator):
    """Runs on the GPU workers: Celery queue ``gpu`` by default and an optional pool (slots = GPUs).

    A CeleryExecutor GPU worker listens on the queue; a KubernetesExecutor pod override can key on it.
    """

    def __init__(self, *, queue: str = "gpu", pool: str | None = None, **kwargs: Any) -> None:
        if pool is not None:
            kwargs["pool"] = pool
        super().__init__(queue=queue, **kwargs)


class TorchTrainOperator(GpuRoutedOperator):
    """Train the tabular PyTorch model on a snapshot and register a new MLflow model version.

    One runtime entry point, :func:`~mlops_provider.runtime.training.run.train_task`: the sanity check
    (fails fast with ``SanityCheckError``), then :func:`~mlops_provider.runtime.training.run.train`. A remote
    MLflow server must answer first (bounded retries, ``MlflowUnreachableError``). The MLflow run is
    keyed by (dag_id, run_id, snapshot hash, training config): a retry reuses the run, and a
    re-run after success returns the already registered version. Training never moves an alias.

    Crash safety: the full training state is checkpointed every ``checkpoint_every`` epochs under
    ``$MLOPS_HOME/checkpoints/<model>/<key>/``; a retry (or a rerun after ``kill -9``) continues from
    it in the same MLflow run. ``compile``: ``torch.compile`` the network; ``system_metrics_interval``:
    seconds between MLflow system-metric samples (None = off). Routed to the ``gpu`` queue by default.

    Returns ``{"run_id", "model_version", "model_uri", "metrics": {"roc_auc", "log_loss",
    "best_epoch"}, "tracking_uri", "reused", "resumed_from_epoch", "epochs_run"}``.
    """

    template_fields: Sequence[str] = ("snapshot", "model_name")
    operator_extra_links = (MLflowRunLink(),)
    ui_color = "#ee4c2c"

    def __init__(
        self,
        *,
        snapshot: str,
        model_name: str,
        features: dict[str, list[str]],
        label: str,
        architecture: dict[str, Any],
        epochs: int = 10,
        batch_size: int = 1024,
        learning_rate: float = 1e-3,
        seed: int = 42,
        patience: int = 3,
        checkpoint_every: int = 1,
        compile: bool = False,
        system_metrics_interval: float | None = 5.0,
        mlflow_conn_id: str = "mlflow_default",
        queue: str = "gpu",
        pool: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(queue=queue, pool=pool, **kwargs)
        self.checkpoint_every = checkpoint_every
        self.compile = compile
        self.system_metrics_interval = system_metrics_interval
        self.snapshot = snapshot
        self.model_name = model_name
        self.features = features
        self.label_column = label
        self.architecture = architecture
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.seed = seed
        self.patience = patience
        self.mlflow_conn_id = mlflow_conn_id

    def _feature_lists(self) -> tuple[list[str], list[str]]:
        unknown = set(self.features) - {"categorical", "numeric"}
        if unknown:
            raise ConfigError(
                f"{self.task_id}: features has unknown keys {sorted(unknown)}; use 'categorical' and 'numeric'."
            )
        categorical = list(self.features.get("categorical", []))
        numeric = list(self.features.get("numeric", []))
        if not categorical and not numeric:
            raise ConfigError(f"{self.task_id}: features lists no columns (model.features in the YAML).")
        return categorical, numeric

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_provider.hooks.mlflow import MLflowHook
        from mlops_provider.runtime.training.run import train_task

        categorical, numeric = self._feature_lists()
        hook = MLflowHook(self.mlflow_conn_id)
        cfg = hook.configure()
        hook.wait_until_reachable()  # bounded retries, then MlflowUnreachableError: before any work
        ti = context["ti"]

        def on_run_start(mlflow_run_id: str, experiment_id: str | None) -> None:
            # web UI URL when the store has one; the embedded sqlite store has none -> a runs:/ URI
            url = hook.run_url(mlflow_run_id, experiment_id) or f"runs:/{mlflow_run_id}"
            ti.xcom_push(key=MLFLOW_RUN_URL_XCOM_KEY, value=url)
            self.log.info("MLflow run %s: %s", mlflow_run_id, url)

        result = train_task(
            self.snapshot, self.model_name, categorical, numeric, self.label_column, self.architecture,
            epochs=self.epochs, batch_size=self.batch_size, lr=self.learning_rate, seed=self.seed,
            patience=self.patience, tracking=cfg.public(),
            dag_id=context["dag"].dag_id if context.get("dag") else self.dag_id,
            airflow_run_id=_airflow_run_id(context), data_interval=_data_interval(context),
            compile_model=self.compile, checkpoint_every=self.checkpoint_every,
            system_metrics_interval=self.system_metrics_interval, dag_file=_dag_file(context),
            on_run_start=on_run_start,
        )
        if result.get("resumed_from_epoch"):
            self.log.info("resumed from the checkpoint of epoch %s in MLflow run %s",
                          result["resumed_from_epoch"], result["run_id"])
        if result["reused"]:
            on_run_start(result["run_id"], None)  # link still points at the run
        self.log.info("%s v%s: %s", self.model_name, result["model_version"], result["metrics"])
        return result


class ReproduceTrainingOperator(GpuRoutedOperator):
    """Retrain an MLflow training run from its recorded snapshot, config and seed into a new run.

    The new run is tagged ``mlops.reproduces=<run_id>``; no version is registered unless
    ``register=True``. Returns ``{"original_run_id", "run_id", "original", "reproduced", "match",
    "max_abs_diff", "model_version", ...}``; with ``fail_on_mismatch`` a metric difference above
    ``tolerance`` fails the task (``TrainingError``). A retry resumes the same reproduction run.
    """

    template_fields: Sequence[str] = ("run_id",)
    operator_extra_links = (MLflowRunLink(),)
    ui_color = "#ee4c2c"

    def __init__(
        self,
        *,
        run_id: str,
        register: bool = False,
        tolerance: float = 1e-6,
        fail_on_mismatch: bool = False,
        mlflow_conn_id: str = "mlflow_default",
        queue: str = "gpu",
        pool: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(queue=queue, pool=pool, **kwargs)
        self.run_id = run_id
        self.register = register
        self.tolerance = tolerance
        self.fail_on_mismatch = fail_on_mismatch
        self.mlflow_conn_id = mlflow_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_provider.exceptions import TrainingError
        from mlops_provider.hooks.mlflow import MLflowHook
        from mlops_provider.runtime.training import reproduce

        if not self.run_id:
            raise ConfigError(f"{self.task_id}: run_id is empty; pass the MLflow run id to reproduce.")
        hook = MLflowHook(self.mlflow_conn_id)
        cfg = hook.configure()
        hook.wait_until_reachable()
        dag_id = context["dag"].dag_id if context.get("dag") else self.dag_id
        ti = context["ti"]

        def on_run_start(mlflow_run_id: str, experiment_id: str | None) -> None:
            url = hook.run_url(mlflow_run_id, experiment_id) or f"runs:/{mlflow_run_id}"
            ti.xcom_push(key=MLFLOW_RUN_URL_XCOM_KEY, value=url)

        result = reproduce.reproduce(
            self.run_id, tracking=cfg.public(), register=self.register,
            key_parts=(dag_id, _airflow_run_id(context)), tolerance=self.tolerance, on_run_start=on_run_start,
            tags={"dag_id": dag_id, "run_id": _airflow_run_id(context), "data_interval": _data_interval(context)},
        )
        self.log.info("\n%s", reproduce.format_report(result))
        if self.fail_on_mismatch and not result["match"]:
            raise TrainingError(
                f"run {self.run_id} did not reproduce: largest metric difference {result['max_abs_diff']:.3g} > "
                f"{self.tolerance} (new run {result['run_id']})."
            )
        return result
