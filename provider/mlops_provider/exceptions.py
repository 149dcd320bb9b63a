"""One exception hierarchy for the provider.

Every error a user can cause raises a subclass of :class:`MlopsError` whose message says
what was wrong, where, and what to do. Airflow shows the message in the task log; nothing
downstream runs and nothing is promoted.
"""

from __future__ import annotations

from typing import Any


class MlopsError(Exception):
    """Base class of every error raised by airflow-provider-mlops."""


class ConfigError(MlopsError):
    """A pipeline YAML config is invalid (unknown key, wrong type, missing reference)."""


class MissingDependencyError(MlopsError, ImportError):
    """An optional backend is not installed; the message names the ``pip install`` to run."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"{package} is not installed. Install it with: pip install 'airflow-provider-mlops[{extra}]'"
        )
        self.package = package
        self.extra = extra


class DataValidationError(MlopsError):
    """Data broke its contract. ``failures`` lists every violated rule with counts and examples."""

    def __init__(self, message: str, failures: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.failures = failures or []


class FeatureStoreError(MlopsError):
    """Feast repo invalid, feature service missing, or materialization failed."""


class TrainingError(MlopsError):
    """Training could not produce a usable model (bad snapshot, diverged loss, NaN outputs)."""


class LabelError(TrainingError):
    """The label column does not fit ``training.task`` (binary: 0/1 or bool; multiclass: the declared classes,
    at least 3; regression: finite numbers). The message names the offending values and the fix."""


class SanityCheckError(TrainingError):
    """The cheap pre-training sanity step failed; the expensive run never started."""


class GateRejected(MlopsError):
    """The challenger failed the validation gate. ``verdict`` carries every check."""

    def __init__(self, message: str, verdict: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.verdict = verdict or {}


class ModelRegistryError(MlopsError):
    """Model version / alias missing or inconsistent in the MLflow registry."""


class DeploymentError(MlopsError):
    """Packaging, serving, readiness or smoke test of a bento failed; the champion keeps serving."""


class DriftError(MlopsError):
    """Drift monitoring could not run (e.g. the reference snapshot no longer exists)."""


class ReferenceSnapshotMissingError(DriftError):
    """The training snapshot the champion's lineage points to (drift reference) no longer exists."""


class MonitoredFeatureMissingError(DriftError):
    """A feature the model YAML monitors is absent from the inference log window or the reference."""


class NothingToMonitorError(ModelRegistryError):
    """The monitored alias (``@champion``) does not exist yet: before the first promotion there is
    nothing to monitor (the monitor task skips)."""


class InfraValidationError(DeploymentError):
    """A bento failed infra validation on loopback (readiness, response schema, parity with the
    registered model, latency budget). ``report`` carries every check; nothing was deployed."""

    def __init__(self, message: str, report: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.report = report or {}


class LiveVersionMismatch(DeploymentError):
    """After a deploy the endpoint reports another version than the one deployed (a silent rollback).
    ``live`` is what the endpoint reported."""

    def __init__(self, message: str, live: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.live = live or {}


class BentoCloudNotConfigured(DeploymentError):
    """Deployment target ``bentocloud`` without BentoCloud credentials (connection, env or CLI login)."""


class ContainerEngineUnavailable(DeploymentError):
    """``bentoml containerize`` needs a Docker (or compatible) engine and none answers here."""


class BatchPredictionError(MlopsError):
    """Offline scoring could not run (source missing, columns missing, model output invalid)."""


class RetrainGuardStateError(MlopsError):
    """The durable state of the retraining guards (cooldown, dedupe, rate, breaker) is unreadable."""


class AlertDeliveryError(MlopsError):
    """An alert (email / webhook) could not be delivered; raised only by notifiers set to raise_on_error."""


class GateInputError(MlopsError):
    """The gate cannot judge: its evaluation set or configuration is unusable (no evaluation split, a
    declared slice with no rows, an unknown column). Nothing is promoted."""


class EvaluationLeakageError(GateInputError):
    """The evaluation window overlaps the challenger's training window: its scores would be inflated."""


class SignatureMismatchError(ModelRegistryError):
    """Challenger and champion take different inputs: no automatic comparison; a human decides
    (force-promote DAG) after checking the serving path."""


class PromotionConflictError(ModelRegistryError):
    """@champion moved since the gate judged the challenger (a concurrent promotion); re-run the gate."""


class ManualActionError(MlopsError):
    """A force-promote / rollback request is incomplete (no reason, unknown version, nothing to roll back to)."""
