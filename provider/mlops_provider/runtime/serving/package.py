"""Package an MLflow model version into a serving bento (runtime module).

Packaging (:func:`package_bento`) is idempotent by key:

- the BentoML model tag is derived from the MLflow model version (``<model>:v3``); the store is
  checked first, so the model is imported once per version;
- the bento tag is ``<model>_service:v<version>-<hash>`` where the hash covers the service config,
  the bundled source code (:data:`BUNDLED`), the requirements and the BentoML version; an existing
  bento with that tag is reused, so a re-run builds nothing.

The bento serves :data:`SERVICE_IMPORT` with its config in ``src/bento_config.json``
(:func:`bento_config` reads it back). :func:`bentoml_home` points BentoML's stores at a directory
for one block, so one process can package into different homes.

Packaging also fixes the endpoint's contract
(:func:`~mlops_provider.runtime.serving.contract.service_contract`: request schema, task, sample requests,
the validated smoke request), bundled in the config.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from mlops_provider.exceptions import DeploymentError, ModelRegistryError
from mlops_provider.runtime.io.objstore import ObjectStore
from mlops_provider.runtime.serving.contract import sample_requests, service_contract, task_of
from mlops_provider.runtime.serving.request_schema import spec_value
from mlops_provider.runtime.serving.schema import CONFIG_FILE

log = logging.getLogger(__name__)

SERVICE_IMPORT = "mlops_provider.runtime.serving.service:ModelService"
#: Distributions the service itself imports; pinned to the versions installed here.
SERVING_DISTRIBUTIONS = ("bentoml", "mlflow", "feast", "pandas", "numpy", "pyarrow", "pydantic")

__all__ = [
    "BUNDLED", "CONFIG_FILE", "SERVICE_IMPORT", "bento_config", "bentoml_home", "import_model_version",
    "package_bento", "pinned_requirements", "resolve_model_version", "safe_name", "sample_requests",
    "service_contract", "task_of",
]


def safe_name(name: str) -> str:
    """A BentoML tag name part (lowercase alnum, ``-``, ``_``, ``.``)."""
    s = re.sub(r"[^a-z0-9_.-]+", "_", name.lower()).strip("_.-")
    if not s:
        raise DeploymentError(f"Cannot derive a BentoML tag name from {name!r}")
    return s


@contextlib.contextmanager
def bentoml_home(path: str | os.PathLike[str] | None) -> Iterator[None]:
    """Point BentoML's model and bento stores at ``path`` for this block (in-process).

    BentoML resolves ``$BENTOML_HOME`` once per process; patching the DI container lets one
    process (a test session, a long-lived worker) package into different homes.
    """
    if path is None:
        yield
        return
    from bentoml._internal.bento import BentoStore
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.models import ModelStore

    home = Path(path).expanduser().resolve()
    for sub in ("models", "bentos", "tmp", "envs"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    c = BentoMLContainer
    with contextlib.ExitStack() as stack:
        stack.enter_context(c.bentoml_home.patch(str(home)))
        stack.enter_context(c.model_store_dir.patch(str(home / "models")))
        stack.enter_context(c.bento_store_dir.patch(str(home / "bentos")))
        stack.enter_context(c.tmp_bento_store_dir.patch(str(home / "tmp")))
        stack.enter_context(c.env_store_dir.patch(str(home / "envs")))
        stack.enter_context(c.model_store.patch(ModelStore(str(home / "models"))))
        stack.enter_context(c.bento_store.patch(BentoStore(str(home / "bentos"))))
        stack.enter_context(c.tmp_bento_store.patch(BentoStore(str(home / "tmp"))))
        yield


def pinned_requirements(extra: list[str] | None = None) -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    reqs: dict[str, str] = {}
    for dist in SERVING_DISTRIBUTIONS:
        try:
            reqs[dist.lower()] = f"{dist}=={version(dist)}"
        except PackageNotFoundError:
            continue
    for line in extra or []:
        line = line.strip()
        if not line or line.startswith(("#", "-")):
            continue
        name = re.split(r"[<>=!~;\[ @]", line, maxsplit=1)[0].strip().lower()
        if name == line.lower():  # unpinned in the model's list: pin what is installed here
            with contextlib.suppress(PackageNotFoundError):
                line = f"{line}=={version(line)}"
        reqs.setdefault(name, line)  # serving pins win over the model's own list
    return sorted(reqs.values())


#: Parts of the mlops_provider package bundled into the bento: what the service (and a pyfunc built
#: on mlops_provider.runtime) imports: the runtime and the light modules the layering rules let it import
#: (paths, exceptions, tasks: metric names, specs (+ search_space): the stage specs). Operators, hooks, DAG
#: code are left out, so editing them does not change the bento hash.
BUNDLED = ("__init__.py", "paths.py", "exceptions.py", "tasks.py", "specs.py", "search_space.py", "runtime")


#: Folder of the bento's ``src/`` holding the Feast repo configuration (``feature_store*.yaml``).
BUNDLED_REPO = "feature_repo"
#: Environment variables the serving environment sets when the feast connection carries secrets: a password
#: inside a URL of its overrides (e.g. the SQL registry's) and the connection password (the Redis online
#: store's). The bundled Feast YAML names them as ``${VAR}``; Feast substitutes them when the service opens it.
FEAST_PASSWORD_ENV = "MLOPS_FEAST_PASSWORD"
FEAST_ONLINE_STORE_PASSWORD_ENV = "MLOPS_FEAST_ONLINE_STORE_PASSWORD"
_URL_PASSWORD = re.compile(r"(://[^/:@\s]+:)([^@\s]+)(@)")


def _bundle_connection(config_file: Path, overrides: Mapping[str, Any] | None,
                       online_store_password: str | None) -> list[str]:
    """Apply the feast connection's overrides (registry, online store) to the bundled YAML, so the served
    process reads the registry and online store the tasks use. No secret enters the bento: a password in a
    URL and the connection password become ``${VAR}`` references. Returns the variables the serving
    environment must set."""
    import yaml

    from mlops_provider.runtime.features.store import deep_merge

    data = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
    data = deep_merge(data, dict(overrides or {}))
    needed: list[str] = []

    def scrub(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: scrub(v) for k, v in node.items()}
        if isinstance(node, list):
            return [scrub(v) for v in node]
        if isinstance(node, str):
            match = _URL_PASSWORD.search(node)
            if match and not match.group(2).startswith("${"):
                needed.append(FEAST_PASSWORD_ENV)
                return _URL_PASSWORD.sub(rf"\g<1>${{{FEAST_PASSWORD_ENV}}}\g<3>", node)
        return node

    data = scrub(data)
    online = data.get("online_store")
    if online_store_password and isinstance(online, dict) and online.get("type") == "redis":
        conn_str = str(online.get("connection_string") or "")
        if "password=" not in conn_str:
            online["connection_string"] = f"{conn_str},password=${{{FEAST_ONLINE_STORE_PASSWORD_ENV}}}"
            needed.append(FEAST_ONLINE_STORE_PASSWORD_ENV)
    config_file.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return sorted(set(needed))


def _stage_feature_repo(stage: Path, feature_repo: str | os.PathLike[str], yaml_name: str,
                        overrides: Mapping[str, Any] | None = None, online_store_password: str | None = None) -> None:
    """Copy the repo's Feast YAML files into ``stage/feature_repo``. A served process needs only these:
    the definitions (on-demand transformations included) are read from the registry the YAML names. The
    feast connection's overrides are applied to the YAML the service opens (:func:`_bundle_connection`)."""
    repo = Path(feature_repo).expanduser().resolve()
    if not (repo / yaml_name).is_file():
        raise DeploymentError(
            f"Feast config {repo / yaml_name} not found: the feast connection's fs_yaml_file must name a YAML "
            f"in the model's feature repo ({sorted(p.name for p in repo.glob('*.y*ml'))} there)"
        )
    dst = stage / BUNDLED_REPO
    dst.mkdir(parents=True, exist_ok=True)
    for src in sorted([*repo.glob("*.yaml"), *repo.glob("*.yml")]):
        shutil.copy2(src, dst / src.name)
    if overrides or online_store_password:
        needed = _bundle_connection(dst / yaml_name, overrides, online_store_password)
        if needed:
            log.info("the bento's Feast config takes its secrets from the serving environment: set %s there "
                     "(the manifests' env, or the environment of the serving host)", ", ".join(needed))
    bound = _bind_relative_paths(dst / yaml_name, repo)
    if bound:
        log.warning(
            "Feast config %s names relative local path(s) %s: bundled as absolute paths of this host, so the "
            "bento serves only here. A portable bento takes its registry / online store from remote backends "
            "or from the environment (${VAR} in the YAML).", repo / yaml_name, bound,
        )


