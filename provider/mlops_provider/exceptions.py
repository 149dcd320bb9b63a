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
