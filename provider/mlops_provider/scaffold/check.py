"""``mlops validate``: check a pipeline YAML and its Feast repo together, before anything runs.

Checks, in order (each ``ok`` / ``warn`` / ``error`` / ``skipped``, with a message and details):

``config``          the YAML validates (:func:`mlops_provider.config.load_config`, no cache): keys, types,
                    metric names, the FeatureService named in the repo's Python, the transform file.
``model_name``      the YAML's ``model`` against the repo's Feast ``project`` (feature_store.yaml and
                    ``Project(name=...)``), a ``MODEL = "..."`` constant and the FeatureService's ``model``
                    tag. A mismatch is a WARNING: a Feast project is a namespace of feature objects and may
                    serve several registered models (``churn_v1`` and ``churn_v2`` of one
                    project, or two models sharing views), so it need not equal the model name -- but it
                    usually does, and a FeatureService tagged for another model is most likely a wrong
                    ``features.feature_service``. ``--strict`` turns warnings into a failure.
``feature_service`` the FeatureService is declared in the repo (read with ``ast``: any keyword order).
``definitions``     the repo's definitions imported by Feast (``parse_repo``, no registry): every training
                    feature is an output of the FeatureService or an entity join key of one of its views;
                    the label is neither a training feature nor served by the FeatureService (leakage).
``transform``       the transform file mentions the label, the entity join keys and the request fields
                    (the labels partition must carry them; a warning, read with ``ast``).
``smoke_request``   ``serving.smoke_request`` is a valid request: against the schema the serving room
                    generates (HOOK: :func:`served_request_schema`) or, until that lands, against the
                    fallback schema built here: entity join keys and request-source fields required and
                    typed, training features allowed, nothing else (``request_id``, ``event_timestamp``
                    aside).
``pools``           the pools the model's DAGs use (from the built DAGs) and, given ``--airflow-url`` (REST
                    API) or ``--airflow-db`` (the configured metadata DB), whether each exists
                    (:mod:`mlops_provider.scaffold.pools`).

Exit status of the command: 0 when no check is an error (and, with ``--strict``, none is a warning), else 1.
"""

from __future__ import annotations

import ast
import difflib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

Status = Literal["ok", "warn", "error", "skipped"]
#: Request keys every served model accepts besides its features (echoed / used as the event time).
META_KEYS = {"request_id": "string", "event_timestamp": "string"}
_JSON_TYPES = {"INT32": "integer", "INT64": "integer", "FLOAT32": "number", "FLOAT64": "number",
               "STRING": "string", "BOOL": "boolean", "UNIX_TIMESTAMP": "string", "BYTES": "string"}


@dataclass
class Check:
    name: str
    status: Status
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Report:
    """The outcome of :func:`validate_pipeline` (``to_dict`` is the ``--json`` output)."""

    yaml: str
    model: str | None = None
    checks: list[Check] = field(default_factory=list)
    pools: list[dict[str, Any]] = field(default_factory=list)
    request_schema: dict[str, Any] | None = None

    def add(self, name: str, status: Status, message: str, **details: Any) -> Check:
        check = Check(name, status, message, details)
        self.checks.append(check)
        return check

    @property
    def errors(self) -> int:
        return sum(c.status == "error" for c in self.checks)

    @property
    def warnings(self) -> int:
        return sum(c.status == "warn" for c in self.checks)

    def passed(self, strict: bool = False) -> bool:
        return self.errors == 0 and not (strict and self.warnings)

    def to_dict(self, strict: bool = False) -> dict[str, Any]:
        return {"yaml": self.yaml, "model": self.model, "valid": self.passed(strict), "errors": self.errors,
                "warnings": self.warnings, "checks": [asdict(c) for c in self.checks], "pools": self.pools,
                "request_schema": self.request_schema}

    def format(self, strict: bool = False) -> str:
        lines = [f"mlops validate {self.yaml}"]
        for c in self.checks:
            head, *rest = c.message.splitlines() or [""]
            lines.append(f"  [{c.status:<7}] {c.name:<16} {head}")
            lines += [f"  {'':<9} {'':<16} {line}" for line in rest]
        for p in self.pools:
            exists = {True: "exists", False: "MISSING", None: "not checked (--airflow-url / --airflow-db)"}
            lines.append(f"  pool {p['name']}: {p['slots']} slot(s), tasks {', '.join(p['tasks'])}: "
                         f"{exists[p['exists']]}")
        verdict = "VALID" if self.passed(strict) else "INVALID"
        lines.append(f"{verdict} ({self.errors} error(s), {self.warnings} warning(s){', strict' if strict else ''})")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# reading the repo as code (ast)
# ---------------------------------------------------------------------------------------------------


