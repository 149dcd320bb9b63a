"""Tooling of ``mlops new`` and ``mlops validate``: the templates of a new model and the pre-flight checks of
a pipeline YAML together with its Feast repo.

- :mod:`mlops_provider.scaffold.check`: ``validate_pipeline(yaml) -> Report`` (what ``mlops validate`` runs);
- :mod:`mlops_provider.scaffold.new`: ``render_model(model, task, root)`` (what ``mlops new`` runs), from the
  text templates in ``templates/``.

Light at import (standard library and yaml); Feast, Airflow and pandas are imported inside the functions
(a command line may import heavy libraries, a DAG file may not, and nothing here is imported by one).
"""

from __future__ import annotations

import json


def schema_text() -> str:
    """The JSON Schema of the pipeline YAML, as committed in ``docs/pipeline.schema.json`` (``mlops schema``)."""
    from mlops_provider.config import json_schema

    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"
