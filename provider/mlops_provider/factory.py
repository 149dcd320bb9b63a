"""Build the four DAGs of a model from its pipeline config.

    features  (landing asset via DataArrivalTrigger | cron)
        landed_files -> validate_landing -> write_offline_partition -> feast_apply -> materialize
        => Asset feast/<feature_service>
    training  (feast asset | drift asset [| cron])
        training_policy -> training_dataset -> train (queue gpu) -> gate -> promote
                           (or, with training.search: hpo_parent -> hpo_trial[mapped] -> select_best)
        => Asset mlflow/<model>@champion   (only on a real alias change)
    deploy    (champion asset)
        package -> deploy -> smoke_test
        => Asset bento/<model>
    monitor   (cron)
        drift_report -> signal_drift
        => Asset drift/<model>             (only when drift holds)

Light module: only the Task SDK, pydantic and this package's light modules are imported
here; every heavy library is imported inside ``execute()`` of the operators.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Asset, AssetWatcher

from mlops_provider.config import PipelineConfig, load_config, load_configs
from mlops_provider.operators.bentoml import BentoDeployOperator, BentoPackageOperator, BentoSmokeTestOperator
from mlops_provider.operators.control import LandedFilesOperator, TrainingPolicyOperator
from mlops_provider.operators.data_validation import DataValidationOperator
from mlops_provider.operators.drift import DriftReportOperator, DriftSignalOperator
from mlops_provider.operators.feast import (
    FeastApplyOperator,
    FeastMaterializeOperator,
    FeastTrainingDatasetOperator,
    OfflinePartitionOperator,
)
from mlops_provider.operators.gate import ModelGateOperator, PromoteModelOperator
from mlops_provider.operators.hpo import add_search_tasks
from mlops_provider.operators.training import TorchTrainOperator
from mlops_provider.triggers.data_arrival import DataArrivalTrigger

START_DATE = datetime(2024, 1, 1)
URI_SCHEME = "x-mlops"


class PipelineAssets:
    """The Assets that connect one model's DAGs (DESIGN.md §2)."""

    def __init__(self, cfg: PipelineConfig) -> None:
        m, fs = cfg.model, cfg.features.feature_service
        arrival = cfg.features.arrival
        self.landing = Asset(
            name=f"landing/{m}",
            uri=f"{URI_SCHEME}://landing/{m}",
            group="landing",
            watchers=[
                AssetWatcher(
                    name=f"{m}_arrival",
                    trigger=DataArrivalTrigger(
                        path=cfg.landing_path,
                        pattern=arrival.pattern,
                        state_path=str(cfg.paths.state / f"{m}_arrival_watermark.json"),
                        poll_interval=arrival.poll_interval,
                        settle_seconds=arrival.settle_seconds,
                        batch_files=arrival.batch_files,
                        batch_seconds=arrival.batch_seconds,
                        aws_conn_id=cfg.connections.aws,
                    ),
                )
            ],
        )
        self.features = Asset(name=f"feast/{fs}", uri=f"{URI_SCHEME}://feast/{fs}", group="features")
        self.champion = Asset(name=f"mlflow/{m}@champion", uri=f"{URI_SCHEME}://mlflow/{m}/champion", group="models")
        self.bento = Asset(name=f"bento/{m}", uri=f"{URI_SCHEME}://bento/{m}", group="serving")
        self.drift = Asset(name=f"drift/{m}", uri=f"{URI_SCHEME}://drift/{m}", group="monitoring")

    @property
    def kinds(self) -> dict[str, str]:
        """Asset name -> the kind the training policy reasons about."""
        return {self.features.name: "features", self.drift.name: "drift"}


def _dag(cfg: PipelineConfig, kind: str, schedule: Any, doc: str) -> DAG:
    return DAG(
        dag_id=cfg.dag_id(kind),
        schedule=schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        tags=["mlops", cfg.model, kind, *cfg.tags],
        doc_md=f"**{cfg.model} — {kind}**\n\n{doc}\n\nConfig: `{cfg.source}`\n\n{cfg.description}",
        default_args={"owner": cfg.owner, "retries": 0},
    )


def _output(op: Any) -> Any:
    """An operator's return value as an XComArg (resolved at run time; typed Any for the operators)."""
    return op.output


def _xcom(task_id: str, key: str | None = None) -> str:
    expr = f"ti.xcom_pull(task_ids='{task_id}')"
    return "{{ " + (f"{expr}['{key}']" if key else expr) + " }}"


