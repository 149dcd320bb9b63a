"""Four DAGs (features, training, deploy, monitor) for every pipeline YAML in this folder.

Drop ``<model>.yaml`` beside this file; see the README's YAML config reference.
The Airflow DAG processor picks it up like any DAG file (it mentions "airflow" and "dag").
Parse-safe: only the Task SDK, pydantic and the provider's light modules are imported.
"""

from __future__ import annotations

from pathlib import Path

from mlops_provider.factory import dags_from_directory

globals().update(dags_from_directory(Path(__file__).parent))