def _is_local_relative(path: Any) -> bool:
    text = str(path or "")
    return bool(text) and "://" not in text and not text.startswith(("$", "/", "~")) and ":" not in text[:3]


def _bind_relative_paths(config_file: Path, repo: Path) -> list[str]:
    """Feast resolves a relative registry / online-store path against the repo folder; inside a bento that
    folder holds only the YAML. Make such paths absolute (host paths) in the bundled copy; return them."""
    import yaml

    data = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
    bound: list[str] = []
    registry = data.get("registry")
    if isinstance(registry, str) and _is_local_relative(registry):
        bound.append(registry)
        data["registry"] = str((repo / registry).resolve())
    elif isinstance(registry, dict) and _is_local_relative(registry.get("path")):
        bound.append(str(registry["path"]))
        registry["path"] = str((repo / registry["path"]).resolve())
    online = data.get("online_store")
    if isinstance(online, dict) and online.get("path") and _is_local_relative(online["path"]):
        bound.append(str(online["path"]))
        online["path"] = str((repo / online["path"]).resolve())
    if bound:
        config_file.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return bound


def _stage_sources(stage: Path, config: Mapping[str, Any]) -> None:
    """Copy the bundled part of mlops_provider (python files only) and the config into ``stage``."""
    import mlops_provider

    pkg = Path(mlops_provider.__file__).resolve().parent
    dst = stage / "mlops_provider"
    dst.mkdir(parents=True)
    for name in BUNDLED:
        src = pkg / name
        if src.is_dir():
            shutil.copytree(
                src,
                dst / name,
                ignore=lambda d, names: [
                    n for n in names if n == "__pycache__" or (Path(d, n).is_file() and not n.endswith(".py"))
                ],
            )
        elif src.is_file():
            shutil.copy2(src, dst / name)
    (stage / CONFIG_FILE).write_text(json.dumps(dict(config), indent=2, sort_keys=True), encoding="utf-8")