def build_features_dag(cfg: PipelineConfig, assets: PipelineAssets) -> DAG:
    schedule: Any = cfg.features.schedule or [assets.landing]
    dag = _dag(cfg, "features", schedule, "Validate landed raw data, write offline partitions, "
               "`feast apply`, materialize the window into the online store.")
    paths = cfg.paths
    with dag:
        files = LandedFilesOperator(
            task_id="landed_files",
            landing_path=cfg.landing_path,
            pattern=cfg.features.arrival.pattern,
            aws_conn_id=cfg.connections.aws,
        )
        validate = DataValidationOperator(
            task_id="validate_landing",
            data_paths=_output(files),
            contract={"tables": {k: v.model_dump() for k, v in cfg.features.contract.items()}},
            report_dir=str(paths.reports / "validation"),
            name="landing",
            aws_conn_id=cfg.connections.aws,
        )
        partition = OfflinePartitionOperator(
            task_id="write_offline_partition",
            transform=cfg.transform_ref,
            landed_files=_output(files),
            lake_dir=str(paths.lake),
            aws_conn_id=cfg.connections.aws,
        )
        apply = FeastApplyOperator(
            task_id="feast_apply", repo_path=cfg.repo_path, feast_conn_id=cfg.connections.feast
        )
        materialize = FeastMaterializeOperator(
            task_id="materialize",
            repo_path=cfg.repo_path,
            start=_xcom("write_offline_partition", "window_start"),
            end=_xcom("write_offline_partition", "window_end"),
            feature_views=cfg.features.feature_views,
            feast_conn_id=cfg.connections.feast,
            chunk_hours=cfg.features.materialize.chunk_hours,
            overlap=cfg.features.materialize.overlap,
            outlets=[assets.features],
        )
        files >> validate >> partition >> apply >> materialize
    return dag


def build_training_dag(cfg: PipelineConfig, assets: PipelineAssets) -> DAG:
    t = cfg.training
    schedule: Any = assets.features | assets.drift
    dag = _dag(cfg, "training", schedule, "Point-in-time training snapshot, torch training tracked in "
               "MLflow on the `gpu` queue, a new registered version, champion/challenger gate, alias flip.")
    features = t.features.model_dump()
    with dag:
        policy = TrainingPolicyOperator(
            task_id="training_policy",
            model_name=cfg.model,
            retrain_on=t.retrain_on,
            asset_kinds=assets.kinds,
            mlflow_conn_id=cfg.connections.mlflow,
        )
        dataset = FeastTrainingDatasetOperator(
            task_id="training_dataset",
            repo_path=cfg.repo_path,
            feature_service=cfg.features.feature_service,
            labels_dir=str(cfg.paths.labels),
            label=t.label,
            snapshot_root=str(cfg.paths.snapshots),
            validation_days=t.validation_days,
            max_rows=t.max_rows,
            feast_conn_id=cfg.connections.feast,
            aws_conn_id=cfg.connections.aws,
        )
        head: Any
        tail: Any
        if t.search is not None:
            search = add_search_tasks(
                dag,
                snapshot=_xcom("training_dataset", "path"),
                model_name=cfg.model,
                features=features,
                label=t.label,
                base_config={
                    "architecture": t.architecture,
                    "epochs": t.epochs,
                    "batch_size": t.batch_size,
                    "learning_rate": t.learning_rate,
                    "seed": t.seed,
                    "patience": t.patience,
                },
                params=t.search.params,
                max_trials=t.search.max_trials,
                metric=t.search.metric,
                seed=t.search.seed,
                max_active_trials=t.search.max_active_trials,
                mlflow_conn_id=cfg.connections.mlflow,
                queue=_queue(t.queue),
                pool=t.pool,
            )
            head, tail = search.first, search.last
        else:
            head = tail = TorchTrainOperator(
                task_id="train",
                snapshot=_xcom("training_dataset", "path"),
                model_name=cfg.model,
                features=features,
                label=t.label,
                architecture=t.architecture,
                epochs=t.epochs,
                batch_size=t.batch_size,
                learning_rate=t.learning_rate,
                seed=t.seed,
                patience=t.patience,
                checkpoint_every=t.checkpoint_every,
                compile=t.compile,
                system_metrics_interval=t.system_metrics_interval,
                mlflow_conn_id=cfg.connections.mlflow,
                queue=_queue(t.queue),
                **({"pool": t.pool} if t.pool else {}),
            )
        gate = ModelGateOperator(
            task_id="gate",
            model_name=cfg.model,
            challenger_version=_xcom(tail.task_id, "model_version"),
            snapshot=_xcom("training_dataset", "path"),
            features=features,
            label=t.label,
            primary_metric=cfg.gate.primary_metric,
            floors=cfg.gate.floors,
            max_regression=cfg.gate.max_regression,
            report_dir=str(cfg.paths.reports / "gate"),
            mlflow_conn_id=cfg.connections.mlflow,
        )
        promote = PromoteModelOperator(
            task_id="promote",
            model_name=cfg.model,
            verdict=_output(gate),
            mlflow_conn_id=cfg.connections.mlflow,
            outlets=[assets.champion],
        )
        policy >> dataset >> head
        tail >> gate >> promote
    return dag


