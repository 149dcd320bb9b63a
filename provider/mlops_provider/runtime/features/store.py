"""The Feast store of a repo: config loading, ``open_store``, ``feast apply`` with its plan diff (runtime module).

The Airflow side (:class:`mlops_provider.hooks.feast.FeastHook`) resolves the ``feast`` connection into
plain settings (repo path, YAML file, config overrides, online-store password); :func:`open_store` turns
those into a ``feast.FeatureStore``. Nothing here reads an Airflow connection.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from mlops_provider.exceptions import FeatureStoreError
from mlops_provider.paths import mlops_home

log = logging.getLogger(__name__)

DEFAULT_FS_YAML = "feature_store.yaml"


# ----------------------------------------------------------------------------------------------------
# configuration and store
# ----------------------------------------------------------------------------------------------------


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` merged in, nested mappings key by key (neither is changed)."""
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def ensure_mlops_home_env() -> str:
    """Export ``MLOPS_HOME`` (default ``./.mlops``, absolute) so ``${MLOPS_HOME}`` in Feast YAML resolves.

    Why the process environment and not an argument: the value is read by code this provider does not
    call with arguments -- the ``${MLOPS_HOME}`` substitution of ``feature_store.yaml`` (here, and again
    by Feast when it re-reads the repo config), and the repo's own definitions module, imported by
    ``feast apply``, which builds its file-source paths from ``$MLOPS_HOME``. Setting it once, only when
    absent, to the same default :func:`mlops_provider.paths.mlops_home` uses keeps all of them on one home.
    """
    home = os.environ.get("MLOPS_HOME")
    if not home:
        home = str(mlops_home())
        os.environ["MLOPS_HOME"] = home
    return home