def _hash_tree(stage: Path, exclude: set[str]) -> str:
    h = hashlib.sha256()
    for p in sorted(stage.rglob("*")):
        rel = p.relative_to(stage).as_posix()
        if p.is_file() and rel not in exclude:
            h.update(rel.encode())
            h.update(b"\0")
            h.update(p.read_bytes())
            h.update(b"\0")
    return h.hexdigest()


# ---------------------------------------------------------------------------- packaging
def resolve_model_version(model_name: str, alias: str, client: Any) -> Any:
    """The MLflow ModelVersion behind ``models:/<model_name>@<alias>``."""
    try:
        return client.get_model_version_by_alias(model_name, alias)
    except Exception as e:  # noqa: BLE001 - MlflowException has no finer class for "not found"
        raise ModelRegistryError(
            f"MLflow has no model version {model_name}@{alias} ({e}). Train and promote a model first "
            f"(the gate sets @{alias}), or pass another alias."
        ) from e


def import_model_version(model_name: str, mv: Any) -> tuple[str, bool]:
    """Import MLflow version ``mv`` into the BentoML store as ``<model>:v<version>``; (tag, created)."""
    import bentoml
    from bentoml.exceptions import BentoMLException, NotFound

    tag = f"{safe_name(model_name)}:v{mv.version}"
    try:
        existing = bentoml.models.get(tag)
    except NotFound:
        existing = None
    if existing is not None:
        have = existing.info.labels.get("mlflow_run_id", "")
        if mv.run_id and have and have != mv.run_id:
            raise DeploymentError(
                f"BentoML model {tag} was imported from MLflow run {have}, but {model_name} version "
                f"{mv.version} now comes from run {mv.run_id} (the MLflow store was reset?). Delete the "
                f"stale model with `bentoml models delete {tag}` (BENTOML_HOME) and re-run."
            )
        log.info("BentoML model %s already in the store; not importing again", tag)
        return tag, False
    uri = f"models:/{model_name}/{mv.version}"  # pinned version: the alias may move meanwhile
    log.info("Importing %s into the BentoML store as %s", uri, tag)
    try:
        bentoml.mlflow.import_model(
            tag,
            uri,
            signatures={"predict": {"batchable": True}},
            labels={
                "mlflow_model": safe_name(model_name),
                "mlflow_version": str(mv.version),
                "mlflow_run_id": str(mv.run_id or ""),
            },
            metadata={"mlflow_source": str(mv.source or ""), "mlflow_model_name": model_name},
        )
    except BentoMLException as e:
        # a concurrent packager won the race: use its copy
        try:
            bentoml.models.get(tag)
        except NotFound:
            raise DeploymentError(f"Importing {uri} into BentoML failed: {e}") from e
        return tag, False
    return tag, True


