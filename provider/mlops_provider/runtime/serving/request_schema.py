"""The request schema of a model's endpoint, generated from its Feast FeatureService and its YAML (pure).

Nothing here imports Feast, pydantic or pandas: ``mlops validate`` and the packaging task share it.

- :func:`request_schema` (pure): a *feature service info* (what
  :func:`mlops_provider.runtime.serving.feature_service.feature_service_info` reads from a Feast registry:
  entity join keys with their value types, RequestSource fields with their dtypes, feature views with
  their TTLs) + ``serving`` (the YAML's :class:`~mlops_provider.specs.ServingSpec` or its dict) -> the
  request schema, a JSON-able dict bundled in the bento (``request_schema`` in ``bento_config.json``)::

      {"model": "churn_risk", "request_model": "ChurnRiskRequest",
       "prediction_model": "ChurnRiskPrediction", "batch_model": "ChurnRiskBatchScore",
       "entity_keys": [...], "request_fields": [...],
       "fields": [{"name", "role": entity|request|event_time|meta, "type": string|integer|number|boolean|
                   datetime, "required", "default"?, "minimum"?, "maximum"?, "min_length"?, "max_length"?,
                   "pattern"?, "enum"?, "description"?, "examples"?}, ...],
       "examples": [{...}, ...]}

  The service builds its pydantic request / response models from it at startup
  (:func:`mlops_provider.runtime.serving.schema.build_models`).
- :func:`project_requests` (pure): rows of raw feature columns (an evaluation snapshot, an MLflow input
  example) -> requests of that schema (what warm-up, the default smoke request and infra validation send).
- :func:`check_request` (pure): the problems of one request against the schema (the smoke request of the
  YAML is checked at package time; the service itself validates with pydantic).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from mlops_provider.exceptions import ConfigError

#: Optional field: the request's event time (features are served as of it; the log is stamped with it).
EVENT_TIME_FIELD = "event_timestamp"
#: Optional field: the caller's id (echoed back and logged); generated when absent.
REQUEST_ID_FIELD = "request_id"
REQUEST_ID_MAX_LENGTH = 128
#: Reserved names a feature service may not use for a join key or request field.
RESERVED = (EVENT_TIME_FIELD, REQUEST_ID_FIELD)
#: Request header naming the traffic class; only ``live`` traffic counts in monitoring windows.
TRAFFIC_HEADER = "X-Mlops-Traffic"
TRAFFIC_CLASSES = ("live", "smoke", "infra_validation", "warmup", "shadow")
DEFAULT_TRAFFIC = "live"

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1

#: Feast value types (``ValueType`` names / ``feast.types`` names, upper case) -> JSON type.
_TYPES = {
    "STRING": "string",
    "BYTES": "string",
    "INT64": "integer",
    "INT32": "integer",
    "FLOAT64": "number",
    "FLOAT": "number",
    "FLOAT32": "number",
    "DOUBLE": "number",
    "BOOL": "boolean",
    "UNIX_TIMESTAMP": "datetime",
    "UNIXTIMESTAMP": "datetime",
}
_INT_RANGE = {"INT64": (INT64_MIN, INT64_MAX), "INT32": (INT32_MIN, INT32_MAX)}

#: RFC 3339 date-time (what the OpenAPI ``format: date-time`` means).
RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$"
)


def parse_datetime(value: str) -> datetime:
    """An RFC 3339 date-time as an aware datetime (fractions beyond microseconds are truncated).

    Raises ValueError for anything else (a date alone, a missing offset, day 31 of June, ...).
    """
    m = RFC3339.match(value) if isinstance(value, str) else None
    if m is None:
        raise ValueError("expected an RFC 3339 date-time such as 2013-07-01T08:00:00Z")
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    micro = int((m.group(7) or "0")[:6].ljust(6, "0"))
    if m.group(8):
        tz = UTC
    else:
        hh, mm = int(m.group(10)), int(m.group(11))
        if hh > 23 or mm > 59:
            raise ValueError("offset out of range")
        delta = timedelta(hours=hh, minutes=mm)
        tz = timezone(-delta if m.group(9) == "-" else delta)
    if second == 60:  # a leap second: the instant before the next minute
        second, micro = 59, 999_999
    return datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)


def camel(name: str) -> str:
    """``churn_risk`` -> ``ChurnRisk`` (the OpenAPI model names' prefix)."""
    parts = [p for p in re.split(r"[^A-Za-z0-9]+", name) if p]
    out = "".join(p[:1].upper() + p[1:] for p in parts) or "Model"
    return out if out[0].isalpha() else f"M{out}"


def spec_value(spec: Any, key: str, default: Any = None) -> Any:
    """``spec.key`` of a spec dataclass or ``spec[key]`` of its dict form (``default`` when absent / None spec)."""
    if spec is None:
        return default
    if isinstance(spec, Mapping):
        return spec.get(key, default)
    return getattr(spec, key, default)


def json_type(dtype: str) -> str:
    """The JSON type of a Feast value type name (``STRING``, ``Int64``, ``ValueType.FLOAT`` ...)."""
    key = str(dtype).rsplit(".", 1)[-1].upper()
    if key not in _TYPES:
        raise ConfigError(
            f"Feast type {dtype!r} is not supported in a request (use a scalar: String, Int32, Int64, Float32, "
            f"Float64, Bool or UnixTimestamp)."
        )
    return _TYPES[key]


def _base_field(name: str, role: str, dtype: str, description: str | None, max_string_length: int) -> dict[str, Any]:
    jt = json_type(dtype)
    out: dict[str, Any] = {"name": name, "role": role, "type": jt, "required": True}
    key = str(dtype).rsplit(".", 1)[-1].upper()
    if jt == "integer":
        out["minimum"], out["maximum"] = _INT_RANGE.get(key, (INT64_MIN, INT64_MAX))
    if jt == "string":
        out["max_length"] = max_string_length
    if description:
        out["description"] = description
    return out


def _apply_limits(field: dict[str, Any], limits: Any, where: str) -> None:
    """Narrow ``field`` with the YAML's ``serving.request.fields.<name>`` (errors name the field)."""
    jt = field["type"]
    lo, hi = spec_value(limits, "min"), spec_value(limits, "max")
    min_len, max_len, pattern = spec_value(limits, "min_length"), spec_value(limits, "max_length"), spec_value(limits, "pattern")
    enum, default, example = spec_value(limits, "enum"), spec_value(limits, "default"), spec_value(limits, "example")
    if (lo is not None or hi is not None) and jt not in ("integer", "number"):
        raise ConfigError(f"{where}: min/max apply to numbers, but {field['name']!r} is a {jt}")
    if (min_len is not None or max_len is not None or pattern is not None) and jt != "string":
        raise ConfigError(f"{where}: min_length/max_length/pattern apply to strings, but {field['name']!r} is a {jt}")
    if lo is not None:
        lo = math.ceil(lo) if jt == "integer" else float(lo)
        field["minimum"] = max(lo, field["minimum"]) if "minimum" in field else lo
    if hi is not None:
        hi = math.floor(hi) if jt == "integer" else float(hi)
        field["maximum"] = min(hi, field["maximum"]) if "maximum" in field else hi
    if "minimum" in field and "maximum" in field and field["minimum"] > field["maximum"]:
        raise ConfigError(f"{where}: no value fits min {field['minimum']} and max {field['maximum']}")
    if min_len is not None:
        field["min_length"] = int(min_len)
    if max_len is not None:
        field["max_length"] = int(max_len)
    if pattern is not None:
        field["pattern"] = str(pattern)
    if spec_value(limits, "description"):
        field["description"] = str(spec_value(limits, "description"))
    if enum is not None:
        values = list(enum)
        for v in values:
            problem = _value_problem(field, v, check_enum=False)
            if problem:
                raise ConfigError(f"{where}: enum value {v!r}: {problem}")
        field["enum"] = values
    if default is not None:
        problem = _value_problem(field, default)
        if problem:
            raise ConfigError(f"{where}: default {default!r}: {problem}")
        field["default"] = default
        field["required"] = False
    if example is not None:
        problem = _value_problem(field, example)
        if problem:
            raise ConfigError(f"{where}: example {example!r}: {problem}")
        field["examples"] = [example]


def request_schema(feature_service_info: Mapping[str, Any], serving_spec: Any = None) -> dict[str, Any]:
    """The request schema of a model (module docstring): pure, no Feast needed.

    ``feature_service_info``: ``{"name", "model"?, "entities": [{"join_key", "dtype", "description"?}],
    "request_fields": [{"name", "dtype"}], ...}``; ``serving_spec``: the YAML's ``serving`` section (a
    :class:`~mlops_provider.specs.ServingSpec` or a dict; None: defaults). Raises
    :class:`~mlops_provider.exceptions.ConfigError` naming the offending key.
    """
    model = str(feature_service_info.get("model") or feature_service_info.get("name") or "model")
    req = spec_value(serving_spec, "request") or {}
    max_str = int(spec_value(req, "max_string_length", 256) or 256)
    fields: list[dict[str, Any]] = []
    seen: set[str] = set()
    names: dict[str, list[str]] = {"entity": [], "request": []}
    sources = [("entity", "join_key", e) for e in feature_service_info.get("entities", [])] + [
        ("request", "name", r) for r in feature_service_info.get("request_fields", [])]
    for role, key, item in sources:
        name = str(item[key])
        if name in seen:
            continue
        seen.add(name)
        names[role].append(name)
        fields.append(_base_field(name, role, str(item["dtype"]), item.get("description"), max_str))
    entity_keys, request_fields = names["entity"], names["request"]
    clash = sorted(seen & set(RESERVED))
    if clash:
        raise ConfigError(
            f"Feature service {feature_service_info.get('name')!r} uses the reserved request field name(s) {clash} "
            f"for a join key or request-time field; rename them ({', '.join(RESERVED)} are the service's own)."
        )
    limits = dict(spec_value(req, "fields") or {})
    unknown = sorted(set(limits) - seen)
    if unknown:
        raise ConfigError(
            f"serving.request.fields: {unknown} are not request fields of feature service "
            f"{feature_service_info.get('name')!r}; the request fields are {sorted(seen)} (entity join keys and "
            "RequestSource fields)."
        )
    for f in fields:
        if f["name"] in limits:
            _apply_limits(f, limits[f["name"]], f"serving.request.fields.{f['name']}")
    if spec_value(req, "event_timestamp", True):
        fields.append({
            "name": EVENT_TIME_FIELD, "role": "event_time", "type": "datetime", "required": False,
            "description": "Event time of the request (RFC 3339; default: when the request arrives). Features "
                           "are served as of it; the inference log is stamped with it.",
        })
    fields.append({
        "name": REQUEST_ID_FIELD, "role": "meta", "type": "string", "required": False,
        "max_length": REQUEST_ID_MAX_LENGTH,
        "description": "Caller's id, echoed back and logged; generated when absent.",
    })
    schema: dict[str, Any] = {
        "model": model,
        "feature_service": feature_service_info.get("name"),
        "request_model": f"{camel(model)}Request",
        "prediction_model": f"{camel(model)}Prediction",
        "batch_model": f"{camel(model)}BatchScore",
        "entity_keys": entity_keys,
        "request_fields": request_fields,
        "fields": fields,
        "examples": [],
    }
    for i, ex in enumerate(spec_value(req, "examples") or []):
        problems = check_request(ex, schema)
        if problems:
            raise ConfigError(f"serving.request.examples[{i}] does not fit the request schema: {'; '.join(problems)}")
        schema["examples"].append(dict(ex))
    return schema


# ---------------------------------------------------------------------------------------------- checks
def _value_problem(field: Mapping[str, Any], v: Any, *, check_enum: bool = True) -> str | None:
    """Why ``v`` is not a valid value of ``field`` (None: it is). Strict: no coercion."""
    jt = field["type"]
    if jt == "string" or jt == "datetime":
        if not isinstance(v, str):
            return f"expected a string, got {type(v).__name__}"
        if jt == "datetime":
            try:
                parse_datetime(v)
            except ValueError as e:
                return f"not an RFC 3339 date-time (e.g. 2013-07-01T08:00:00Z): {e}"
            return None
        if "min_length" in field and len(v) < field["min_length"]:
            return f"shorter than {field['min_length']} characters"
        if "max_length" in field and len(v) > field["max_length"]:
            return f"longer than {field['max_length']} characters"
        if "pattern" in field and re.search(field["pattern"], v) is None:
            return f"does not match {field['pattern']!r}"
    elif jt == "integer":
        if isinstance(v, bool) or not isinstance(v, int):
            return f"expected an integer, got {type(v).__name__}"
    elif jt == "number":
        if isinstance(v, bool) or not isinstance(v, int | float):
            return f"expected a number, got {type(v).__name__}"
        if not math.isfinite(v):
            return "not a finite number"
    elif jt == "boolean":
        if not isinstance(v, bool):
            return f"expected true/false, got {type(v).__name__}"
    if jt in ("integer", "number"):
        if "minimum" in field and v < field["minimum"]:
            return f"below the minimum {field['minimum']}"
        if "maximum" in field and v > field["maximum"]:
            return f"above the maximum {field['maximum']}"
    if check_enum and "enum" in field and v not in field["enum"]:
        return f"not one of {field['enum']}"
    return None


def check_request(request: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    """Problems of ``request`` against ``schema`` (empty: valid). Unknown and missing fields count."""
    if not isinstance(request, Mapping):
        return [f"a request is a JSON object, got {type(request).__name__}"]
    by_name = {f["name"]: f for f in schema["fields"]}
    problems = [f"{k!r}: unknown field (known: {sorted(by_name)})" for k in request if k not in by_name]
    for name, f in by_name.items():
        if name not in request:
            if f.get("required"):
                problems.append(f"{name!r}: required")
            continue
        p = _value_problem(f, request[name])
        if p:
            problems.append(f"{name!r}: {p}")
    return problems


# ---------------------------------------------------------------------------------------------- projection
def _missing(v: Any) -> bool:
    if v is None:
        return True
    if isinstance(v, float) and math.isnan(v):
        return True
    return str(v) in ("NaT", "nan", "None", "<NA>")


def _coerce(field: Mapping[str, Any], v: Any) -> Any:
    """A raw frame value as the JSON value the field takes (ints stored as floats become ints ...)."""
    if hasattr(v, "item") and not isinstance(v, str | bytes):
        try:
            v = v.item()
        except (ValueError, AttributeError):
            pass
    jt = field["type"]
    if jt == "integer" and isinstance(v, float) and v.is_integer():
        return int(v)
    if jt == "number" and isinstance(v, int) and not isinstance(v, bool):
        return float(v)
    if jt == "string" and not isinstance(v, str):
        return str(v)
    if jt == "datetime":
        if isinstance(v, datetime):
            ts = v if v.tzinfo else v.replace(tzinfo=UTC)
            return ts.isoformat()
        if hasattr(v, "isoformat"):
            return str(v.isoformat())
    return v


def project_requests(
    rows: Sequence[Mapping[str, Any]],
    schema: Mapping[str, Any],
    *,
    prefix: str = "",
    event_time: bool = False,
    event_time_column: str = EVENT_TIME_FIELD,
) -> tuple[list[dict[str, Any]], list[int]]:
    """Requests of ``schema`` from rows of raw columns; returns ``(requests, index of the source row of each)``.

    A request takes the row's entity keys and request-time fields; a missing value takes the field's
    default, else its example, else the row is skipped (so is a row whose values the schema rejects).
    ``prefix`` + the row position becomes ``request_id``; with ``event_time`` the row's
    ``event_time_column`` becomes ``event_timestamp`` (when the schema accepts one).
    """
    fields = [f for f in schema["fields"] if f["role"] in ("entity", "request")]
    has_event = any(f["name"] == EVENT_TIME_FIELD for f in schema["fields"])
    out: list[dict[str, Any]] = []
    index: list[int] = []
    for i, row in enumerate(rows):
        req: dict[str, Any] = {}
        ok = True
        for f in fields:
            v = row.get(f["name"])
            if _missing(v):
                if "default" in f:
                    continue
                if f.get("examples"):
                    v = f["examples"][0]
                else:
                    ok = False
                    break
            req[f["name"]] = _coerce(f, v)
        if not ok:
            continue
        if event_time and has_event and not _missing(row.get(event_time_column)):
            req[EVENT_TIME_FIELD] = _coerce({"type": "datetime"}, row[event_time_column])
        if prefix:
            req[REQUEST_ID_FIELD] = f"{prefix}{i}"
        if check_request(req, schema):
            continue
        out.append(req)
        index.append(i)
    return out, index


def example_request(schema: Mapping[str, Any]) -> dict[str, Any] | None:
    """A request built from the schema's own defaults and examples (None when a required field has none)."""
    if schema.get("examples"):
        return dict(schema["examples"][0])
    req: dict[str, Any] = {}
    for f in schema["fields"]:
        if f["role"] not in ("entity", "request"):
            continue
        if f.get("examples"):
            req[f["name"]] = f["examples"][0]
        elif f.get("required"):
            return None
    return req