def load_repo_config(
    repo_path: str | os.PathLike[str],
    *,
    fs_yaml_file: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> Any:
    """``feast.RepoConfig`` from ``<repo>/<fs_yaml_file>`` with ``${ENV}`` substitution and ``overrides`` merged.

    Raises :class:`FeatureStoreError` when the repo or the YAML is missing or invalid.
    """
    from feast.repo_config import RepoConfig

    repo = Path(repo_path).expanduser().resolve()
    if not repo.is_dir():
        raise FeatureStoreError(
            f"Feast repo {repo} does not exist. Set repo_path (or the feast connection extra 'repo_path') to "
            "the directory holding feature_store.yaml and the definitions."
        )
    yaml_path = Path(fs_yaml_file) if fs_yaml_file else Path(DEFAULT_FS_YAML)
    if not yaml_path.is_absolute():
        yaml_path = repo / yaml_path
    if not yaml_path.is_file():
        raise FeatureStoreError(
            f"Feast config {yaml_path} does not exist. Create it or point the feast connection extra "
            "'fs_yaml_file' at an existing file."
        )
    ensure_mlops_home_env()
    try:
        raw = yaml.safe_load(os.path.expandvars(yaml_path.read_text()))
    except yaml.YAMLError as e:
        raise FeatureStoreError(f"Feast config {yaml_path} is not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise FeatureStoreError(f"Feast config {yaml_path} must be a mapping, got {type(raw).__name__}")
    if overrides:
        raw = deep_merge(raw, overrides)
    unresolved = [k for k, v in _flatten(raw) if isinstance(v, str) and "${" in v]
    if unresolved:
        raise FeatureStoreError(
            f"Feast config {yaml_path}: environment variable(s) not set for {unresolved}. Export them in the "
            "worker environment."
        )
    try:
        config = RepoConfig(**raw)
    except Exception as e:  # pydantic ValidationError, FeastConfigError, registry errors
        raise FeatureStoreError(f"Feast config {yaml_path} is invalid: {e}") from e
    config.repo_path = repo
    return config


def _flatten(d: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _flatten(v, f"{prefix}{k}.")
    else:
        yield prefix.rstrip("."), d


def open_store(
    repo_path: str | os.PathLike[str],
    *,
    fs_yaml_file: str | None = None,
    overrides: dict[str, Any] | None = None,
    online_store_password: str | None = None,
) -> Any:
    """A ``feast.FeatureStore`` for the repo (see :func:`load_repo_config`).

    The keyword arguments are what :meth:`mlops_provider.hooks.feast.FeastHook.store_settings` resolves
    from the connection (``open_store(**hook.store_settings(repo))``). ``online_store_password`` (the
    connection password) is appended to a ``redis`` online store's connection string unless it already
    carries one; it is never logged.
    """
    from feast import FeatureStore

    config = load_repo_config(repo_path, fs_yaml_file=fs_yaml_file, overrides=overrides)
    Path(mlops_home()).mkdir(parents=True, exist_ok=True)
    for key in ("path",):  # create the parent dirs of file-based registry / sqlite online store
        for section in (config.registry_config, config.online_config):
            if isinstance(section, dict) and isinstance(section.get(key), str) and "://" not in section[key]:
                Path(section[key]).expanduser().parent.mkdir(parents=True, exist_ok=True)
    if isinstance(config.registry_config, str) and "://" not in config.registry_config:
        Path(config.registry_config).expanduser().parent.mkdir(parents=True, exist_ok=True)
    store = FeatureStore(repo_path=str(config.repo_path), config=config)
    if online_store_password and getattr(store.config.online_store, "type", "") == "redis":
        cs = store.config.online_store.connection_string
        if "password=" not in cs:
            store.config.online_store.connection_string = f"{cs},password={online_store_password}"
    log.info("opened Feast store of %s (project %s)", config.repo_path, store.config.project)
    return store


# ----------------------------------------------------------------------------------------------------
# apply
# ----------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _in_repo(repo: Path) -> Iterator[None]:
    """cwd + sys.path set to the repo (Feast imports definitions relative to cwd); fresh module import."""
    old_cwd = os.getcwd()
    # re-import repo modules: paths depend on $MLOPS_HOME, and another repo's same-named module
    # (e.g. ``definitions``) may be cached from an earlier apply in this process
    local = {p.stem for p in repo.glob("*.py")} | {p.name for p in repo.iterdir() if (p / "__init__.py").is_file()}
    for name, mod in list(sys.modules.items()):
        f = getattr(mod, "__file__", None)
        if name.split(".")[0] in local or (f and Path(f).resolve().is_relative_to(repo)):
            del sys.modules[name]
    sys.path.insert(0, str(repo))
    os.chdir(repo)
    try:
        yield
    finally:
        os.chdir(old_cwd)
        with contextlib.suppress(ValueError):
            sys.path.remove(str(repo))


def _parse(store: Any, repo: Path) -> Any:
    from feast import Project
    from feast.repo_operations import parse_repo

    try:
        contents = parse_repo(repo)
    except Exception as e:
        raise FeatureStoreError(
            f"Feast repo {repo}: importing the definitions failed ({type(e).__name__}: {e}). Fix the Python "
            "files of the repo (or list non-definition files in .feastignore)."
        ) from e
    project = store.config.project
    names = {p.name for p in contents.projects}
    if not names:
        contents.projects.append(Project(name=project, description=""))
    elif names != {project}:
        raise FeatureStoreError(
            f"Feast repo {repo} defines project(s) {sorted(names)} but feature_store.yaml says {project!r}; "
            "make them equal."
        )
    return contents


def parse_definitions(repo_path: str | os.PathLike[str]) -> Any:
    """The repo's Feast objects (``feast.repo_contents.RepoContents``), read as ``feast apply`` reads them
    (cwd and ``sys.path`` on the repo, ``.feastignore`` honoured) but without a store or a registry.

    Used by ``mlops validate``. Raises :class:`FeatureStoreError` when importing the definitions fails.
    """
    from feast.repo_operations import parse_repo

    ensure_mlops_home_env()
    repo = Path(repo_path).expanduser().resolve()
    if not repo.is_dir():
        raise FeatureStoreError(f"Feast repo {repo} does not exist")
    with _in_repo(repo):
        try:
            return parse_repo(repo)
        except Exception as e:
            raise FeatureStoreError(
                f"Feast repo {repo}: importing the definitions failed ({type(e).__name__}: {e}). Fix the Python "
                "files of the repo (or list non-definition files in .feastignore)."
            ) from e


def apply_repo(store: Any) -> dict[str, Any]:
    """``feast apply`` the store's repo if (and only if) the plan shows a change.

    Returns ``{"changed": bool, "diff": str}``. Unchanged objects are not rewritten, so materialization
    history (kept on the feature views in the registry) survives a no-op apply.
    """
    from feast.diff.property_diff import TransitionType
    from feast.feature_view import DUMMY_ENTITY_NAME
    from feast.repo_operations import apply_total_with_repo_instance

    repo = Path(store.repo_path).resolve()
    with _in_repo(repo):
        contents = _parse(store, repo)
        try:
            registry_diff, infra_diff, _ = store.plan(contents)
        except Exception as e:
            raise FeatureStoreError(f"Feast repo {repo}: planning the apply failed: {e}") from e
        changes = [
            d
            for d in registry_diff.feast_object_diffs
            if d.transition_type != TransitionType.UNCHANGED
            and d.name != DUMMY_ENTITY_NAME
            and not (d.transition_type == TransitionType.UPDATE and _only_meta_changed(d))
        ]
        infra_changes = [d for d in infra_diff.infra_object_diffs if d.transition_type != TransitionType.UNCHANGED]
        diff = _strip_ansi(registry_diff.to_string() + infra_diff.to_string()).strip()
        if not changes and not infra_changes:
            log.info("Feast repo %s: registry is up to date, nothing to apply", repo)
            return {"changed": False, "diff": ""}
        log.info("Feast repo %s: applying\n%s", repo, diff)
        buf = io.StringIO()
        try:
            with contextlib.redirect_stdout(buf):
                apply_total_with_repo_instance(
                    store, store.config.project, store.registry, contents, skip_source_validation=False
                )
        except SystemExit as e:  # feast's helpers sys.exit() on some user errors
            raise FeatureStoreError(f"Feast apply of {repo} failed: {buf.getvalue().strip()}") from e
        except Exception as e:
            raise FeatureStoreError(f"Feast apply of {repo} failed: {type(e).__name__}: {e}") from e
        store.refresh_registry()
    return {"changed": True, "diff": diff or _strip_ansi(buf.getvalue()).strip()}


def _only_meta_changed(diff: Any) -> bool:
    """True when every property change of an UPDATE is in the ``meta`` timestamps of a nested proto.

    Feast 0.67 stores a feature view's batch source with fresh ``meta`` timestamps when it records a
    materialization, so the next plan reports "Updated feature view ... batch_source" although the
    definitions did not change. Such diffs are not changes.
    """
    props = list(diff.feast_object_property_diffs or [])
    if not props:
        return False
    for prop in props:
        old, new = prop.val_existing, prop.val_declared
        if not (hasattr(old, "ClearField") and hasattr(new, "ClearField")):
            return False
        old, new = type(old).FromString(old.SerializeToString()), type(new).FromString(new.SerializeToString())
        for msg in (old, new):
            if "meta" in msg.DESCRIPTOR.fields_by_name:
                msg.ClearField("meta")
        if old.SerializeToString(deterministic=True) != new.SerializeToString(deterministic=True):
            return False
    return True


def _strip_ansi(s: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", s)



__all__ = ["DEFAULT_FS_YAML", "apply_repo", "deep_merge", "ensure_mlops_home_env", "load_repo_config", "open_store",
           "parse_definitions"]
