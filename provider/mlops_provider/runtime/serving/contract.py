"""The contract of an endpoint, fixed at package time (runtime module).

:func:`service_contract` returns what the bento config bundles besides the model:

- the **request schema**, generated from the model's Feast FeatureService
  (:func:`~mlops_provider.runtime.serving.feature_service.feature_service_info`) and the YAML's
  ``serving.request`` (:func:`~mlops_provider.runtime.serving.request_schema.request_schema`);
- the **task** of the model version (:func:`task_of`: tags ``mlops.task`` / ``mlops.classes`` /
  ``mlops.quantiles``; absent: binary), which shapes the response;
- **sample requests** (:func:`sample_requests`: rows of the version's evaluation snapshot projected on the
  schema): the warm-up and the default smoke request;
- the YAML's smoke request, validated against the schema here, so a bad one fails the package task.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlops_provider.exceptions import ConfigError
from mlops_provider.runtime.io.objstore import ObjectStore
from mlops_provider.runtime.serving.request_schema import spec_value

log = logging.getLogger(__name__)


def task_of(mv: Any, client: Any = None) -> Any:
    """The :class:`~mlops_provider.runtime.serving.schema.TaskInfo` of model version ``mv``: its tags
    ``mlops.task`` / ``mlops.classes`` / ``mlops.quantiles`` (else the training run's tags); absent: binary."""
    from mlops_provider.runtime.serving.schema import TaskInfo

    tags = dict(getattr(mv, "tags", None) or {})
    if "mlops.task" not in tags and client is not None and getattr(mv, "run_id", None):
        try:
            run_tags = dict(client.get_run(mv.run_id).data.tags or {})
        except Exception:  # noqa: BLE001 - a deleted run: the version's own tags decide
            run_tags = {}
        tags = {**{k: v for k, v in run_tags.items() if k.startswith("mlops.")}, **tags}
    return TaskInfo.from_tags(tags)


def sample_requests(
    snapshot: str | None, schema: Mapping[str, Any], rows: int, store: ObjectStore | None = None,
    *, prefix: str = "", event_time: bool = False,
) -> list[dict[str, Any]]:
    """Requests of ``schema`` projected from a deterministic sample of the snapshot's evaluation split
    (else validation, else all rows); [] without a readable snapshot."""
    from mlops_provider.runtime.serving.request_schema import project_requests

    if not snapshot or rows <= 0:
        return []
    try:
        sample = evaluation_sample(snapshot, rows * 4, store)
    except Exception as e:  # noqa: BLE001 - warm-up and smoke fall back to the schema's examples
        log.warning("Cannot read the evaluation snapshot %s for sample requests: %s", snapshot, e)
        return []
    if sample is None:
        return []
    reqs, _ = project_requests(sample.to_dict(orient="records"), schema, prefix=prefix, event_time=event_time)
    return reqs[:rows]


def evaluation_sample(snapshot: str, rows: int, store: ObjectStore | None = None) -> Any | None:
    """A deterministic sample of ``rows`` rows of the snapshot's evaluation split (else its validation split,
    else all rows) as a DataFrame; None when empty."""
    from mlops_provider.runtime.features.snapshot import load_snapshot

    df, _ = load_snapshot(snapshot, verify=False, store=store)
    if "split" in df.columns:
        for split in ("evaluation", "validation"):
            if (df["split"] == split).any():
                df = df[df["split"] == split]
                break
    if df.empty:
        return None
    return df.sample(n=min(rows, len(df)), random_state=0).reset_index(drop=True)


def service_contract(
    *,
    model_name: str,
    feature_repo: str | os.PathLike[str],
    feature_store_yaml: str = "feature_store.yaml",
    feature_service: str,
    serving: Any = None,
    task: Any = None,
    snapshot: str | None = None,
    store: ObjectStore | None = None,
    feature_store: Any = None,
) -> dict[str, Any]:
    """Request schema, task, sample requests and the validated smoke request of a bento (module docstring).

    ``serving``: the YAML's ``serving`` (a :class:`~mlops_provider.specs.ServingSpec` or a dict; None:
    defaults). Raises :class:`~mlops_provider.exceptions.ConfigError` naming what does not fit.
    """
    from pydantic import ValidationError

    from mlops_provider.runtime.serving.feature_service import feature_service_info
    from mlops_provider.runtime.serving.request_schema import check_request, example_request, request_schema
    from mlops_provider.runtime.serving.schema import TaskInfo, build_models, validate_request

    if feature_store is None:
        import feast

        feature_store = feast.FeatureStore(
            repo_path=str(feature_repo), fs_yaml_file=Path(feature_repo) / feature_store_yaml
        )
    info = feature_service_info(feature_store, feature_service, model=model_name)
    schema = request_schema({**info, "model": model_name}, serving)
    task = task or TaskInfo()
    try:
        models = build_models(schema, task)
    except Exception as e:  # noqa: BLE001 - e.g. a pattern the service's regex engine does not support
        raise ConfigError(f"serving.request: the request model cannot be built: {e}") from e
    samples = sample_requests(snapshot, schema, int(spec_value(serving, "sample_requests", 8) or 8), store)
    smoke = dict(spec_value(serving, "smoke_request") or {})
    if smoke:
        problems = check_request(smoke, schema)
        if not problems:
            try:
                validate_request(models, smoke)
            except ValidationError as e:
                problems = [f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]
        if problems:
            raise ConfigError(
                f"serving.smoke_request does not fit the request schema of {model_name} (generated from feature "
                f"service {feature_service!r}): {'; '.join(problems)}. Fields: "
                f"{[f['name'] for f in schema['fields']]}."
            )
    else:
        smoke = dict(samples[0]) if samples else (example_request(schema) or {})
    return {"request_schema": schema, "feature_service_info": info, "sample_requests": samples,
            "smoke_request": smoke or None, "task": task.model_dump()}
