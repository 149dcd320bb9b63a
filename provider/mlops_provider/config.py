"""Load and validate the per-model YAML into a :class:`~mlops_provider.specs.PipelineSpec`.

Light module (stdlib, yaml, pydantic at validation time only): imported at DAG-parse time. Every error is a
:class:`~mlops_provider.exceptions.ConfigError` whose message names the file, the key (with its line) and the
fix, so a bad YAML shows up as a readable DAG import error in the Airflow UI.

Validated configs are cached by content: the key hashes the YAML's bytes, the provider's spec/loader code
and the feature repo's Python files, and the value is the spec as JSON. The DAG processor re-parses every
file every few seconds; on a cache hit a parse reads two small files and builds no pydantic validator
(``benchmarks/parse_time.py``). A changed YAML, repo or provider is validated again.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import json
import os
import tempfile
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from mlops_provider import specs
from mlops_provider.exceptions import ConfigError
from mlops_provider.specs import (  # noqa: F401 - re-exported: the YAML's sections under their old names
    AlertTarget,
    GateConfig,
    MonitoringConfig,
    PipelineConfig,
    PipelineSpec,
    ServingConfig,
    TrainingConfig,
)
from mlops_provider.tasks import GATE_METRICS  # noqa: F401 - re-exported

CACHE_VERSION = "1"
_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: ~10x faster


def _cache_dir() -> Path:
    explicit = os.environ.get("MLOPS_CONFIG_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("AIRFLOW_HOME") or tempfile.gettempdir()
    return Path(base) / "mlops_config_cache"


def _code_digest() -> bytes:
    """The provider code that decides what a valid config is (a new version re-validates every YAML)."""
    here = Path(__file__).parent
    h = hashlib.sha256(CACHE_VERSION.encode())
    for name in ("specs.py", "config.py", "tasks.py", "search_space.py"):
        p = here / name
        if p.exists():
            h.update(p.read_bytes())
    return h.digest()


_CODE_DIGEST: bytes | None = None


def _cache_key(raw: bytes, path: Path, repo_files: list[Path]) -> str:
    global _CODE_DIGEST
    if _CODE_DIGEST is None:
        _CODE_DIGEST = _code_digest()
    h = hashlib.sha256(_CODE_DIGEST)
    h.update(str(path.resolve()).encode() + b"\0" + raw)
    for f in repo_files:
        try:
            st = f.stat()
        except OSError:
            continue
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:32]


def _repo_files(raw_cfg: Any, path: Path) -> list[Path]:
    """Files outside the YAML whose change can change the verdict: the repo's *.py, the transform file."""
    try:
        feats = raw_cfg.get("features") or {}
        repo = (path.parent / str(feats.get("repo", ""))).resolve()
        files = sorted(repo.glob("*.py")) if repo.is_dir() else []
        tpath = str(feats.get("transform", "")).rpartition(":")[0]
        if tpath.endswith(".py"):
            files.append((path.parent / tpath).resolve())
        return files
    except (AttributeError, TypeError):
        return []


