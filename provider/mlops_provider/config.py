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


class GateConfig(_Strict):
    primary_metric: Literal["roc_auc", "log_loss"] = "roc_auc"
    floors: dict[str, float] = Field(default_factory=lambda: {"roc_auc": 0.55})
    max_regression: dict[str, float] = Field(default_factory=lambda: {"roc_auc": 0.005})


class ServingConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(3000, ge=1, le=65535)
    ready_timeout: int = Field(180, ge=5)
    smoke_request: dict[str, Any] = Field(default_factory=dict)

    @field_validator("host")
    @classmethod
    def _loopback_default(cls, v: str) -> str:
        if not v:
            raise ValueError("host must not be empty")
        return v


class MonitoringConfig(_Strict):
    schedule: str = "@daily"
    window_hours: int = Field(24, ge=1, description="How far back the inference log window reaches.")
    drift_share: float = Field(0.3, gt=0, le=1, description="Share of drifted columns that means drift.")
    min_rows: int = Field(100, ge=1)


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
