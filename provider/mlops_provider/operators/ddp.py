"""TorchDistributedTrainOperator: DistributedDataParallel training via ``torchrun`` on one worker (light module).

One runtime entry point (:func:`mlops_provider.runtime.training.ddp.train_task`): the sanity check in the
task process, then ``torchrun --standalone --nproc_per_node=N -m mlops_provider.runtime.training.ddp`` (one process per GPU,
``nccl``; or ``gloo`` processes on CPU: the same code path). Rank 0 alone talks to MLflow and
registers the version. torch / mlflow are imported inside ``execute()``.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Context

from mlops_provider.exceptions import ConfigError
from mlops_provider.links.mlflow import MLFLOW_RUN_URL_XCOM_KEY
from mlops_provider.operators.training import (
    TrainingSpecOperator,
    _dag_and_run,
    _data_interval,
    force_retrain,
)


class TorchDistributedTrainOperator(TrainingSpecOperator):
    """Train ``training`` (the TrainingSpec dict) with DDP over ``nproc_per_node`` processes of this worker;
    register one MLflow version.

    ``nproc_per_node``: an int, or ``"gpu"`` (one per visible CUDA device; 1 without CUDA).
    Give the task a pool slot count equal to the GPUs it takes (``pool_slots``). Returns
    TorchTrainOperator's dict shape plus ``world_size``. Idempotent by content like TorchTrainOperator:
    the MLflow run is keyed by (model, snapshot hash, training config, world size); ``force_retrain`` (or the
    DAG param / dag_run.conf key) adds the Airflow run id.
    """

    def __init__(
        self,
        *,
        nproc_per_node: int | str = "gpu",
        sanity_check: bool = True,
        launch_timeout: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.nproc_per_node = nproc_per_node
        self.sanity_check = sanity_check
        self.launch_timeout = launch_timeout

    def _nproc(self) -> int:
        if isinstance(self.nproc_per_node, int) and not isinstance(self.nproc_per_node, bool):
            n = self.nproc_per_node
        elif self.nproc_per_node == "gpu":
            import torch

            n = max(1, torch.cuda.device_count())
        else:
            raise ConfigError(f"{self.task_id}: nproc_per_node must be an int or 'gpu', got {self.nproc_per_node!r}.")
        if n < 1:
            raise ConfigError(f"{self.task_id}: nproc_per_node must be >= 1, got {n}.")
        return n

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_provider.runtime.training import ddp

        nproc = self._nproc()
        # configure() exports credentials into this process's env: the ranks inherit them
        spec, hook, tracking, _ = self.prepare(context)
        dag_id, run_id = _dag_and_run(context, self.dag_id)
        result = ddp.train_task(
            self.snapshot, self.model_name, spec, nproc_per_node=nproc, tracking=tracking, dag_id=dag_id,
            airflow_run_id=run_id, data_interval=_data_interval(context),
            force_retrain=force_retrain(context, self.force_retrain), sanity_check=self.sanity_check,
            timeout=self.launch_timeout, on_line=lambda line: self.log.info("%s", line), store=self.object_store(),
        )
        url = hook.run_url(result["run_id"]) or f"runs:/{result['run_id']}"
        context["ti"].xcom_push(key=MLFLOW_RUN_URL_XCOM_KEY, value=url)
        self.log.info("%s v%s from %d ranks: %s", self.model_name, result["model_version"], nproc, result["metrics"])
        return result
