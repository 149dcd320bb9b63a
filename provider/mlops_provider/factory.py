"""Build the four DAGs of a model from its pipeline config.

    features  (landing asset via DataArrivalTrigger | cron)
        landed_files -> validate_landing -> write_offline_partition -> feast_apply -> materialize
        => Asset feast/<feature_service>
    training  (feast asset | drift asset [| cron])
        training_policy (retrain guards) -> approve_retrain (HITL, only when the circuit breaker is open)
            -> training_dataset -> train (queue gpu) -> gate -> promote
                           (or, with training.search: hpo_parent -> hpo_trial[mapped] -> select_best)
        => Asset mlflow/<model>@champion   (only on a real alias change)
    deploy    (champion asset)
        package -> infra_validate -> [containerize (kubernetes)] -> deploy -> smoke_test (local)
        => Asset bento/<model>
    monitor   (cron)
        drift_report -> signal_drift (alerts)
                     -> ops_summary (endpoint rate / latency / errors / resources)
        => Asset drift/<model>             (only when drift holds)

Light module: only the Task SDK, pydantic and this package's light modules are imported
here; every heavy library is imported inside ``execute()`` of the operators.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Asset, AssetWatcher

from mlops_provider.config import PipelineConfig, iter_configs, load_config
from mlops_provider.exceptions import ConfigError
from mlops_provider.notifications.alerts import build_notifiers
from mlops_provider.operators.bentoml import (
    BatchPredictOperator,
    BentoContainerizeOperator,
    BentoDeployOperator,
    BentoInfraValidateOperator,
    BentoPackageOperator,
    BentoSmokeTestOperator,
)
from mlops_provider.operators.control import (
    LandedFilesOperator,
    RetrainApprovalOperator,
    TrainingPolicyOperator,
)
from mlops_provider.operators.data_validation import DataValidationOperator
from mlops_provider.operators.drift import DriftSignalOperator, EvidentlyDriftOperator
from mlops_provider.operators.feast import (
    FeastApplyOperator,
    FeastMaterializeOperator,
    FeastTrainingDatasetOperator,
    OfflinePartitionOperator,
)
from mlops_provider.operators.gate import (
    ChampionAliasOperator,
    GateApprovalOperator,
    ModelGateOperator,
    PromoteModelOperator,
)
from mlops_provider.operators.hpo import add_search_tasks
from mlops_provider.operators.monitoring import OpsSummaryOperator
from mlops_provider.operators.training import FORCE_RETRAIN, TorchTrainOperator
from mlops_provider.specs import as_dict
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
                        state_path=cfg.arrival_watermark,
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


def _dag(cfg: PipelineConfig, kind: str, schedule: Any, doc: str, **kwargs: Any) -> DAG:
    return DAG(
        dag_id=cfg.dag_id(kind),
        schedule=schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        tags=["mlops", cfg.model, kind, *cfg.tags],
        description=f"{cfg.model} {kind}: {doc}".replace("`", ""),
        doc_md=f"**{cfg.model} — {kind}**\n\n{doc}\n\nConfig: `{cfg.source}`\n\n{cfg.description}",
        default_args={"owner": cfg.owner, "retries": 0},
        **kwargs,
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
            report_dir=cfg.report_dir("validation"),
            name="landing",
            aws_conn_id=cfg.connections.aws,
        )
        partition = OfflinePartitionOperator(
            task_id="write_offline_partition",
            transform=cfg.transform_ref,
            landed_files=_output(files),
            lake_dir=str(paths.lake),
            contract=validate.contract,  # declared time zones reach the transform as UTC
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
    from airflow.sdk import Param

    t = cfg.training
    schedule: Any = assets.features | assets.drift
    dag = _dag(cfg, "training", schedule, "Point-in-time training snapshot, torch training tracked in "
               "MLflow on the `gpu` queue, a new registered version, champion/challenger gate, alias flip. "
               "An unchanged snapshot and config reuse the registered version; trigger with "
               "`force_retrain: true` to train anew.",
               params={FORCE_RETRAIN: Param(False, type="boolean", title="Force retrain",
                                            description="Train a new version even when the snapshot and the "
                                                        "training config are unchanged.")})
    training = as_dict(t)
    with dag:
        guards = cfg.monitoring.retrain_guards
        guard_state = cfg.retrain_guard_state
        policy = TrainingPolicyOperator(
            task_id="training_policy",
            model_name=cfg.model,
            retrain_on=t.retrain_on,
            asset_kinds=assets.kinds,
            mlflow_conn_id=cfg.connections.mlflow,
            guards=guards.model_dump(),
            state_path=guard_state,
            labels_dir=str(cfg.paths.labels),
            aws_conn_id=cfg.connections.aws,
        )
        approval = RetrainApprovalOperator(  # succeeds at once unless the circuit breaker is open
            task_id="approve_retrain",
            model_name=cfg.model,
            policy_task_id=policy.task_id,
            state_path=guard_state,
            aws_conn_id=cfg.connections.aws,
            response_timeout=(
                timedelta(hours=guards.approval_timeout_hours) if guards.approval_timeout_hours else None
            ),
            notifiers=build_notifiers(
                cfg.monitoring.alerts, "circuit_breaker", model=cfg.model,
                subject=f"[mlops] {cfg.model}: retraining circuit breaker open, approval needed",
                message="{{ (ti.xcom_pull(task_ids='training_policy') or {}).get('reason', '') }}",
                details_task_id=policy.task_id,
            ),
        )
        policy >> approval
        dataset = FeastTrainingDatasetOperator(
            task_id="training_dataset",
            repo_path=cfg.repo_path,
            feature_service=cfg.features.feature_service,
            labels_dir=str(cfg.paths.labels),
            label=t.label,
            snapshot_root=cfg.snapshot_root,
            validation_days=t.validation_days,
            evaluation_days=t.evaluation_days,
            max_rows=t.max_rows,
            feast_conn_id=cfg.connections.feast,
            aws_conn_id=cfg.connections.aws,
        )
        head: Any
        tail: Any
        routing: dict[str, Any] = {"queue": _queue(t.queue), **({"pool": t.pool} if t.pool else {}),
                                   "retries": t.retries, "retry_delay": timedelta(seconds=t.retry_delay_seconds)}
        if t.search is not None:
            search = add_search_tasks(dag, snapshot=_xcom("training_dataset", "path"), model_name=cfg.model,
                                      training=t, mlflow_conn_id=cfg.connections.mlflow,
                                      aws_conn_id=cfg.connections.aws, checkpoint_root=cfg.checkpoint_root, **routing)
            head, tail = search.first, search.last
        else:
            head = tail = TorchTrainOperator(
                task_id="train",
                snapshot=_xcom("training_dataset", "path"),
                model_name=cfg.model,
                training=training,
                mlflow_conn_id=cfg.connections.mlflow,
                aws_conn_id=cfg.connections.aws,
                checkpoint_root=cfg.checkpoint_root,
                **routing,
            )
        g = cfg.gate
        gate = ModelGateOperator(
            task_id="gate",
            model_name=cfg.model,
            challenger_version=_xcom(tail.task_id, "model_version"),
            snapshot=_xcom("training_dataset", "path"),
            gate=as_dict(g),
            training=training,
            report_dir=cfg.report_dir("gate"),
            mlflow_conn_id=cfg.connections.mlflow,
            aws_conn_id=cfg.connections.aws,
        )
        promote = PromoteModelOperator(
            task_id="promote",
            model_name=cfg.model,
            verdict=_output(gate),
            fail_on_reject=g.fail_on_reject,
            mlflow_conn_id=cfg.connections.mlflow,
            aws_conn_id=cfg.connections.aws,
            outlets=[assets.champion],
            **_promote_pool(cfg),
        )
        if g.approval:  # a human approves the promotion (HITL); skipped when the gate rejected
            gate_approval = GateApprovalOperator(
                task_id="approve_promotion",
                model_name=cfg.model,
                verdict=_output(gate),
                response_timeout=timedelta(hours=g.approval_timeout_hours) if g.approval_timeout_hours else None,
                defaults="Reject" if g.approval_timeout_hours else None,
                mlflow_conn_id=cfg.connections.mlflow,
            )
            gate >> gate_approval >> promote
        approval >> dataset >> head
        tail >> gate
        if not g.approval:
            gate >> promote
    return dag


def build_deploy_dag(cfg: PipelineConfig, assets: PipelineAssets) -> DAG:
    s = cfg.serving
    dag = _dag(cfg, "deploy", [assets.champion], "Bento built from `@champion` (online features from "
               f"Feast), infra-validated on a free loopback port, deployed to `{s.target}` (local: blue/green "
               "on loopback), live version verified, a smoke prediction over HTTP.")
    state_dir = str(cfg.paths.state / "serving" / cfg.model)
    with dag:
        package = BentoPackageOperator(
            task_id="package",
            model_name=cfg.model,
            alias="champion",
            feature_repo=cfg.repo_path,
            feature_service=cfg.features.feature_service,
            features=cfg.training.features.model_dump(),
            inference_log_dir=cfg.inference_log,
            challenger_alias=s.experiment.challenger_alias if s.experiment.enabled else None,
            experiment=s.experiment.model_dump(include={"mode", "share", "route_by"}),
            limits=s.limits.model_dump(),
            log_flush_interval_s=s.log_flush_interval_s,
            serving=s.model_dump(),  # request schema limits, threshold, workers, stale-feature policy, smoke
            mlflow_conn_id=cfg.connections.mlflow,
            bentoml_conn_id=cfg.connections.bentoml,
            aws_conn_id=cfg.connections.aws,
            feast_conn_id=cfg.connections.feast,
        )
        chain: list[Any] = [package]
        if s.infra_validate.enabled:
            iv = s.infra_validate
            chain.append(BentoInfraValidateOperator(
                task_id="infra_validate",
                bento_tag=_xcom("package", "bento_tag"),
                sample_rows=iv.sample_rows,
                tolerance=iv.tolerance,
                latency_budget_ms=iv.latency_budget_ms,
                latency_quantile=iv.latency_quantile,
                ready_timeout=s.ready_timeout,
                report_dir=cfg.report_dir("infra_validation"),
                mlflow_conn_id=cfg.connections.mlflow,
                bentoml_conn_id=cfg.connections.bentoml,
                aws_conn_id=cfg.connections.aws,
            ))
        if s.target == "kubernetes":
            chain.append(BentoContainerizeOperator(
                task_id="containerize",
                bento_tag=_xcom("package", "bento_tag"),
                image_tag=s.kubernetes.image,
                bentoml_conn_id=cfg.connections.bentoml,
            ))
        local = s.target == "local"
        deploy = BentoDeployOperator(
            task_id="deploy",
            bento_tag=_xcom("package", "bento_tag"),
            target=s.target,
            host=s.host,
            port=s.port,
            state_dir=state_dir,
            ready_timeout=s.ready_timeout,
            smoke_request=s.smoke_request,  # answered before traffic switches ({}: the one bundled in the bento)
            drain_seconds=s.drain_seconds,
            front_port=s.front_port,
            kubernetes=s.kubernetes.model_dump(),
            bentocloud=s.bentocloud.model_dump(),
            bentoml_conn_id=cfg.connections.bentoml,
            deferrable=s.deferrable,
            # no Docker engine here: containerize skips, the manifests are still rendered
            trigger_rule="none_failed" if s.target == "kubernetes" else "all_success",
            outlets=[] if local else [assets.bento],
        )
        chain.append(deploy)
        if local:
            chain.append(BentoSmokeTestOperator(
                task_id="smoke_test",
                url=_xcom("deploy", "url"),
                request=s.smoke_request,
                expected_bento_tag=_xcom("package", "bento_tag"),  # detects a silent rollback since the deploy
                outlets=[assets.bento],
            ))
        if local and s.queue:  # single host: the bento store, the servers and the stable port live there
            for task in chain:
                task.queue = s.queue
        for up, down in zip(chain, chain[1:], strict=False):
            up >> down
    return dag


def build_batch_dag(cfg: PipelineConfig, assets: PipelineAssets) -> DAG:
    """``<model>__batch_predict``: score ``serving.batch.source`` per window with the champion (offline)."""
    b = cfg.serving.batch
    assert b is not None
    dag = _dag(cfg, "batch_predict", b.schedule, "Offline batch scoring: the rows of the source in "
               f"[run time - {b.window_hours}h, run time) scored with `@{b.alias}` into parquet under `{b.output}` "
               "(one file per window and model version; a re-run changes nothing).")
    with dag:
        BatchPredictOperator(
            task_id="batch_predict",
            model_name=cfg.model,
            source=b.source,
            output_root=b.output,
            features=cfg.training.features.model_dump(),
            alias=b.alias,
            window_start=f"{{{{ (dag_run.run_after - macros.timedelta(hours={b.window_hours})).isoformat() }}}}",
            window_end="{{ dag_run.run_after.isoformat() }}",
            timestamp_column=b.timestamp_column,
            mlflow_conn_id=cfg.connections.mlflow,
            aws_conn_id=cfg.connections.aws,
        )
    return dag


_DRIFT_ALERT = (
    "{% set x = ti.xcom_pull(task_ids='signal_drift') or {} %}Drifted columns {{ x.get('drifted_columns') }} "
    "(share {{ x.get('share') }}, threshold {{ x.get('threshold') }}) against model v{{ x.get('model_version') }} "
    "in window {{ x.get('window') }} ({{ x.get('n_current') }} requests). {{ x.get('alarms') or '' }} "
    "Report: {{ x.get('report_html') }}"
)
_PERFORMANCE_ALERT = (
    "{% set p = (ti.xcom_pull(task_ids='signal_drift') or {}).get('performance') or {} %}Live ROC AUC "
    "{{ p.get('roc_auc') }}, log loss {{ p.get('log_loss') }}, ECE {{ p.get('ece') }} on {{ p.get('n_labelled') }} "
    "labelled requests: {{ p.get('reasons') }} (decided by {{ p.get('decided_by') }})"
)


def build_monitor_dag(cfg: PipelineConfig, assets: PipelineAssets) -> DAG:
    mon = cfg.monitoring
    dag = _dag(cfg, "monitor", mon.schedule, "Evidently drift of the logged inference requests against "
               "the champion's training snapshot; emits the drift asset (retraining) only when drift holds.")
    window_start = f"{{{{ (dag_run.run_after - macros.timedelta(hours={mon.window_hours})).isoformat() }}}}"
    window_end = "{{ dag_run.run_after.isoformat() }}"
    with dag:
        report = EvidentlyDriftOperator(
            task_id="drift_report",
            model_name=cfg.model,
            inference_log_dir=cfg.inference_log,
            features=cfg.training.features.model_dump(),
            report_dir=cfg.report_dir("drift"),
            window_start=window_start,
            window_end=window_end,
            drift_share=mon.drift_share,
            min_rows=mon.min_rows,
            drift=mon.drift.model_dump(),
            performance=mon.performance.model_dump(),
            labels_dir=str(cfg.paths.labels),
            label_column=cfg.training.label,
            reference_cache_dir=str(cfg.paths.state / "drift_reference"),
            aws_conn_id=cfg.connections.aws,
            mlflow_conn_id=cfg.connections.mlflow,
        )
        signal = DriftSignalOperator(
            task_id="signal_drift",
            result=_output(report),
            outlets=[assets.drift],
            # success == drift or a performance drop holds (otherwise the task is skipped)
            on_success_callback=[
                *build_notifiers(
                    mon.alerts, "drift", model=cfg.model, subject=f"[mlops] {cfg.model}: data drift detected",
                    message=_DRIFT_ALERT, details_task_id="signal_drift", only_if="drift",
                ),
                *build_notifiers(
                    mon.alerts, "performance", model=cfg.model,
                    subject=f"[mlops] {cfg.model}: live model performance dropped",
                    message=_PERFORMANCE_ALERT, details_task_id="signal_drift",
                    only_if="performance.degraded", only_if_missing=False,
                ),
            ] or None,
        )
        report >> signal
        if mon.ops.enabled:
            ops = OpsSummaryOperator(
                task_id="ops_summary",
                model_name=cfg.model,
                inference_log_dir=cfg.inference_log,
                report_dir=cfg.report_dir("drift"),
                state_path=str(cfg.paths.state / "ops" / f"{cfg.model}.json"),
                window_start=window_start,
                window_end=window_end,
                deployment_state_dir=str(cfg.paths.state / "serving" / cfg.model),
                metrics_url=mon.ops.metrics_url,
                timeout=mon.ops.timeout,
                drift_task_id=report.task_id,
                aws_conn_id=cfg.connections.aws,
            )
            report >> ops
    return dag


def _promote_pool(cfg: PipelineConfig) -> dict[str, Any]:
    """``{"pool": "mlops_promote_<model>"}``: one slot serializes every alias move of a model (create the pool)."""
    pool = cfg.gate.promote_pool
    return {"pool": pool.format(model=cfg.model)} if pool else {}


def build_manual_dags(cfg: PipelineConfig, assets: PipelineAssets) -> list[DAG]:
    """``<model>__force_promote`` and ``<model>__rollback``: manual triggers with a form (version, reason).

    The reason is required and recorded on the version (``mlops.<action>.reason``) and in the task log; a
    real alias change emits the champion asset event, so the deploy DAG redeploys.
    """
    from airflow.sdk import Param

    docs = {
        "force_promote": "Make a version `@champion` whatever the gate decided (e.g. a signature change the "
        "gate refuses to compare). The old champion becomes `@previous`.",
        "rollback": "Roll `@champion` back to a version (empty: the `@previous` one). The replaced champion "
        "becomes `@previous`.",
    }
    dags = []
    for action, doc in docs.items():
        version = (
            Param(type="integer", minimum=1, title="Model version", description="Registry version to promote.")
            if action == "force_promote"
            else Param(None, type=["null", "integer"], minimum=1, title="Model version",
                       description="Version to roll back to; empty: the @previous alias.")
        )
        dag = DAG(
            dag_id=cfg.dag_id(action),
            schedule=None,
            start_date=START_DATE,
            catchup=False,
            max_active_runs=1,
            tags=["mlops", cfg.model, "manual", *cfg.tags],
            description=f"{cfg.model} {action} (manual, form: version + reason): {doc}".replace("`", ""),
            doc_md=f"**{cfg.model} — {action}** (manual)\n\n{doc} A reason is required; it is recorded on the "
            f"model version and in the log.\n\nConfig: `{cfg.source}`",
            default_args={"owner": cfg.owner, "retries": 0},
            params={
                "version": version,
                "reason": Param(type="string", minLength=3, title="Reason",
                                description="Why (recorded on the model version and in the log)."),
            },
        )
        with dag:
            ChampionAliasOperator(
                task_id=action,
                model_name=cfg.model,
                action=action,
                version="{{ params.version }}",
                reason="{{ params.reason }}",
                mlflow_conn_id=cfg.connections.mlflow,
                outlets=[assets.champion],
                **_promote_pool(cfg),
            )
        dags.append(dag)
    return dags


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
        *([build_batch_dag(cfg, assets)] if cfg.serving.batch else []),
        *build_manual_dags(cfg, assets),
    ]
    return {d.dag_id: d for d in dags}


def dags_from_config(path: str | os.PathLike[str]) -> dict[str, DAG]:
    return build_dags(load_config(path))


class InvalidConfigsDag(DAG):
    """Stands for the YAML files of a folder that failed validation, so that they fail ALONE.

    A DAG file that raises loses every DAG it would have defined. Instead, the good configs' DAGs are
    returned and this placeholder beside them: Airflow validates each DAG it collects from a file and
    records an import error for the one whose ``validate()`` raises, while the others are kept
    (``airflow.dag_processing.dagbag``: bag_dag per DAG). So every bad YAML appears in Airflow's import
    errors (its file, key, line and fix in the message) and every other model keeps its DAGs.
    """

    def __init__(self, errors: list[ConfigError], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config_errors = errors

    def validate(self) -> None:
        raise ConfigError(
            f"{len(self.config_errors)} pipeline config(s) failed validation; their DAGs are not loaded, every "
            "other model's are:\n" + "\n".join(str(e) for e in self.config_errors)
        )


def dags_from_directory(directory: str | os.PathLike[str]) -> dict[str, DAG]:
    """The DAGs of every pipeline YAML in ``directory`` (what ``dags/mlops_pipelines.py`` calls).

    A YAML that fails validation hides only its own DAGs: see :class:`InvalidConfigsDag`.
    """
    out: dict[str, DAG] = {}
    errors: list[ConfigError] = []
    for _, cfg in iter_configs(Path(directory)):
        if isinstance(cfg, ConfigError):
            errors.append(cfg)
            continue
        try:
            out.update(build_dags(cfg))
        except ConfigError as e:
            errors.append(e)
    if errors:
        out["mlops_invalid_configs"] = InvalidConfigsDag(
            errors, dag_id="mlops_invalid_configs", schedule=None, start_date=START_DATE,
            description="Placeholder: the pipeline YAMLs named in the import error failed validation.",
        )
    return out


def required_pools(directory: str | os.PathLike[str]) -> dict[str, tuple[int, str]]:
    """Pools the DAGs of every YAML in ``directory`` need, as ``{name: (slots, description)}``.

    A task in a pool that does not exist is never scheduled, so create these once per deployment
    (``airflow pools set <name> <slots> <description>``; the demo and ``make airflow-ui`` do it).
    Training pools (``training.pool``) are sized by the GPU count and left to the deployment.
    """
    out: dict[str, tuple[int, str]] = {}
    for _, cfg in iter_configs(Path(directory)):
        if isinstance(cfg, ConfigError):
            continue  # its DAGs do not load either
        pool = _promote_pool(cfg).get("pool")
        if pool:
            out[pool] = (1, f"Serializes alias moves (promote, force_promote, rollback) of {cfg.model}")
    return out


__all__ = ["PipelineAssets", "build_dags", "dags_from_config", "dags_from_directory", "required_pools"]