def package_bento(
    model_name: str,
    alias: str = "champion",
    mlflow_tracking_uri: str | None = None,
    feature_repo: str | os.PathLike[str] = "",
    feature_service: str = "",
    features: Mapping[str, list[str]] | None = None,
    inference_log_dir: str | os.PathLike[str] = "",
    *,
    mlflow_registry_uri: str | None = None,
    bentoml_home_dir: str | os.PathLike[str] | None = None,
    request_fields: list[str] | None = None,
    threshold: float | None = None,
    challenger_alias: str | None = None,
    experiment: Mapping[str, Any] | None = None,
    limits: Mapping[str, Any] | None = None,
    log_flush_interval_s: float | None = None,
    log_flush_rows: int | None = None,
    serving: Any = None,
    snapshot: str | None = None,
    store: ObjectStore | None = None,
    feature_store_yaml: str | None = None,
    feast_overrides: Mapping[str, Any] | None = None,
    feast_online_store_password: str | None = None,
    feature_store: Any = None,
) -> dict[str, Any]:
    """Import ``models:/<model_name>@<alias>`` and build the serving bento (idempotent).

    The bento is self-contained: it bundles the feature repo's Feast YAML files (``src/feature_repo/``;
    ``feature_store_yaml`` names the one the service opens, default ``feature_store.yaml``: the feast
    connection's ``fs_yaml_file``) and records no host path but the inference log's root, which the
    serving environment overrides (``MLOPS_INFERENCE_LOG_DIR``). Hosts and secrets of the backends come
    from the served process's environment through Feast's ``${VAR}`` substitution in that YAML.
    ``feast_overrides`` / ``feast_online_store_password`` (the feast connection's ``store_settings``) are
    applied to the bundled YAML, secrets as ``${MLOPS_FEAST_PASSWORD}`` /
    ``${MLOPS_FEAST_ONLINE_STORE_PASSWORD}``; ``feature_store``: the store the request schema is read from
    (default: opened from the repo's YAML alone).

    ``features`` = ``{"categorical": [...], "numeric": [...]}`` (the YAML's ``model.features``).
    ``serving``: the YAML's ``serving`` section (:class:`~mlops_provider.specs.ServingSpec` or a dict):
    request limits, threshold, workers, stale-feature policy, smoke request; the explicit ``threshold`` /
    ``limits`` / ``experiment`` / ``log_flush_interval_s`` arguments win over it. The request schema
    comes from the feature service (``request_fields`` is no longer used). ``snapshot``: the evaluation
    snapshot the sample requests come from (default: the version's ``snapshot_path`` tag), read through
    ``store`` when it is on ``s3://``.
    With ``challenger_alias`` (e.g. ``"challenger"``) the bento also holds that model version and
    runs an online experiment: ``experiment`` = ``{"mode": "shadow" | "split", "share": 0.01,
    "route_by": [...], "name": ...}`` (see :mod:`mlops_provider.runtime.serving.experiments`; default
    route_by: the entity join keys); when the alias points at the champion's own version no experiment
    is configured. ``limits`` overrides :class:`~mlops_provider.runtime.serving.schema.ServiceLimits` fields.
    Returns ``{"bento_tag", "model_tag", "model_version", "mlflow_run_id", "bento_created",
    "model_created", "challenger", "smoke_request", "task", "request_model"}`` (``challenger`` =
    ``{"model_tag", "model_version", "mode", "share"}`` or None).
    """
    import bentoml
    from bentoml.exceptions import NotFound
    from mlflow import MlflowClient

    feats = dict(features or {})
    if not feats.get("categorical") and not feats.get("numeric"):
        raise DeploymentError(
            "package_bento needs features={'categorical': [...], 'numeric': [...]} (the model's raw columns)"
        )
    if not feature_repo or not feature_service or not inference_log_dir:
        raise DeploymentError("package_bento needs feature_repo, feature_service and inference_log_dir")
    if request_fields is not None:
        log.info("request_fields=%s is ignored: the request schema comes from feature service %s",
                 request_fields, feature_service)
    client = MlflowClient(tracking_uri=mlflow_tracking_uri, registry_uri=mlflow_registry_uri or mlflow_tracking_uri)
    mv = resolve_model_version(model_name, alias, client)
    task = task_of(mv, client)
    yaml_name = feature_store_yaml or "feature_store.yaml"
    contract = service_contract(
        model_name=model_name, feature_repo=feature_repo, feature_store_yaml=yaml_name,
        feature_service=feature_service, serving=serving,
        task=task, snapshot=snapshot or (getattr(mv, "tags", None) or {}).get("snapshot_path"), store=store,
        feature_store=feature_store,
    )
    exp_spec = spec_value(serving, "experiment")
    if experiment is None and exp_spec is not None:
        experiment = {k: spec_value(exp_spec, k) for k in ("mode", "share", "route_by") if spec_value(exp_spec, k) is not None}

    challenger_mv = None
    if challenger_alias:
        challenger_mv = resolve_model_version(model_name, challenger_alias, client)
        if str(challenger_mv.version) == str(mv.version):
            log.info(
                "%s@%s is the champion's version %s: no experiment", model_name, challenger_alias, mv.version
            )
            challenger_mv = None
    log_dir = str(inference_log_dir)
    if not log_dir.startswith("s3://"):
        log_dir = str(Path(inference_log_dir).expanduser().resolve())

    with bentoml_home(bentoml_home_dir):
        model_tag, model_created = import_model_version(model_name, mv)
        model_reqs: list[str] = []
        models: list[Any] = [model_tag]
        experiment_cfg: dict[str, Any] | None = None
        if challenger_mv is not None:
            challenger_tag, _ = import_model_version(model_name, challenger_mv)
            models.append(challenger_tag)
            experiment_cfg = {
                "mode": "shadow",
                **{k: v for k, v in dict(experiment or {}).items() if v is not None},
                "challenger_tag": challenger_tag,
                "challenger_version": str(challenger_mv.version),
            }
            if not experiment_cfg.get("route_by"):
                experiment_cfg["route_by"] = list(contract["request_schema"]["entity_keys"])
            from mlops_provider.runtime.serving.experiments import ExperimentSpec

            experiment_cfg = ExperimentSpec.model_validate(experiment_cfg).model_dump()
        for tag in models:
            req_file = Path(bentoml.models.get(tag).path_of("mlflow_model")) / "requirements.txt"
            model_reqs += req_file.read_text().splitlines() if req_file.is_file() else []
        if log_dir.startswith("s3://"):
            model_reqs.append("boto3")
        requirements = pinned_requirements(model_reqs)
        from mlops_provider.runtime.serving.schema import ServiceLimits

        spec_limits = spec_value(serving, "limits")
        limits_in = dict(spec_limits.model_dump() if hasattr(spec_limits, "model_dump") else spec_limits or {})
        limits_in.update(dict(limits or {}))
        service_limits = ServiceLimits.model_validate(limits_in).model_dump()
        if threshold is None:
            threshold = float(spec_value(serving, "threshold", 0.5))
        if log_flush_interval_s is None and spec_value(serving, "log_flush_interval_s") is not None:
            log_flush_interval_s = float(spec_value(serving, "log_flush_interval_s"))

        config: dict[str, Any] = {
            "model_name": model_name,
            "model_tag": model_tag,
            "model_version": str(mv.version),
            "mlflow_run_id": str(mv.run_id or ""),
            "alias": alias,
            "feature_repo": BUNDLED_REPO,  # relative: src/feature_repo of the bento
            "feature_store_yaml": yaml_name,
            "feature_service": feature_service,
            "categorical": list(feats.get("categorical") or []),
            "numeric": list(feats.get("numeric") or []),
            "request_schema": contract["request_schema"],
            "task": contract["task"],
            "sample_requests": contract["sample_requests"],
            "smoke_request": contract["smoke_request"],
            "inference_log_dir": log_dir,
            "threshold": float(threshold),
            "limits": service_limits,
            "experiment": experiment_cfg,
            "workers": int(spec_value(serving, "workers", 1) or 1),
            "stale_features": str(spec_value(serving, "stale_features", "impute") or "impute"),
        }
        if log_flush_interval_s is not None:
            config["log_flush_interval_s"] = float(log_flush_interval_s)
        if log_flush_rows is not None:
            config["log_flush_rows"] = int(log_flush_rows)
        bento_name = f"{safe_name(model_name)}_service"
        with tempfile.TemporaryDirectory(prefix="mlops-bento-") as tmp:
            stage = Path(tmp)
            _stage_sources(stage, config)
            _stage_feature_repo(stage, feature_repo, yaml_name, feast_overrides, feast_online_store_password)
            h = hashlib.sha256()
            h.update(_hash_tree(stage, exclude=set()).encode())
            h.update(json.dumps(requirements).encode())
            h.update(bentoml.__version__.encode())
            bento_tag = f"{bento_name}:v{mv.version}-{h.hexdigest()[:12]}"
            try:
                bentoml.bentos.get(bento_tag)
                log.info("Bento %s already built; nothing to do", bento_tag)
                bento_created = False
            except NotFound:
                config["bento_tag"] = bento_tag  # not part of the hash (it is the hash)
                (stage / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
                log.info("Building bento %s (model %s, %d requirements)", bento_tag, model_tag, len(requirements))
                bento = bentoml.build(
                    SERVICE_IMPORT,
                    name=bento_name,
                    version=bento_tag.split(":", 1)[1],
                    build_ctx=str(stage),
                    include=["mlops_provider/**/*.py", CONFIG_FILE, f"{BUNDLED_REPO}/*.yaml", f"{BUNDLED_REPO}/*.yml"],
                    models=models,
                    labels={
                        "model": safe_name(model_name),
                        "mlflow_version": str(mv.version),
                        "alias": safe_name(alias),
                    },
                    description=f"{model_name} v{mv.version} served with feature service {feature_service}",
                    python={"packages": requirements, "lock_packages": False},
                )
                bento_tag = str(bento.tag)
                bento_created = True
    return {
        "bento_tag": bento_tag,
        "model_tag": model_tag,
        "model_version": str(mv.version),
        "mlflow_run_id": str(mv.run_id or ""),
        "bento_created": bento_created,
        "model_created": model_created,
        "smoke_request": contract["smoke_request"],
        "task": contract["task"]["type"],
        "request_model": contract["request_schema"]["request_model"],
        "challenger": (
            {
                "model_tag": experiment_cfg["challenger_tag"],
                "model_version": experiment_cfg["challenger_version"],
                "mode": experiment_cfg["mode"],
                "share": experiment_cfg["share"],
            }
            if experiment_cfg
            else None
        ),
    }


def bento_config(bento_tag: str, bentoml_home_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The service config bundled in a bento (``src/bento_config.json``, written by :func:`package_bento`)."""
    import bentoml
    from bentoml.exceptions import NotFound

    with bentoml_home(bentoml_home_dir):
        try:
            bento = bentoml.bentos.get(bento_tag)
        except NotFound as e:
            raise DeploymentError(
                f"Bento {bento_tag} is not in the BentoML store {bentoml_home_dir or '$BENTOML_HOME'}; run the "
                "package task first (or point the bentoml connection's extra 'bentoml_home' at the right store)."
            ) from e
        path = Path(bento.path_of(f"src/{CONFIG_FILE}"))
    if not path.is_file():
        raise DeploymentError(
            f"Bento {bento_tag} has no {CONFIG_FILE}; it was not built by package_bento."
        )
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        return {}
    repo = str(data.get("feature_repo") or "")
    if repo and not Path(repo).is_absolute():  # bundled: resolve it inside this store's copy of the bento
        data["feature_repo"] = str(path.parent / repo)
    return data