def _read_cache(key: str) -> dict[str, Any] | None:
    try:
        return dict(json.loads((_cache_dir() / f"{key}.json").read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def _write_cache(key: str, data: dict[str, Any]) -> None:
    """Best effort (a read-only home only costs the next parse a validation). Written beside and renamed,
    so a concurrent parse never reads half a file."""
    directory = _cache_dir()
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = directory / f".{key}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, directory / f"{key}.json")
    except OSError:
        pass


# ---------------------------------------------------------------------------------------------------
# error messages: file, key, line, fix
# ---------------------------------------------------------------------------------------------------


def _key_of(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "<root>"


def _spec_fields(cls: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - best effort for hints
        return {}


def _unwrap_spec(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _unwrap_spec(typing.get_args(tp)[0])
    if isinstance(tp, type):
        return tp
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if origin in (list, dict) and args:
        return _unwrap_spec(args[-1])
    if len(args) == 1:
        return _unwrap_spec(args[0])
    return None


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """The valid keys of the section ``loc`` points into (for 'did you mean')."""
    cls: Any = PipelineSpec
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        hint = _spec_fields(cls).get(str(part))
        cls = _unwrap_spec(hint) if hint is not None else None
        if cls is None or not hasattr(cls, "__dataclass_fields__"):
            return []
    return list(getattr(cls, "__dataclass_fields__", {}))


def _fix_for(err: Any) -> str:
    kind, loc = err["type"], err["loc"]
    if kind in ("unexpected_keyword_argument", "extra_forbidden"):
        known = _fields_at(loc)
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return f"{hint}remove it or use one of: {', '.join(known)}"
    if kind in ("missing", "missing_argument"):
        return "add this key (see the README's YAML config reference or docs/pipeline.schema.json)"
    if kind == "value_error":
        return "see the message"
    return f"expected {err['msg'].lower()}; got {err.get('input')!r}"


def _line_of(text: str, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the deepest key of ``loc`` that exists in the YAML text."""
    try:
        node = yaml.compose(text, Loader=_SafeLoader)
    except yaml.YAMLError:
        return None
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == str(part):
                    line, node = k.start_mark.line + 1, v
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _validate(raw: dict[str, Any], path: Path, text: str) -> PipelineSpec:
    from pydantic import TypeAdapter, ValidationError

    try:
        return TypeAdapter(PipelineSpec).validate_python(raw)
    except ValidationError as exc:
        lines = [f"{path}: invalid pipeline config ({exc.error_count()} problem(s)):"]
        for err in exc.errors():
            loc = tuple(err["loc"])
            msg = {"unexpected_keyword_argument": "unknown key", "extra_forbidden": "unknown key",
                   "missing_argument": "missing required key", "missing": "missing required key"}.get(
                err["type"], str(err["msg"]).removeprefix("Value error, "))
            while err["type"] == "value_error":  # a cross-field rule naming the key (path) it is about
                head, sep, rest = msg.partition(": ")
                if sep and head.isdigit() and loc:
                    loc, msg = (*loc, int(head)), rest
                elif sep and head in _fields_at((*loc, head)):
                    loc, msg = (*loc, head), rest
                else:
                    break
            where = _line_of(text, loc)
            at = f" (line {where})" if where else ""
            lines.append(f"  - key '{_key_of(loc)}'{at}: {msg} -> fix: {_fix_for(err)}")
        raise ConfigError("\n".join(lines)) from None


# ---------------------------------------------------------------------------------------------------
# the feature repo, read as code (no feast import)
# ---------------------------------------------------------------------------------------------------


def feature_services_in(repo: Path) -> dict[str, Path]:
    """FeatureService names declared in the repo's Python files -> the file. Parsed with ``ast``, so any
    keyword order works and nothing is imported (``FeatureService(features=[...], name="x")``)."""
    found: dict[str, Path] = {}
    for py in sorted(repo.glob("*.py")):
        try:
            tree = ast.parse(py.read_text(encoding="utf-8", errors="replace"), filename=str(py))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            fn = node.func
            name = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else ""
            if name != "FeatureService":
                continue
            for kw in node.keywords:
                if kw.arg == "name" and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str):
                    found[kw.value.value] = py
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                found[node.args[0].value] = py  # FeatureService("name", ...)
    return found


def _check_references(cfg: PipelineSpec, path: Path) -> None:
    repo = Path(cfg.repo_path)
    if not repo.is_dir():
        raise ConfigError(
            f"{path}: key 'features.repo': Feast repo {repo} does not exist -> fix: point it at the "
            "directory holding feature_store.yaml (relative to the YAML file)"
        )
    services = feature_services_in(repo)
    if cfg.features.feature_service not in services:
        raise ConfigError(
            f"{path}: key 'features.feature_service': FeatureService '{cfg.features.feature_service}' is not "
            f"defined in {repo} (defined: {sorted(services) or 'none'}) -> fix: use one of those or add it "
            "to the repo's definitions"
        )
    func_path, sep, func = cfg.transform_ref.rpartition(":")
    if not sep or not func:
        raise ConfigError(
            f"{path}: key 'features.transform': expected 'path/to/file.py:function' or 'module:function', "
            f"got {cfg.features.transform!r}"
        )
    if func_path.endswith(".py") and not Path(func_path).is_file():
        raise ConfigError(f"{path}: key 'features.transform': file {func_path} does not exist")


# ---------------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------------


def load_config(path: str | os.PathLike[str], *, use_cache: bool = True) -> PipelineSpec:
    """Load and validate one pipeline YAML. Raises ConfigError naming file, key (line) and fix."""
    path = Path(path)
    try:
        raw_bytes = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config: {exc}") from exc
    text = raw_bytes.decode("utf-8", errors="replace")
    try:
        raw = yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - a safe loader (C or pure Python)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the config must be a mapping with at least 'model', 'features', 'training'")
    source = str(path.resolve())
    key = _cache_key(raw_bytes, path, _repo_files(raw, path)) if use_cache else ""
    cached = _read_cache(key) if use_cache else None
    if cached is not None:
        try:
            return specs.from_dict(PipelineSpec, cached).with_source(source)
        except (TypeError, ValueError, KeyError):
            pass  # a cache entry of an incompatible shape: validate again
    cfg = _validate(raw, path, text).with_source(source)
    _check_references(cfg, path)
    if use_cache:
        _write_cache(key, specs.as_dict(cfg))
    return cfg


def config_files(directory: str | os.PathLike[str]) -> list[Path]:
    directory = Path(directory)
    return sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])


def iter_configs(directory: str | os.PathLike[str]) -> Iterator[tuple[Path, PipelineSpec | ConfigError]]:
    """Every pipeline YAML in a directory with its spec or its error: one bad file fails alone.

    Two files declaring the same model: the later file (by name) gets the error.
    """
    seen: dict[str, str] = {}
    for f in config_files(directory):
        try:
            cfg = load_config(f)
        except ConfigError as e:
            yield f, e
            continue
        if cfg.model in seen:
            yield f, ConfigError(
                f"{f}: key 'model': '{cfg.model}' is also used by {seen[cfg.model]} -> fix: give every model its "
                "own name"
            )
            continue
        seen[cfg.model] = str(f)
        yield f, cfg


def load_configs(directory: str | os.PathLike[str]) -> list[PipelineSpec]:
    """Every pipeline config in a directory; the first bad one raises (use :func:`iter_configs` to isolate)."""
    out = []
    for _, cfg in iter_configs(directory):
        if isinstance(cfg, ConfigError):
            raise cfg
        out.append(cfg)
    return out


def json_schema() -> dict[str, Any]:
    """JSON Schema of the pipeline YAML (editor completion; published as docs/pipeline.schema.json)."""
    from pydantic import TypeAdapter

    schema = TypeAdapter(PipelineSpec).json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "airflow-provider-mlops pipeline config"
    return schema