def _trees(repo: Path) -> list[tuple[Path, ast.Module]]:
    out = []
    for py in sorted(repo.glob("*.py")):
        try:
            out.append((py, ast.parse(py.read_text(encoding="utf-8", errors="replace"), filename=str(py))))
        except SyntaxError:
            continue
    return out


def _constants(tree: ast.Module) -> dict[str, str]:
    """Module-level ``NAME = "text"`` assignments."""
    out: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            out.update({t.id: node.value.value for t in node.targets if isinstance(t, ast.Name)})
    return out


def _text(node: ast.AST | None, consts: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return consts.get(node.id)
    return None


def _calls(tree: ast.Module, name: str) -> list[ast.Call]:
    def called(fn: ast.expr) -> str:
        return fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else ""

    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and called(n.func) == name]


def _kw(call: ast.Call, key: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == key), None)


def repo_model_names(repo: Path, feature_service: str) -> dict[str, str]:
    """Where the repo names a model or project: ``{"feature_store.yaml project": ..., "MODEL (definitions.py)":
    ..., "Project(name=...)": ..., "FeatureService tag 'model'": ...}`` (only the ones found)."""
    found: dict[str, str] = {}
    fs_yaml = repo / "feature_store.yaml"
    if fs_yaml.is_file():
        try:
            raw = yaml.safe_load(fs_yaml.read_text(encoding="utf-8"))
        except yaml.YAMLError:
            raw = None
        if isinstance(raw, dict) and isinstance(raw.get("project"), str):
            found["feature_store.yaml project"] = raw["project"]
    for py, tree in _trees(repo):
        consts = _constants(tree)
        if "MODEL" in consts:
            found[f"MODEL ({py.name})"] = consts["MODEL"]
        for call in _calls(tree, "Project"):
            name = _text(_kw(call, "name"), consts)
            if name:
                found[f"Project(name=...) ({py.name})"] = name
        for call in _calls(tree, "FeatureService"):
            first = call.args[0] if call.args else None
            if (_text(_kw(call, "name"), consts) or _text(first, consts)) != feature_service:
                continue
            tags = _kw(call, "tags")
            if isinstance(tags, ast.Dict):
                for k, v in zip(tags.keys, tags.values, strict=True):
                    if _text(k, consts) == "model" and _text(v, consts):
                        found[f"FeatureService {feature_service!r} tag 'model' ({py.name})"] = str(_text(v, consts))
    return found