def build_deploy_dag(cfg: PipelineConfig, assets: PipelineAssets) -> DAG:
    s = cfg.serving
    dag = _dag(cfg, "deploy", [assets.champion], "Bento built from `@champion` (online features from "
               "Feast), served on loopback, `/readyz`, a smoke prediction over HTTP.")
    with dag:
        package = BentoPackageOperator(
            task_id="package",
            model_name=cfg.model,
            alias="champion",
            feature_repo=cfg.repo_path,
            feature_service=cfg.features.feature_service,
            features=cfg.training.features.model_dump(),
            inference_log_dir=str(cfg.paths.inference_log),
            mlflow_conn_id=cfg.connections.mlflow,
            bentoml_conn_id=cfg.connections.bentoml,
        )
        deploy = BentoDeployOperator(
            task_id="deploy",
            bento_tag=_xcom("package", "bento_tag"),
            host=s.host,
            port=s.port,
            state_dir=str(cfg.paths.state / "serving" / cfg.model),
            ready_timeout=s.ready_timeout,
            smoke_request=s.smoke_request or None,  # the new server must answer before traffic switches
            bentoml_conn_id=cfg.connections.bentoml,
        )
        smoke = BentoSmokeTestOperator(
            task_id="smoke_test",
            url=_xcom("deploy", "url"),
            request=s.smoke_request,
            outlets=[assets.bento],
        )
        package >> deploy >> smoke
    return dag


def build_monitor_dag(cfg: PipelineConfig, assets: PipelineAssets) -> DAG:
    mon = cfg.monitoring
    dag = _dag(cfg, "monitor", mon.schedule, "Evidently drift of the logged inference requests against "
               "the champion's training snapshot; emits the drift asset (retraining) only when drift holds.")
    with dag:
        report = DriftReportOperator(
            task_id="drift_report",
            model_name=cfg.model,
            inference_log_dir=str(cfg.paths.inference_log),
            features=cfg.training.features.model_dump(),
            report_dir=str(cfg.paths.reports / "drift"),
            window_start=f"{{{{ (dag_run.run_after - macros.timedelta(hours={mon.window_hours})).isoformat() }}}}",
            window_end="{{ dag_run.run_after.isoformat() }}",
            drift_share=mon.drift_share,
            min_rows=mon.min_rows,
            mlflow_conn_id=cfg.connections.mlflow,
        )
        signal = DriftSignalOperator(task_id="signal_drift", result=_output(report), outlets=[assets.drift])
        report >> signal
    return dag


def _queue(default: str) -> str:
    """The training queue; ``MLOPS_TRAINING_QUEUE`` overrides it (the embedded demo uses 'default')."""
    return os.environ.get("MLOPS_TRAINING_QUEUE", default)


def build_dags(cfg: PipelineConfig) -> dict[str, DAG]:
    assets = PipelineAssets(cfg)
    dags = [
        build_features_dag(cfg, assets),
        build_training_dag(cfg, assets),
        build_deploy_dag(cfg, assets),
        build_monitor_dag(cfg, assets),
    ]
    return {d.dag_id: d for d in dags}


def dags_from_config(path: str | os.PathLike[str]) -> dict[str, DAG]:
    return build_dags(load_config(path))


def dags_from_directory(directory: str | os.PathLike[str]) -> dict[str, DAG]:
    """The DAGs of every pipeline YAML in ``directory`` (what ``dags/mlops_pipelines.py`` calls)."""
    out: dict[str, DAG] = {}
    for cfg in load_configs(Path(directory)):
        out.update(build_dags(cfg))
    return out


__all__ = ["PipelineAssets", "build_dags", "dags_from_config", "dags_from_directory"]
