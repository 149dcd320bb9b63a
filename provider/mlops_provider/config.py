"""The per-model pipeline config: one YAML file per model, validated by pydantic.

Light module (stdlib, pydantic, yaml): imported at DAG-parse time. Every error is a
:class:`~mlops_provider.exceptions.ConfigError` whose message names the file, the key
and the fix, so a bad YAML shows up as a readable DAG import error in the Airflow UI.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlops_provider.exceptions import ConfigError
from mlops_provider.paths import ModelPaths
from mlops_provider.tasks import GATE_METRICS

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArrivalConfig(_Strict):
    """Data arrival: an AssetWatcher on the landing zone (a directory or an ``s3://`` prefix)."""

    path: str | None = Field(None, description="Landing zone: a directory or s3://bucket/prefix/; default <home>/landing/<model>.")
    pattern: str = Field("*.parquet", description="Glob of the files that count as arrivals.")
    poll_interval: float = Field(5.0, gt=0, description="Seconds between two scans.")
    settle_seconds: float = Field(2.0, ge=0, description="A file must be unchanged this long to count.")
    batch_files: int = Field(1, ge=1, description="Emit once this many new files are pending ...")
    batch_seconds: float = Field(10.0, ge=0, description="... or the oldest pending file waited this long.")


class TableContract(_Strict):
    min_rows: int = 1
    columns: dict[str, dict[str, Any]] = Field(default_factory=dict)
    unique: list[str] = Field(default_factory=list)
    no_future: str | None = None


class MaterializeConfig(_Strict):
    chunk_hours: int = Field(168, ge=1, description="Time chunk of one read: bounds peak memory, not the window.")
    overlap: str | None = Field(None, description="Re-materialize this much before the window (late data), e.g. PT6H.")


class FeaturesConfig(_Strict):
    repo: str = Field(..., description="Feast repo directory, relative to the YAML file.")
    feature_service: str = Field(..., description="FeatureService the model trains and serves on.")
    feature_views: list[str] | None = Field(None, description="Views to materialize; default all.")
    transform: str = Field(..., description="'path/to/file.py:function' building offline partitions.")
    arrival: ArrivalConfig = Field(default_factory=lambda: ArrivalConfig())
    materialize: MaterializeConfig = Field(default_factory=lambda: MaterializeConfig())
    schedule: str | None = Field(None, description="Cron alternative to data arrival (e.g. '@daily').")
    contract: dict[str, TableContract] = Field(default_factory=dict, description="Data contract per table.")


class FeatureColumns(_Strict):
    categorical: list[str] = Field(default_factory=list)
    numeric: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _not_empty(self) -> FeatureColumns:
        if not self.categorical and not self.numeric:
            raise ValueError("declare at least one feature under 'categorical' or 'numeric'")
        dup = set(self.categorical) & set(self.numeric)
        if dup:
            raise ValueError(f"columns listed as both categorical and numeric: {sorted(dup)}")
        return self


class SearchConfig(_Strict):
    """Hyperparameter search: a discrete space, one mapped Airflow task (and MLflow child run) per trial."""

    params: dict[str, list[Any]] = Field(
        ...,
        min_length=1,
        description="key -> candidate values: learning_rate, batch_size, epochs, patience, seed, or an "
        "architecture key (hidden, dropout, ... / 'architecture.<key>')",
    )
    max_trials: int = Field(8, ge=1, le=1000)
    metric: Literal["roc_auc", "log_loss"] = "roc_auc"
    seed: int | None = Field(None, description="Sampling seed when the grid exceeds max_trials; default training.seed.")
    max_active_trials: int | None = Field(None, ge=1, description="Concurrent trials per DAG run (e.g. GPU count).")

    @model_validator(mode="after")
    def _expandable(self) -> SearchConfig:
        from mlops_provider.operators.hpo import expand_search_space

        try:
            expand_search_space(self.params, self.max_trials, self.seed or 0)
        except ConfigError as e:  # pydantic turns only ValueError into a validation error
            raise ValueError(str(e)) from None
        return self


class TrainingConfig(_Strict):
    label: str
    features: FeatureColumns
    validation_days: int = Field(21, ge=1)
    evaluation_days: int = Field(7, ge=0, description="Last N days: the gate's frozen evaluation split; 0: none.")
    max_rows: int | None = Field(None, ge=1000, description="Deterministic sample cap of the dataset.")
    architecture: dict[str, Any] = Field(default_factory=lambda: {"hidden": [64, 32], "dropout": 0.1})
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(1024, ge=1)
    learning_rate: float = Field(1e-3, gt=0)
    seed: int = 42
    patience: int = Field(3, ge=1)
    checkpoint_every: int = Field(1, ge=1, description="Checkpoint every N epochs (retries resume from it).")
    compile: bool = Field(False, description="torch.compile the network (CUDA workers).")
    system_metrics_interval: float | None = Field(5.0, gt=0, description="MLflow system-metrics sampling, s.")
    search: SearchConfig | None = Field(None, description="Hyperparameter search (mapped trials).")
    queue: str = Field("gpu", description="Celery queue of the GPU workers.")
    pool: str | None = Field(None, description="Airflow pool (slots = GPUs).")
    retrain_on: list[Literal["features", "drift"]] = Field(
        default_factory=lambda: list[Literal["features", "drift"]](["drift"]),
        description="Asset events that retrain once a champion exists (the first model always trains).",
    )
    schedule: str | None = Field(None, description="Optional cron retraining in addition to the assets.")




def _known_metrics(value: dict[str, float]) -> dict[str, float]:
    unknown = sorted(set(value) - set(GATE_METRICS))
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; the gate computes {sorted(GATE_METRICS)}")
    return value


class SliceCheck(_Strict):
    """Per-slice check, e.g. every origin airport: no slice may regress more than ``max_regression``."""

    column: str = Field(..., description="Column whose values define the slices (e.g. origin, carrier).")
    metric: Literal["roc_auc", "pr_auc", "log_loss", "brier"] = "roc_auc"
    max_regression: float | None = Field(0.02, ge=0, description="Tolerated drop vs the champion on the slice.")
    floor: float | None = Field(None, description="Absolute bound of the metric on every slice.")
    min_rows: int = Field(100, ge=1, description="Smaller slices are reported, not judged.")
    values: list[str] | None = Field(None, description="Judge only these slices; a listed slice with no rows is "
                                     "an error.")


class MinimumCase(_Strict):
    """A fixed input with the expected range of the delay probability (unlisted features: typical values)."""

    name: str
    input: dict[str, Any] = Field(..., min_length=1)
    min_probability: float = Field(0.0, ge=0, le=1)
    max_probability: float = Field(1.0, ge=0, le=1)


class BehavioralTest(_Strict):
    """invariance: changing ``column`` must not move the prediction (more than ``tolerance``);
    directional: changing it must move the prediction the ``expect`` way; minimum_functionality: ``cases``."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$")
    kind: Literal["invariance", "directional", "minimum_functionality"]
    column: str | None = None
    set: Any = Field(None, description="Replace the column by this value ...")
    add: float | None = Field(None, description="... or add this amount (numeric columns).")
    values: list[Any] | None = Field(None, description="invariance: every one of these values in turn.")
    expect: Literal["not_lower", "not_higher"] | None = Field(None, description="directional: direction.")
    tolerance: float = Field(0.01, ge=0, description="Prediction change still counted as 'unchanged'.")
    min_pass_rate: float = Field(0.95, ge=0, le=1, description="Share of rows (cases) that must pass.")
    rows: int = Field(1000, ge=1, description="Evaluation rows the perturbation is applied to (seeded sample).")
    cases: list[MinimumCase] = Field(default_factory=list)

    @model_validator(mode="after")
    def _complete(self) -> BehavioralTest:
        if self.kind == "minimum_functionality":
            if not self.cases:
                raise ValueError(f"behavioral test {self.name!r}: minimum_functionality needs 'cases'")
            return self
        if not self.column:
            raise ValueError(f"behavioral test {self.name!r}: {self.kind} needs 'column'")
        changes = sum(x is not None for x in (self.set, self.add, self.values))
        if changes != 1:
            raise ValueError(f"behavioral test {self.name!r}: give exactly one of 'set', 'add', 'values'")
        if self.kind == "directional" and self.expect is None:
            raise ValueError(f"behavioral test {self.name!r}: directional needs expect: not_lower | not_higher")
        return self


class CalibrationCheck(_Strict):
    max_ece: float = Field(0.1, gt=0, le=1, description="Expected calibration error bound (equal-width bins).")
    bins: int = Field(10, ge=2, le=100)
    max_regression: float | None = Field(None, ge=0, description="Tolerated ECE increase vs the champion.")


class LatencyCheck(_Strict):
    batch_size: int = Field(1024, ge=1)
    repeats: int = Field(5, ge=1, le=100, description="Timed batches; the median counts.")
    max_ms: float | None = Field(None, gt=0, description="Bound of the median batch latency, ms.")
    max_ratio: float | None = Field(None, gt=0, description="Bound of challenger / champion latency (same host).")


class BootstrapConfig(_Strict):
    samples: int = Field(200, ge=10, le=10_000)
    confidence: float = Field(0.95, gt=0.5, lt=1)
    seed: int = 0


class GateConfig(_Strict):
    """Champion / challenger gate. See README 'Validation gate'."""

    primary_metric: Literal["roc_auc", "pr_auc", "log_loss", "brier"] = "roc_auc"
    floors: dict[str, float] = Field(default_factory=lambda: {"roc_auc": 0.55})
    max_regression: dict[str, float] = Field(default_factory=lambda: {"roc_auc": 0.005})
    slices: list[SliceCheck] = Field(default_factory=list)
    behavioral: list[BehavioralTest] = Field(default_factory=list)
    calibration: CalibrationCheck | None = None
    latency: LatencyCheck | None = None
    bootstrap: BootstrapConfig = Field(default_factory=lambda: BootstrapConfig())
    model_card: bool = Field(True, description="Write the model card (Markdown + HTML) to MLflow.")
    first_run: Literal["floors", "absolute"] = Field(
        "floors", description="No champion yet: only floors decide (others advisory), or every absolute check."
    )
    approval: bool = Field(False, description="A human approves every promotion (Airflow HITL ApprovalOperator).")
    approval_timeout_hours: float | None = Field(None, gt=0, description="Unanswered approval -> rejected.")
    fail_on_reject: bool = Field(False, description="A rejected challenger fails the DAG run instead of skipping.")
    promote_pool: str | None = Field(
        "mlops_promote_{model}", description="Airflow pool (create it with 1 slot) serializing promotions; null: none."
    )

    @field_validator("floors", "max_regression")
    @classmethod
    def _metrics(cls, v: dict[str, float]) -> dict[str, float]:
        return _known_metrics(v)

    @model_validator(mode="after")
    def _unique_names(self) -> GateConfig:
        names = [t.name for t in self.behavioral]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"behavioral test names must be unique; repeated: {dup}")
        return self

    def check_kwargs(self) -> dict[str, Any]:
        """The checks as plain values: the keyword arguments of ModelGateOperator / ``runtime.gate.evaluate_gate``."""
        return {
            "primary_metric": self.primary_metric,
            "floors": dict(self.floors),
            "max_regression": dict(self.max_regression),
            "slices": [s.model_dump() for s in self.slices],
            "behavioral": [b.model_dump() for b in self.behavioral],
            "calibration": self.calibration.model_dump() if self.calibration else None,
            "latency": self.latency.model_dump() if self.latency else None,
            "bootstrap": self.bootstrap.model_dump(),
        }


class KubernetesTargetConfig(_Strict):
    """``serving.kubernetes``: manifests rendered for the bento image; applied when ``conn_id`` exists."""

    namespace: str = Field("default", description="Namespace of the Deployment / Service / HPA.")
    name: str | None = Field(None, description="Object name; default '<model>-serving'.")
    replicas: int = Field(2, ge=1, description="Replicas (the HPA's minReplicas).")
    max_replicas: int | None = Field(None, ge=1, description="HPA maxReplicas; default 2 x replicas.")
    target_cpu_utilization: int = Field(70, ge=1, le=100, description="HPA CPU target, percent.")
    resources: dict[str, Any] = Field(
        default_factory=lambda: {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
        description="Container resources (requests / limits).",
    )
    image: str | None = Field(None, description="Full image; default '<registry>/<bento tag>' (bentoml containerize).")
    image_registry: str | None = Field(None, description="Registry prefix of the default image.")
    env: dict[str, str] = Field(default_factory=dict, description="Container env (e.g. MLOPS_FEATURE_REPO).")
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    conn_id: str = Field("kubernetes_default", description="cncf.kubernetes connection; render-only when absent.")
    wait: bool = Field(True, description="Wait for the rollout when applied.")
    url: str | None = Field(None, description="Endpoint URL to verify the live version at after the rollout.")


class BentoCloudTargetConfig(_Strict):
    """``serving.bentocloud``: a BentoCloud deployment via BentoML's deployment API."""

    name: str | None = Field(None, description="Deployment name; default '<model>-serving' (dashes).")
    conn_id: str = Field("bentocloud_default", description="Connection: password/extra api_token = API key, "
                         "host = endpoint. Else $BENTO_CLOUD_API_KEY or `bentoml cloud login`.")
    cluster: str | None = None
    scaling_min: int = Field(1, ge=0)
    scaling_max: int = Field(2, ge=1)
    instance_type: str | None = None
    access_authorization: bool = True
    envs: dict[str, str] = Field(default_factory=dict)
    wait_timeout: int = Field(900, ge=0, description="Seconds to wait for the deployment to run; 0: do not wait.")


class InfraValidateConfig(_Strict):
    """``serving.infra_validate``: the bento is served on a free loopback port and checked before deploy."""

    enabled: bool = True
    sample_rows: int = Field(20, ge=0, description="Rows of the evaluation snapshot replayed (plus the input example).")
    tolerance: float = Field(1e-5, ge=0, description="Max |served - registered model| probability difference.")
    latency_budget_ms: float = Field(1000.0, gt=0, description="Budget of the single-row latency quantile.")
    latency_quantile: float = Field(0.95, gt=0, le=1)


class BatchConfig(_Strict):
    """``serving.batch``: an offline scoring DAG ``<model>__batch_predict`` (batch inference pipeline)."""

    source: str = Field(..., description="Parquet file/dir or snapshot dir (local or s3://) to score.")
    output: str = Field(..., description="Output root (local or s3://): <output>/<model>/v<version>/<window>.parquet.")
    schedule: str = Field("@daily", description="Cron of the scoring runs.")
    window_hours: int = Field(24, ge=1, description="Each run scores [run time - window_hours, run time).")
    timestamp_column: str = "event_timestamp"
    alias: str = "champion"


class ServiceLimitsConfig(_Strict):
    """Request limits of the bento service (``serving.limits``); see runtime.serving.service.ServiceLimits."""

    max_batch_rows: int = Field(256, ge=1, le=10_000, description="Rows per /predict request (400 above).")
    max_scoring_rows: int = Field(10_000, ge=1, le=1_000_000, description="Rows per /score_batch request.")
    max_body_bytes: int = Field(2_000_000, ge=1_024, description="Request body limit in bytes (413 above).")
    max_batch_size: int = Field(512, ge=1, description="Adaptive batching: most rows per model call.")
    max_latency_ms: int = Field(3_000, ge=1, description="Adaptive batching: longest queueing before a 503.")


class ExperimentConfig(_Strict):
    """Online experiment (``serving.experiment``): champion + ``@challenger`` in one service."""

    enabled: bool = False
    challenger_alias: str = "challenger"
    mode: Literal["split", "shadow"] = Field("shadow", description="split: the challenger answers `share` of the "
                                             "entities (sticky); shadow: it predicts, the champion answers.")
    share: float = Field(0.01, ge=0.0, le=1.0)
    route_by: list[str] = Field(default_factory=lambda: ["origin", "carrier", "tailnum"], min_length=1)


class ServingConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(3000, ge=1, le=65535)
    ready_timeout: int = Field(180, ge=5)
    smoke_request: dict[str, Any] = Field(default_factory=dict)
    drain_seconds: float = Field(2.0, ge=0, description="local: old server keeps answering this long after the switch.")
    front_port: int | None = Field(None, ge=1, le=65535, description="local: a stable front (reverse proxy) on this "
                                   "port forwards to the live version; callers keep one URL across switches.")
    target: Literal["local", "kubernetes", "bentocloud"] = Field("local", description="Where the deploy DAG deploys.")
    kubernetes: KubernetesTargetConfig = Field(default_factory=lambda: KubernetesTargetConfig())
    bentocloud: BentoCloudTargetConfig = Field(default_factory=lambda: BentoCloudTargetConfig())
    infra_validate: InfraValidateConfig = Field(default_factory=lambda: InfraValidateConfig())
    batch: BatchConfig | None = Field(None, description="Offline batch scoring DAG (absent: no such DAG).")
    limits: ServiceLimitsConfig = Field(default_factory=lambda: ServiceLimitsConfig())
    experiment: ExperimentConfig = Field(default_factory=lambda: ExperimentConfig())
    log_flush_interval_s: float = Field(10.0, ge=0, description="Inference log: seconds between parquet parts.")

    @field_validator("host")
    @classmethod
    def _loopback_default(cls, v: str) -> str:
        if not v:
            raise ValueError("host must not be empty")
        return v


#: Evidently 0.7 per-column drift methods accepted in ``monitoring.drift`` (checked at parse time).
DRIFT_METHODS = (
    "ks", "chisquare", "z", "jensenshannon", "kl_div", "psi", "wasserstein", "anderson", "fisher_exact",
    "cramer_von_mises", "g_test", "hellinger", "mannw", "ed", "es", "t_test", "empirical_mmd", "TVD",
)


class DriftColumnRule(_Strict):
    """Per-feature drift test: an Evidently method and its threshold (None = the method's default)."""

    method: str | None = Field(None, description="Evidently stattest, e.g. ks, psi, wasserstein, jensenshannon.")
    threshold: float | None = Field(None, gt=0, description="p-value (tests) or distance bound (distances).")
    max_unseen_share: float | None = Field(
        None, gt=0, le=1, description="Categorical: share of values never seen in training that alone means drift."
    )

    @field_validator("method")
    @classmethod
    def _known_method(cls, v: str | None) -> str | None:
        if v is not None and v not in DRIFT_METHODS:
            close = difflib.get_close_matches(v, DRIFT_METHODS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown drift method {v!r}{hint}; expected one of {list(DRIFT_METHODS)}")
        return v


class DriftConfig(_Strict):
    """How the monitor tests data drift (EvidentlyDriftOperator). Defaults suit the window size: below
    ``small_window_rows`` hypothesis tests (KS / chi-square), above it Evidently's distances."""

    columns: dict[str, DriftColumnRule] = Field(default_factory=dict, description="Per-feature method/threshold.")
    num_method: str | None = Field(None, description="Default method of numeric features (None = by size).")
    cat_method: str | None = Field(None, description="Default method of categorical features (None = by size).")
    max_unseen_share: float = Field(0.05, gt=0, le=1, description="Unseen-category share that flags a column.")
    critical: list[str] = Field(default_factory=list, description="Features whose drift alone means dataset drift.")
    exclude: list[str] = Field(
        default_factory=list,
        description="Features not tested (e.g. calendar fields a daily window pins to one value: weekday, month).",
    )
    min_drifted_columns: int | None = Field(None, ge=1, description="Dataset drift when at least N columns drift.")
    sample_rows: int = Field(50_000, ge=100, description="Cap of the seeded stratified sample of the window.")
    reference_rows: int = Field(50_000, ge=100, description="Cap of the seeded reference sample.")
    stratify_by: list[str] = Field(default_factory=list, description="Strata besides the UTC day, e.g. [origin].")
    seed: int = 0
    bins: int = Field(20, ge=2, le=1000, description="Quantile bins of the exact streamed PSI per numeric feature.")

    @field_validator("num_method", "cat_method")
    @classmethod
    def _known_default(cls, v: str | None) -> str | None:
        return DriftColumnRule._known_method(v)


class PerformanceConfig(_Strict):
    """Live model quality once delayed labels land (outcomes joined to the inference log)."""

    enabled: bool = True
    label_delay_hours: int = Field(48, ge=0, description="Score the window that ended this long ago.")
    window_hours: int | None = Field(None, ge=1, description="Scored window length; default monitoring.window_hours.")
    join_keys: list[str] = Field(
        default_factory=lambda: ["origin", "carrier", "tailnum", "sched_dep_hour"],
        description="Keys matching a logged request to its outcome (request_id is used when labels carry it).",
    )
    time_tolerance_hours: float | None = Field(
        36.0, gt=0, description="Outcome event must follow the request within this many hours (None: keys only)."
    )
    slices: list[str] = Field(default_factory=lambda: ["origin"], description="Per-slice metrics, e.g. [origin].")
    min_labelled_rows: int = Field(200, ge=1, description="Fewer joined rows: no performance verdict.")
    max_roc_auc_drop: float = Field(0.05, ge=0, description="Live ROC AUC below champion's by more: a trigger.")
    max_log_loss_increase: float = Field(0.05, ge=0, description="Live log loss above champion's by more: a trigger.")
    max_calibration_error: float | None = Field(None, gt=0, le=1, description="ECE above this: a trigger.")
    bootstrap: int = Field(500, ge=50, le=10_000, description="Resamples of the champion/challenger comparison.")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Confidence needed to name a winner.")


class RetrainGuards(_Strict):
    """Guards of automatic (asset-triggered) retraining once a champion exists. The bootstrap and
    manual runs bypass them; the bootstrap does not start the cooldown."""

    enabled: bool = Field(True, description="false: every drift/features event in retrain_on retrains.")
    cooldown_hours: float = Field(24.0, ge=0, description="No automatic retrain within this long of the last one.")
    max_retrains: int = Field(3, ge=1, description="At most this many retrains ...")
    max_retrains_window_hours: float = Field(168.0, gt=0, description="... in any window this long.")
    min_new_labels: int = Field(1000, ge=0, description="Labelled rows newer than the champion's training window.")
    breaker_rejections: int = Field(
        3, ge=0, description="After this many gate rejections in a row a human must approve (0: never)."
    )
    approval_timeout_hours: float | None = Field(
        72.0, gt=0, description="An unanswered approval request declines the retrain after this long."
    )
    state_path: str | None = Field(
        None,
        description="Guard ledger: a local path shared by the workers, or s3://bucket/key.json; "
        "default <home>/state/retrain_guard/<model>.json.",
    )


AlertEvent = Literal["drift", "performance", "circuit_breaker"]


class AlertTarget(_Strict):
    """One alert channel: ``log``, ``email`` (SMTP) or ``webhook`` (Slack-compatible JSON POST)."""

    type: Literal["log", "email", "webhook"]
    events: list[AlertEvent] = Field(
        default_factory=lambda: list[AlertEvent](["drift", "performance", "circuit_breaker"]),
        description="Events this channel receives (not 'on': YAML reads a bare on as true).",
    )
    # email
    to: list[str] = Field(default_factory=list, description="email: recipients.")
    sender: str = Field("airflow-mlops@localhost", description="email: From address.")
    smtp_conn_id: str | None = Field(None, description="email: Airflow SMTP connection (host, port, login, password).")
    smtp_host: str | None = Field(None, description="email: SMTP host when no connection is named.")
    smtp_port: int = Field(25, ge=1, le=65535)
    starttls: bool = False
    # webhook
    url: str | None = Field(None, description="webhook: URL (templated: '{{ var.value.slack_hook }}' keeps it out of git).")
    http_conn_id: str | None = Field(None, description="webhook: Airflow connection whose host/password holds the URL.")
    timeout: float = Field(10.0, gt=0, description="Seconds per delivery attempt.")

    @model_validator(mode="after")
    def _complete(self) -> AlertTarget:
        if self.type == "email" and not self.to:
            raise ValueError("an email alert needs 'to' (a list of recipients)")
        if self.type == "email" and not (self.smtp_conn_id or self.smtp_host):
            raise ValueError("an email alert needs 'smtp_conn_id' or 'smtp_host'")
        if self.type == "webhook" and not (self.url or self.http_conn_id):
            raise ValueError("a webhook alert needs 'url' or 'http_conn_id'")
        return self


class OpsConfig(_Strict):
    """Operational summary of the serving endpoint per monitor window (``/metrics`` + inference log)."""

    enabled: bool = True
    metrics_url: str | None = Field(None, description="Prometheus endpoint; default <deployed url>/metrics.")
    timeout: float = Field(5.0, gt=0, description="Seconds to wait for /metrics.")


class MonitoringConfig(_Strict):
    schedule: str = "@daily"
    window_hours: int = Field(24, ge=1, description="How far back the inference log window reaches.")
    drift_share: float = Field(0.3, gt=0, le=1, description="Share of drifted columns that means drift.")
    min_rows: int = Field(100, ge=1)
    drift: DriftConfig = Field(default_factory=lambda: DriftConfig())
    performance: PerformanceConfig = Field(default_factory=lambda: PerformanceConfig())
    retrain_guards: RetrainGuards = Field(default_factory=lambda: RetrainGuards())
    alerts: list[AlertTarget] = Field(default_factory=list, description="Alert channels (log/email/webhook).")
    ops: OpsConfig = Field(default_factory=lambda: OpsConfig())


class Connections(_Strict):
    aws: str = "aws_default"
    mlflow: str = "mlflow_default"
    feast: str = "feast_default"
    bentoml: str = "bentoml_default"


class PipelineConfig(_Strict):
    """One model's pipeline. See README 'YAML config reference'."""

    model: str = Field(..., description="Registered model name; prefix of the four DAG ids.")
    description: str = ""
    owner: str = "mlops"
    tags: list[str] = Field(default_factory=list)
    home: str | None = Field(None, description="Embedded backends' root; default $MLOPS_HOME.")
    features: FeaturesConfig
    training: TrainingConfig
    gate: GateConfig = Field(default_factory=lambda: GateConfig())
    serving: ServingConfig = Field(default_factory=lambda: ServingConfig())
    monitoring: MonitoringConfig = Field(default_factory=lambda: MonitoringConfig())
    connections: Connections = Field(default_factory=lambda: Connections())

    # Set by load_config, not by users.
    source: str = Field("", exclude=True)

    @field_validator("model")
    @classmethod
    def _model_name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError("use lowercase letters, digits and '_' (it becomes part of DAG ids)")
        return v

    # -- derived values (no I/O) -------------------------------------------------------------
    @property
    def base_dir(self) -> Path:
        return Path(self.source).parent if self.source else Path.cwd()

    @property
    def paths(self) -> ModelPaths:
        return ModelPaths.for_model(self.model, self.home)

    @property
    def repo_path(self) -> str:
        return str((self.base_dir / self.features.repo).resolve())

    @property
    def transform_ref(self) -> str:
        path, _, func = self.features.transform.rpartition(":")
        if path.endswith(".py"):
            return f"{(self.base_dir / path).resolve()}:{func}"
        return self.features.transform

    @property
    def landing_path(self) -> str:
        return self.features.arrival.path or str(self.paths.landing)

    def dag_id(self, kind: str) -> str:
        return f"{self.model}__{kind}"


def _key_of(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "<root>"


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    model: Any = PipelineConfig
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        ann = field.annotation
        model = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if model is None:
            return []
    return list(getattr(model, "model_fields", {}))


def _fix_for(err: Any) -> str:
    kind, loc = err["type"], err["loc"]
    if kind == "extra_forbidden":
        known = [k for k in _fields_at(loc) if k != "source"]
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return f"{hint}remove it or use one of: {', '.join(known)}"
    if kind == "missing":
        return "add this key (see the README's YAML config reference)"
    return f"expected {err['msg'].lower()}; got {err.get('input')!r}"


def _feature_services_in(repo: Path) -> set[str]:
    """FeatureService names declared in the repo's Python files (text scan: no feast import)."""
    found: set[str] = set()
    pattern = re.compile(r"FeatureService\(\s*name\s*=\s*[\"']([^\"']+)[\"']")
    for py in repo.glob("*.py"):
        found.update(pattern.findall(py.read_text(encoding="utf-8", errors="replace")))
    return found


def load_config(path: str | os.PathLike[str]) -> PipelineConfig:
    """Load and validate one pipeline YAML. Raises ConfigError naming file, key and fix."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the config must be a mapping with at least 'model', 'features', 'training'")
    try:
        cfg = PipelineConfig.model_validate({**raw, "source": str(path.resolve())})
    except ValidationError as exc:
        lines = [f"{path}: invalid pipeline config ({exc.error_count()} problem(s)):"]
        for err in exc.errors():
            lines.append(f"  - key '{_key_of(err['loc'])}': {err['msg']} -> fix: {_fix_for(err)}")
        raise ConfigError("\n".join(lines)) from None

    repo = Path(cfg.repo_path)
    if not repo.is_dir():
        raise ConfigError(
            f"{path}: key 'features.repo': Feast repo {repo} does not exist -> fix: point it at the "
            "directory holding feature_store.yaml (relative to the YAML file)"
        )
    services = _feature_services_in(repo)
    if cfg.features.feature_service not in services:
        raise ConfigError(
            f"{path}: key 'features.feature_service': FeatureService '{cfg.features.feature_service}' is not "
            f"defined in {repo} (defined: {sorted(services) or 'none'}) -> fix: use one of those or add it "
            "to the repo's definitions"
        )
    func_path, sep, func = cfg.transform_ref.rpartition(":")
    if not sep or not func:
        raise ConfigError(
            f"{path}: key 'features.transform': expected 'path/to/file.py:function' or 'module:function', "
            f"got {cfg.features.transform!r}"
        )
    if func_path.endswith(".py") and not Path(func_path).is_file():
        raise ConfigError(f"{path}: key 'features.transform': file {func_path} does not exist")
    return cfg


def load_configs(directory: str | os.PathLike[str]) -> list[PipelineConfig]:
    """Every ``*.yaml`` / ``*.yml`` pipeline config in a directory, sorted by file name."""
    directory = Path(directory)
    files = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
    configs = [load_config(f) for f in files]
    seen: dict[str, str] = {}
    for cfg in configs:
        if cfg.model in seen:
            raise ConfigError(
                f"{cfg.source}: key 'model': '{cfg.model}' is also used by {seen[cfg.model]} -> fix: "
                "give every model its own name"
            )
        seen[cfg.model] = cfg.source
    return configs
