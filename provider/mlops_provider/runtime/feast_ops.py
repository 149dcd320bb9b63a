"""Feast work done inside tasks: open a store, apply a repo, materialize, build a training snapshot.

Runtime module (heavy imports allowed). The operators in ``mlops_provider.operators.feast`` are thin
wrappers around the functions here.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib
import importlib.util
import io
import logging
import os
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from mlops_provider.exceptions import DataValidationError, FeatureStoreError
from mlops_provider.paths import mlops_home
from mlops_provider.runtime.snapshot import write_snapshot

log = logging.getLogger(__name__)

DEFAULT_FS_YAML = "feature_store.yaml"


# ----------------------------------------------------------------------------------------------------
# configuration and store
# ----------------------------------------------------------------------------------------------------


def _deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def ensure_mlops_home_env() -> str:
    """Export ``MLOPS_HOME`` (default ``./.mlops``, absolute) so ``${MLOPS_HOME}`` in Feast YAML resolves."""
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
        raw = _deep_merge(raw, overrides)
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
) -> Any:
    """A ``feast.FeatureStore`` for the repo (see :func:`load_repo_config`)."""
    from feast import FeatureStore

    config = load_repo_config(repo_path, fs_yaml_file=fs_yaml_file, overrides=overrides)
    Path(mlops_home()).mkdir(parents=True, exist_ok=True)
    for key in ("path",):  # create the parent dirs of file-based registry / sqlite online store
        for section in (config.registry_config, config.online_config):
            if isinstance(section, dict) and isinstance(section.get(key), str) and "://" not in section[key]:
                Path(section[key]).expanduser().parent.mkdir(parents=True, exist_ok=True)
    if isinstance(config.registry_config, str) and "://" not in config.registry_config:
        Path(config.registry_config).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return FeatureStore(repo_path=str(config.repo_path), config=config)


# ----------------------------------------------------------------------------------------------------
# apply
# ----------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _in_repo(repo: Path) -> Iterator[None]:
    """cwd + sys.path set to the repo (Feast imports definitions relative to cwd); fresh module import."""
    old_cwd = os.getcwd()
    for name, mod in list(sys.modules.items()):  # re-import repo modules: paths depend on $MLOPS_HOME
        f = getattr(mod, "__file__", None)
        if f and Path(f).resolve().is_relative_to(repo):
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
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", s)


# ----------------------------------------------------------------------------------------------------
# materialize
# ----------------------------------------------------------------------------------------------------


def parse_utc(value: str | datetime, what: str) -> datetime:
    """ISO string / datetime -> tz-aware UTC datetime (naive values are taken as UTC)."""
    if isinstance(value, datetime):
        ts = value
    else:
        try:
            ts = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError as e:
            raise FeatureStoreError(f"{what}={value!r} is not an ISO-8601 timestamp") from e
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _source_rows_in_window(store: Any, fv: Any, start: datetime, end: datetime) -> int | None:
    """Distinct entities with source rows in [start, end) (what materialization writes), for file sources."""
    from feast import FileSource

    src = fv.batch_source
    if not isinstance(src, FileSource) or "://" in src.path:
        return None
    path = Path(src.path)
    if not path.is_absolute():
        path = Path(store.repo_path) / path
    if not path.exists():
        return 0
    keys = [c.name for c in fv.entity_columns]
    df = pd.read_parquet(path, columns=[*keys, src.timestamp_field])
    ts = pd.to_datetime(df[src.timestamp_field], utc=True)
    sel = df[(ts >= pd.Timestamp(start)) & (ts < pd.Timestamp(end))]
    return int(len(sel.drop_duplicates(keys))) if keys else int(len(sel) > 0)


def materialize(
    store: Any, start: str | datetime, end: str | datetime, feature_views: list[str] | None = None
) -> dict[str, Any]:
    """Upsert the latest value per entity in ``[start, end)`` into the online store.

    Returns ``{"feature_views": [...], "window": {"start", "end"}, "rows": {view: entities written}}``.
    """
    t0, t1 = parse_utc(start, "start"), parse_utc(end, "end")
    if t0 >= t1:
        raise FeatureStoreError(f"materialization window is empty or inverted: start={t0} >= end={t1}")
    try:
        views = {fv.name: fv for fv in store.list_feature_views() if fv.online}
    except Exception as e:
        raise FeatureStoreError(
            f"cannot read the Feast registry of {store.repo_path} ({e}). Run the feast apply task first."
        ) from e
    if not views:
        raise FeatureStoreError(
            f"the Feast registry of {store.repo_path} has no online feature views. Run the feast apply task first."
        )
    names = list(feature_views) if feature_views else sorted(views)
    unknown = sorted(set(names) - set(views))
    if unknown:
        raise FeatureStoreError(f"unknown feature view(s) {unknown}; registered online views: {sorted(views)}")
    rows = {n: _source_rows_in_window(store, views[n], t0, t1) for n in names}
    try:
        store.materialize(start_date=t0, end_date=t1, feature_views=names)
    except Exception as e:
        raise FeatureStoreError(f"materializing {names} over [{t0}, {t1}) failed: {type(e).__name__}: {e}") from e
    return {"feature_views": names, "window": {"start": t0.isoformat(), "end": t1.isoformat()}, "rows": rows}


# ----------------------------------------------------------------------------------------------------
# training dataset
# ----------------------------------------------------------------------------------------------------


def _read_labels(labels_dir: str | os.PathLike[str]) -> pd.DataFrame:
    d = Path(labels_dir)
    files = sorted(d.glob("*.parquet")) if d.is_dir() else ([d] if d.is_file() else [])
    if not files:
        raise DataValidationError(
            f"no label partitions (*.parquet) under {d}. Run the feature pipeline (offline partition task) first."
        )
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def deterministic_sample(df: pd.DataFrame, n: int, key_cols: list[str]) -> pd.DataFrame:
    """The ``n`` rows with the smallest content hash of ``key_cols`` (same input -> same sample)."""
    if n >= len(df):
        return df
    h = pd.util.hash_pandas_object(df[key_cols], index=False).to_numpy()
    keep = sorted(pd.Series(h).nsmallest(n).index)  # nsmallest is stable on ties (keeps first)
    return df.iloc[keep]


def build_training_dataset(
    store: Any,
    *,
    feature_service: str,
    labels_dir: str,
    label: str,
    snapshot_root: str,
    validation_days: int = 21,
    end: str | None = None,
    max_rows: int | None = None,
) -> dict[str, Any]:
    """Point-in-time join of the label frame with ``feature_service``; write an immutable snapshot.

    Returns ``{"path", "hash", "rows": {"train", "validation"}, "split": {...}, "window": {...},
    "feature_service", "label"}``.
    """
    if validation_days < 1:
        raise DataValidationError(f"validation_days must be >= 1, got {validation_days}")
    labels = _read_labels(labels_dir)
    required = ["event_timestamp", label]
    missing = [c for c in required if c not in labels.columns]
    if missing:
        raise DataValidationError(f"label partitions under {labels_dir} lack column(s) {missing}")
    labels["event_timestamp"] = pd.to_datetime(labels["event_timestamp"], utc=True).astype("datetime64[ns, UTC]")
    if end:
        labels = labels[labels["event_timestamp"] < pd.Timestamp(parse_utc(end, "end"))]
    entity_cols = [c for c in labels.columns if c not in (label,)]
    labels = labels.sort_values(entity_cols, kind="stable").reset_index(drop=True)
    if max_rows:
        labels = deterministic_sample(labels, int(max_rows), entity_cols).reset_index(drop=True)
    if labels.empty:
        raise DataValidationError(f"no labelled rows under {labels_dir} before end={end!r}; nothing to train on")
    bad = set(pd.unique(labels[label].dropna())) - {0, 1}
    if bad or labels[label].isna().any():
        raise DataValidationError(f"label {label!r} must be 0/1 without nulls; found values {sorted(bad)[:5]}")

    try:
        fs = store.get_feature_service(feature_service)
    except Exception as e:
        raise FeatureStoreError(
            f"feature service {feature_service!r} is not in the Feast registry of {store.repo_path} ({e}). "
            "Run the feast apply task, or fix the feature service name in the model YAML."
        ) from e
    try:
        joined = store.get_historical_features(entity_df=labels, features=fs).to_df()
    except Exception as e:
        raise FeatureStoreError(f"point-in-time join for {feature_service!r} failed: {type(e).__name__}: {e}") from e
    # request-time features come back twice (entity frame input + on-demand output): keep the output
    joined = joined.loc[:, ~joined.columns.duplicated(keep="last")]
    feature_names = [f.name for proj in fs.feature_view_projections for f in proj.features]
    key_cols = [c for c in ("event_timestamp", "origin", "carrier", "tailnum") if c in joined.columns]
    key_cols += [c for c in labels.columns if c not in key_cols and c not in feature_names and c != label]
    cols = list(dict.fromkeys([*key_cols, *feature_names, label]))
    df = joined[cols].sort_values(cols, kind="stable", na_position="last").reset_index(drop=True)
    if len(df) != len(labels):
        raise FeatureStoreError(f"point-in-time join returned {len(df)} rows for {len(labels)} label rows")

    ts = df["event_timestamp"]
    first, last = ts.min(), ts.max()
    validation_start = (last.floor("D") + pd.Timedelta(days=1)) - pd.Timedelta(days=validation_days)
    df["split"] = (ts >= validation_start).map({True: "validation", False: "train"})
    rows = {"train": int((df["split"] == "train").sum()), "validation": int((df["split"] == "validation").sum())}
    if rows["train"] == 0 or rows["validation"] == 0:
        raise DataValidationError(
            f"time split leaves an empty side {rows}: the data spans {first} .. {last} and validation_days="
            f"{validation_days}. Land more data or lower validation_days."
        )
    split = {
        "method": "time",
        "train_end": validation_start.isoformat(),
        "validation_start": validation_start.isoformat(),
        "validation_end": last.isoformat(),
        "validation_days": int(validation_days),
    }
    window = {"start": first.isoformat(), "end": last.isoformat()}
    path, manifest = write_snapshot(
        df,
        {
            "feature_service": feature_service,
            "label": label,
            "rows": rows,
            "split": split,
            "window": window,
            "features": feature_names,
            "sample": {"max_rows": max_rows} if max_rows else None,
        },
        snapshot_root,
    )
    return {
        "path": path,
        "hash": manifest["hash"],
        "rows": manifest["rows"],
        "split": manifest["split"],
        "window": manifest["window"],
        "feature_service": feature_service,
        "label": label,
    }


# ----------------------------------------------------------------------------------------------------
# user transforms
# ----------------------------------------------------------------------------------------------------


def load_callable(spec: str) -> Callable[..., Any]:
    """``"path/to/file.py:function"`` or ``"package.module:function"`` -> the function."""
    target, sep, func = spec.rpartition(":")
    if not sep or not target or not func:
        raise FeatureStoreError(
            f"transform {spec!r} must look like 'path/to/file.py:function' or 'package.module:function'"
        )
    if target.endswith(".py"):
        path = Path(target).expanduser()
        if not path.is_absolute():
            path = Path.cwd() / path
        if not path.is_file():
            raise FeatureStoreError(f"transform file {path} does not exist (from {spec!r})")
        name = "mlops_transform_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
        mod_spec = importlib.util.spec_from_file_location(name, path)
        if mod_spec is None or mod_spec.loader is None:
            raise FeatureStoreError(f"cannot import transform file {path}")
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[name] = module
        try:
            mod_spec.loader.exec_module(module)
        except Exception as e:
            del sys.modules[name]
            raise FeatureStoreError(f"importing transform file {path} failed: {type(e).__name__}: {e}") from e
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise FeatureStoreError(f"cannot import transform module {target!r}: {e}") from e
    fn = getattr(module, func, None)
    if not callable(fn):
        raise FeatureStoreError(f"transform {spec!r}: {func!r} is not a function of {target}")
    return fn


__all__ = [
    "apply_repo",
    "build_training_dataset",
    "deterministic_sample",
    "ensure_mlops_home_env",
    "load_callable",
    "load_repo_config",
    "materialize",
    "open_store",
    "parse_utc",
]
