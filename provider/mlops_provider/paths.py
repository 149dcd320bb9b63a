"""Where the embedded backends keep their state (light module: standard library only).

Everything the demo and the tests write lives under one *home* directory, ``$MLOPS_HOME``
(default ``./.mlops``). Production deployments point the individual parts elsewhere
(MLflow server, Feast SQL registry, ``s3://`` lake) through connections and the YAML.

Layout::

    <home>/landing/<model>/                 arrivals watched by DataArrivalTrigger
    <home>/lake/<model>/raw/<table>/...     validated raw partitions (month=YYYY-MM.parquet)
    <home>/lake/<model>/offline/<view>/     Feast FileSource data (one parquet per partition)
    <home>/lake/<model>/labels/             entity + label frames (month=YYYY-MM.parquet)
    <home>/feast/                           Feast file registry + SQLite online store
    <home>/mlflow/mlflow.db, artifacts/     MLflow tracking + registry, artifacts
    <home>/bentoml/                         BENTOML_HOME (models, bentos)
    <home>/snapshots/<model>/<hash>/        immutable training snapshots
    <home>/inference_log/<model>/date=.../  JSONL request/prediction log written by the service
    <home>/reports/<model>/                 validation, gate and drift reports
    <home>/state/                           watermarks, deployment state (pid, port)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def mlops_home() -> Path:
    """The embedded backends' root: ``$MLOPS_HOME`` or ``./.mlops``, made absolute."""
    return Path(os.environ.get("MLOPS_HOME", ".mlops")).expanduser().resolve()


@dataclass(frozen=True)
class ModelPaths:
    """Paths of one model under a home directory. Pure path arithmetic, no I/O."""

    home: Path
    model: str

    @classmethod
    def for_model(cls, model: str, home: str | os.PathLike[str] | None = None) -> ModelPaths:
        return cls(Path(home).expanduser().resolve() if home else mlops_home(), model)

    @property
    def landing(self) -> Path:
        return self.home / "landing" / self.model

    @property
    def lake(self) -> Path:
        return self.home / "lake" / self.model

    @property
    def raw(self) -> Path:
        return self.lake / "raw"

    @property
    def offline(self) -> Path:
        return self.lake / "offline"

    @property
    def labels(self) -> Path:
        return self.lake / "labels"

    @property
    def feast(self) -> Path:
        return self.home / "feast"

    @property
    def mlflow(self) -> Path:
        return self.home / "mlflow"

    @property
    def mlflow_tracking_uri(self) -> str:
        return f"sqlite:///{self.mlflow / 'mlflow.db'}"

    @property
    def mlflow_artifacts(self) -> Path:
        return self.mlflow / "artifacts"

    @property
    def bentoml_home(self) -> Path:
        return self.home / "bentoml"

    @property
    def snapshots(self) -> Path:
        return self.home / "snapshots" / self.model

    @property
    def inference_log(self) -> Path:
        return self.home / "inference_log" / self.model

    @property
    def reports(self) -> Path:
        return self.home / "reports" / self.model

    @property
    def state(self) -> Path:
        return self.home / "state"