def string_literals(path: Path) -> set[str]:
    """Every string constant of a Python file (what a transform can write as a column name)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"), filename=str(path))
    except (OSError, SyntaxError):
        return set()
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


# ---------------------------------------------------------------------------------------------------
# the FeatureService as Feast sees it
# ---------------------------------------------------------------------------------------------------


@dataclass
class ServiceInputs:
    """What a FeatureService serves and needs: outputs, entity join keys, request-source fields (with types)."""

    outputs: dict[str, str]          # feature -> Feast dtype name (e.g. FLOAT64)
    entity_keys: dict[str, str]      # join key -> value type name (e.g. STRING)
    request_fields: dict[str, str]   # request-source field -> Feast dtype name
    views: list[str]


def _dtype_name(dtype: Any) -> str:
    name = getattr(dtype, "name", None) or str(dtype)
    return str(name).upper()


def service_inputs(contents: Any, feature_service: str) -> ServiceInputs:
    """Resolve ``feature_service`` in parsed Feast definitions (``RepoContents``). KeyError when absent."""
    services = {s.name: s for s in contents.feature_services}
    if feature_service not in services:
        raise KeyError(feature_service)
    fs = services[feature_service]
    entities = {e.name: e for e in contents.entities}
    views = {v.name: v for v in contents.feature_views}
    odfvs = {v.name: v for v in contents.on_demand_feature_views}
    outputs: dict[str, str] = {}
    keys: dict[str, str] = {}
    request: dict[str, str] = {}
    for proj in fs.feature_view_projections:
        for f in proj.features:
            outputs[f.name] = _dtype_name(f.dtype)
        view = views.get(proj.name)
        if view is not None:
            for ent in view.entities:
                e = entities.get(ent)
                if e is not None and e.join_key != "__dummy_id":
                    keys[e.join_key] = _dtype_name(e.value_type)
        odfv = odfvs.get(proj.name)
        if odfv is not None:
            for source in odfv.source_request_sources.values():
                request.update({f.name: _dtype_name(f.dtype) for f in source.schema})
    return ServiceInputs(outputs, keys, request, [p.name for p in fs.feature_view_projections])


def fallback_request_schema(model: str, inputs: ServiceInputs, features: list[str]) -> dict[str, Any]:
    """The request a served model accepts, as JSON Schema (used until the serving room's generator lands):
    entity join keys and request-source fields required and typed; training features may be passed (they
    override a fetched value); ``request_id`` / ``event_timestamp`` allowed; nothing else."""
    props: dict[str, Any] = {}
    for name, dtype in {**inputs.entity_keys, **inputs.request_fields}.items():
        props[name] = {"type": _JSON_TYPES.get(dtype, "string")}
    for name in features:
        if name not in props:
            props[name] = {"type": [_JSON_TYPES.get(inputs.outputs.get(name, ""), "number"), "string", "null"]}
    props.update({k: {"type": t} for k, t in META_KEYS.items()})
    title = "".join(p.capitalize() for p in model.split("_"))
    return {"title": f"{title}Request", "type": "object", "properties": props,
            "required": [*inputs.entity_keys, *inputs.request_fields], "additionalProperties": False}


def request_errors(request: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """What is wrong with one request against an object schema (required, unknown keys, JSON types)."""
    errors = [f"missing {k!r}" for k in schema.get("required", []) if k not in request]
    props = schema.get("properties", {})
    if schema.get("additionalProperties") is False:
        for k in request:
            if k not in props:
                close = difflib.get_close_matches(k, list(props), n=1)
                errors.append(f"unknown key {k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    checks = {"integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              "string": lambda v: isinstance(v, str), "boolean": lambda v: isinstance(v, bool),
              "null": lambda v: v is None}
    for k, v in request.items():
        want = props.get(k, {}).get("type")
        if want is None:
            continue
        types = want if isinstance(want, list) else [want]
        if not any(checks.get(t, lambda _v: True)(v) for t in types):
            errors.append(f"{k!r} = {v!r} is not {' or '.join(types)}")
    return errors


# --- HOOK: the serving room's generated request schema (issue 13) -------------------------------------
# The bento service generates its request model from the FeatureService and ``serving.request``
# (``runtime/serving``, a pure function ``request_schema(...)``). Once it is on main, make this function
# return its JSON Schema for ``cfg`` (e.g. ``request_schema(...).model_json_schema()``); the smoke request is
# then validated against exactly what the service will accept, and the fallback above is only a fallback.
def served_request_schema(cfg: Any, inputs: ServiceInputs) -> tuple[dict[str, Any] | None, str]:
    """``(JSON Schema, where it came from)``; ``(None, why)`` while the serving room's function is absent."""
    try:
        from mlops_provider.runtime.serving import schema as serving_schema
    except ImportError as e:
        return None, f"runtime.serving.schema not importable ({e})"
    if not hasattr(serving_schema, "request_schema"):
        return None, "runtime.serving.schema has no request_schema() yet: fallback schema used"
    return None, ("runtime.serving.schema.request_schema() exists but is not wired into mlops validate yet "
                  "(HOOK in mlops_provider/scaffold/check.py): fallback schema used")


# ---------------------------------------------------------------------------------------------------
# the checks
# ---------------------------------------------------------------------------------------------------


def validate_pipeline(
    path: str | os.PathLike[str],
    *,
    airflow_url: str | None = None,
    airflow_user: str | None = None,
    airflow_password: str | None = None,
    airflow_db: bool = False,
) -> Report:
    """Every check of the module docstring on one YAML; never raises for a bad YAML or repo."""
    from mlops_provider.config import feature_services_in, load_config
    from mlops_provider.exceptions import ConfigError
    from mlops_provider.scaffold.pools import check_pools

    report = Report(yaml=str(path))
    try:
        cfg = load_config(path, use_cache=False)
    except ConfigError as e:
        report.add("config", "error", str(e))
        return report
    t = cfg.training
    task = getattr(t, "task", "binary")
    features = t.features.all
    report.model = cfg.model
    report.add("config", "ok", f"model {cfg.model}: task {task}, label {t.label!r}, {len(features)} features, "
               f"feature service {cfg.features.feature_service!r}", task=task)

    repo = Path(cfg.repo_path)
    names = repo_model_names(repo, cfg.features.feature_service)
    other = {where: name for where, name in names.items() if name != cfg.model}
    if not names:
        report.add("model_name", "warn", f"the repo {repo} names no project / MODEL / model tag to compare with "
                   f"{cfg.model!r}")
    elif other:
        report.add("model_name", "warn", f"the YAML's model is {cfg.model!r}, but the repo says "
                   + "; ".join(f"{where} = {name!r}" for where, name in other.items())
                   + " (fine for a project shared by several models; otherwise rename one of them)", names=names)
    else:
        report.add("model_name", "ok", f"{cfg.model!r} everywhere ({', '.join(names)})", names=names)

    declared = feature_services_in(repo)
    report.add("feature_service", "ok", f"{cfg.features.feature_service!r} is declared in "
               f"{declared[cfg.features.feature_service].name}")

    inputs = _check_definitions(report, cfg, repo, features)
    _check_transform(report, cfg, inputs)
    _check_smoke_request(report, cfg, inputs, features)
    check_pools(report, cfg, airflow_url, airflow_user, airflow_password, airflow_db)
    return report


def _check_definitions(report: Report, cfg: Any, repo: Path, features: list[str]) -> ServiceInputs | None:
    from mlops_provider.exceptions import FeatureStoreError
    from mlops_provider.runtime.features.store import parse_definitions

    fs_name, label = cfg.features.feature_service, cfg.training.label
    try:
        contents = parse_definitions(repo)
        inputs = service_inputs(contents, fs_name)
    except FeatureStoreError as e:
        report.add("definitions", "error", str(e))
        return None
    except KeyError:
        report.add("definitions", "error", f"Feast finds no FeatureService {fs_name!r} in {repo} (found: "
                   f"{sorted(s.name for s in contents.feature_services)}); is its file listed in .feastignore?")
        return None
    available = {**inputs.outputs, **inputs.entity_keys}
    problems = []
    for name in features:
        if name not in available:
            close = difflib.get_close_matches(name, list(available), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"training feature {name!r} is neither an output of {fs_name!r} nor an entity join "
                            f"key{hint}")
    if label in features:
        problems.append(f"the label {label!r} is listed as a training feature")
    if label in inputs.outputs:
        problems.append(f"the label {label!r} is served by {fs_name!r} (the model would see its own answer)")
    if label in inputs.entity_keys or label in inputs.request_fields:
        problems.append(f"the label {label!r} is an entity key or request field of {fs_name!r}")
    details = {"views": inputs.views, "outputs": sorted(inputs.outputs), "entity_keys": sorted(inputs.entity_keys),
               "request_fields": sorted(inputs.request_fields)}
    if problems:
        report.add("definitions", "error", "\n".join(problems) + f"\navailable: {sorted(available)}", **details)
    else:
        report.add("definitions", "ok", f"{len(features)} training features served by {fs_name!r} "
                   f"(views {', '.join(inputs.views)}; entity keys {', '.join(sorted(inputs.entity_keys)) or '-'}; "
                   f"request fields {', '.join(sorted(inputs.request_fields)) or '-'})", **details)
    return inputs


def _check_transform(report: Report, cfg: Any, inputs: ServiceInputs | None) -> None:
    path, _, _ = cfg.transform_ref.rpartition(":")
    if not path.endswith(".py"):
        report.add("transform", "skipped", f"{cfg.features.transform} is a module; not read")
        return
    literals = string_literals(Path(path))
    wanted = {cfg.training.label: "the label"}
    if inputs is not None:
        wanted.update({k: "an entity join key" for k in inputs.entity_keys})
        wanted.update({k: "a request field" for k in inputs.request_fields})
    missing = [f"{name!r} ({what})" for name, what in wanted.items() if name not in literals]
    if missing:
        report.add("transform", "warn", f"{Path(path).name} never writes the text of {', '.join(missing)}: the "
                   "labels partition must carry event_timestamp, the entity keys, the request fields and the "
                   "label (see docs/adding-a-model.md)", missing=missing)
    else:
        report.add("transform", "ok", f"{Path(path).name} names the label, entity keys and request fields")


def _check_smoke_request(report: Report, cfg: Any, inputs: ServiceInputs | None, features: list[str]) -> None:
    smoke = dict(cfg.serving.smoke_request or {})
    if inputs is None:
        report.add("smoke_request", "skipped", "needs the FeatureService's inputs (see 'definitions')")
        return
    schema, source = served_request_schema(cfg, inputs)
    if schema is None:
        schema = fallback_request_schema(cfg.model, inputs, features)
    report.request_schema = schema
    if not smoke:
        report.add("smoke_request", "warn", "serving.smoke_request is empty: the deploy DAG cannot check the new "
                   f"server before traffic switches; e.g. {{{', '.join(f'{k}: ...' for k in schema['required'])}}}",
                   schema_source=source)
        return
    errors = request_errors(smoke, schema)
    if errors:
        report.add("smoke_request", "error", f"serving.smoke_request is not a valid {schema.get('title')}: "
                   + "; ".join(errors), schema_source=source)
    else:
        report.add("smoke_request", "ok", f"valid {schema.get('title')} ({source})", schema_source=source)


__all__ = ["Check", "Report", "ServiceInputs", "fallback_request_schema", "repo_model_names",
           "request_errors", "served_request_schema", "service_inputs", "validate_pipeline"]
