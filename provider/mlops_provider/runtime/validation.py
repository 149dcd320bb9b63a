"""Compatibility name: feature-repo transforms written before 0.2 import landing helpers from
``mlops_provider.runtime.validation``. They keep working; new code imports
``mlops_provider.runtime.features.contracts`` (same functions)."""

from mlops_provider.runtime.features.contracts import (  # noqa: F401 - re-exported for user transforms
    file_format,
    read_landed,
    table_for_file,
    validate_files,
    validate_frame,
)
