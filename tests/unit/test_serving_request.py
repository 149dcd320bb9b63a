"""Serving: the request schema generated from a feature service + the YAML, the strict pydantic models built
from it, the bundled service config, the model version's task, and smoke-test verdicts over real HTTP."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import ValidationError

from mlops_provider.exceptions import ConfigError, DeploymentError
from mlops_provider.runtime.serving.checks import smoke_test
from mlops_provider.runtime.serving.package import pinned_requirements, safe_name
from mlops_provider.runtime.serving.request_schema import (
    check_request,
    example_request,
    parse_datetime,
    project_requests,
    request_schema,
)
from mlops_provider.runtime.serving.schema import (
    TaskInfo,
    build_models,
    load_service_config,
    validate_request,
)

REPO = Path(__file__).resolve().parents[2]

#: What feature_service_info reads from a Feast registry (the example's shape; any model works the same way).
INFO = {
    "name": "flights_delay_v1",
    "model": "flights_delay",
    "entities": [
        {"name": "origin", "join_key": "origin", "dtype": "STRING", "description": "Departure airport"},
        {"name": "carrier", "join_key": "carrier", "dtype": "STRING"},
        {"name": "tailnum", "join_key": "tailnum", "dtype": "STRING"},
    ],
    "request_fields": [
        {"name": "sched_dep_hour", "dtype": "INT64"},
        {"name": "weekday", "dtype": "INT64"},
        {"name": "month", "dtype": "INT64"},
        {"name": "distance", "dtype": "FLOAT64"},
    ],
    "views": [{"name": "origin_weather_hourly", "features": ["temp"], "join_keys": ["origin"], "ttl_s": 10800.0}],
    "on_demand": [],
}
SERVING = {
    "request": {
        "fields": {
            "origin": {"pattern": "^[A-Z0-9]{3,4}$", "example": "JFK"},
            "carrier": {"min_length": 2, "max_length": 3},
            "sched_dep_hour": {"min": 0, "max": 23},
            "weekday": {"min": 0, "max": 6, "default": 0, "description": "0 = Monday"},
            "month": {"enum": [6, 7, 8]},
            "distance": {"min": 1, "max": 20000},
        },
    },
}
GOOD = {"origin": "JFK", "carrier": "UA", "tailnum": "N14228", "sched_dep_hour": 17, "weekday": 4, "month": 6,
        "distance": 1400}


@pytest.fixture(scope="module")
def models():
    return build_models(request_schema(INFO, SERVING), TaskInfo())


def _ok(models, req: dict) -> None:
    validate_request(models, req)


def _bad(models, req: dict) -> None:
    with pytest.raises(ValidationError):
        validate_request(models, req)


# ------------------------------------------------------------------ the generated schema
def test_schema_comes_from_the_feature_service_and_the_yaml() -> None:
    s = request_schema(INFO, SERVING)
    assert (s["request_model"], s["prediction_model"], s["batch_model"]) == (
        "FlightsDelayRequest", "FlightsDelayPrediction", "FlightsDelayBatchScore")
    assert s["entity_keys"] == ["origin", "carrier", "tailnum"]
    assert s["request_fields"] == ["sched_dep_hour", "weekday", "month", "distance"]
    by = {f["name"]: f for f in s["fields"]}
    assert by["origin"]["type"] == "string" and by["origin"]["max_length"] == 256 and by["origin"]["examples"] == ["JFK"]
    assert by["sched_dep_hour"]["type"] == "integer" and (by["sched_dep_hour"]["minimum"], by["sched_dep_hour"]["maximum"]) == (0, 23)
    assert by["tailnum"]["type"] == "string" and by["tailnum"]["required"] is True
    assert by["weekday"]["required"] is False and by["weekday"]["default"] == 0
    assert by["distance"]["type"] == "number" and by["month"]["enum"] == [6, 7, 8]
    assert by["event_timestamp"]["type"] == "datetime" and by["event_timestamp"]["required"] is False
    assert by["request_id"]["max_length"] == 128
    # without the YAML: types only (and int64 bounds), every field required
    bare = {f["name"]: f for f in request_schema(INFO)["fields"]}
    assert bare["sched_dep_hour"]["maximum"] == 2**63 - 1 and bare["weekday"]["required"] is True
    no_event = request_schema(INFO, {"request": {"event_timestamp": False}})
    assert "event_timestamp" not in {f["name"] for f in no_event["fields"]}


@pytest.mark.parametrize(
    ("serving", "match"),
    [
        ({"request": {"fields": {"no_such": {"min": 1}}}}, r"\['no_such'\] are not request fields"),
        ({"request": {"fields": {"origin": {"min": 1}}}}, "min/max apply to numbers"),
        ({"request": {"fields": {"distance": {"pattern": "x"}}}}, "apply to strings"),
        ({"request": {"fields": {"month": {"enum": [6, "7"]}}}}, "enum value '7'"),
        ({"request": {"fields": {"month": {"min": 5, "default": 4}}}}, "default 4: below the minimum 5"),
        ({"request": {"fields": {"sched_dep_hour": {"min": 0.5, "max": 0.7}}}}, "no value fits"),
        ({"request": {"examples": [{"origin": "JFK"}]}}, "examples\\[0\\] does not fit"),
    ],
)
def test_yaml_limits_that_do_not_fit_are_config_errors(serving: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        request_schema(INFO, serving)


def test_reserved_names_and_unsupported_types() -> None:
    with pytest.raises(ConfigError, match="reserved"):
        request_schema({**INFO, "request_fields": [{"name": "event_timestamp", "dtype": "INT64"}]})
    with pytest.raises(ConfigError, match="not supported"):
        request_schema({**INFO, "request_fields": [{"name": "v", "dtype": "FLOAT_LIST"}]})


def test_the_serving_spec_dataclass_is_accepted_and_validated() -> None:
    from mlops_provider.specs import ServingSpec

    spec = ServingSpec.parse(SERVING)
    assert request_schema(INFO, spec) == request_schema(INFO, SERVING)
    assert spec.threshold == 0.5 and spec.workers == 1 and spec.stale_features == "impute" and spec.front == 3000
    assert ServingSpec.parse({"front_port": 8080}).front == 8080  # the deprecated key still names the front
    for bad in ({"stale_features": "drop"}, {"workers": 0}, {"threshold": 1.5},
                {"request": {"fields": {"x": {"min": 2, "max": 1}}}}, {"request": {"fields": {"x": {"pattern": "("}}}}):
        with pytest.raises(ValidationError):
            ServingSpec.parse(bad)


# ------------------------------------------------------------------ strict models
def test_good_requests_pass_and_types_are_strict(models) -> None:
    _ok(models, GOOD)
    _ok(models, {k: v for k, v in GOOD.items() if k != "weekday"})  # optional with a default
    _ok(models, {**GOOD, "event_timestamp": "2013-07-01T08:00:00Z", "request_id": "r1"})
    row = validate_request(models, {**GOOD, "event_timestamp": "2013-07-01T10:00:00+02:00"})
    assert row.event_timestamp.utcoffset().total_seconds() == 7200 and row.weekday == 4  # type: ignore[attr-defined]
    assert validate_request(models, {k: v for k, v in GOOD.items() if k != "weekday"}).weekday == 0  # type: ignore[attr-defined]
    assert type(validate_request(models, GOOD).distance) is float  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "change",
    [
        {"sched_dep_hour": "17"},  # no coercion of strings into numbers
        {"sched_dep_hour": 17.0},  # nor of floats into integers
        {"sched_dep_hour": True},
        {"distance": False},
        {"distance": "1400"},
        {"origin": 123},
        {"sched_dep_hour": 24},
        {"weekday": 7},
        {"month": 1},  # not in the enum
        {"distance": 0},
        {"origin": "jfk"},  # the YAML's pattern
        {"origin": " JFK"},  # no whitespace stripping either
        {"carrier": "U"},
        {"tailnum": "x" * 257},  # the default string limit
        {"unexpected": 1},
        {"request_id": "x" * 129},
        {"request_id": None},
        {"event_timestamp": None},
        {"event_timestamp": "2013-07-01"},  # a date is not a date-time
        {"event_timestamp": "2013-07-01T08:00:00"},  # no offset
        {"event_timestamp": "2013-02-30T08:00:00Z"},
        {"event_timestamp": 1372665600},
    ],
)
def test_bad_requests_are_rejected(models, change: dict) -> None:
    _bad(models, {**GOOD, **change})


@pytest.mark.parametrize("raw", [b'{"distance": NaN}', b'{"distance": Infinity}', b'{"distance": 1e999}'])
def test_non_finite_numbers_are_rejected(models, raw: bytes) -> None:
    body = json.dumps({k: v for k, v in GOOD.items() if k != "distance"})[:-1] + ", " + raw.decode()[1:]
    with pytest.raises(ValidationError):
        models.request.model_validate_json(body)


@pytest.mark.parametrize("missing", ["origin", "carrier", "tailnum", "sched_dep_hour", "month", "distance"])
def test_required_fields(models, missing: str) -> None:
    with pytest.raises(ValidationError, match=missing):
        validate_request(models, {k: v for k, v in GOOD.items() if k != missing})


def test_openapi_names_and_schema(models) -> None:
    js = models.request.model_json_schema()
    assert js["title"] == "FlightsDelayRequest" and js["additionalProperties"] is False
    assert js["properties"]["event_timestamp"] == {
        "description": js["properties"]["event_timestamp"]["description"], "format": "date-time",
        "title": "Event Timestamp", "type": "string"}
    assert "default" not in js["properties"]["request_id"]  # an omitted id is generated, not null
    assert js["properties"]["weekday"]["default"] == 0 and js["properties"]["month"]["enum"] == [6, 7, 8]
    assert set(js["required"]) == {"origin", "carrier", "tailnum", "sched_dep_hour", "month", "distance"}
    assert models.prediction.__name__ == "FlightsDelayPrediction" and models.batch.__name__ == "FlightsDelayBatchScore"


def test_rfc3339_parsing_edges() -> None:
    assert parse_datetime("2013-07-01t08:00:00.1234567z").microsecond == 123456
    assert parse_datetime("2016-12-31T23:59:60Z").second == 59  # a leap second
    assert parse_datetime("0001-01-01T00:00:00+23:59").year == 1
    for bad in ("2013-07-01 08:00:00Z", "2013-7-1T08:00:00Z", "2013-07-01T08:00:00+24:00", "x"):
        with pytest.raises(ValueError):
            parse_datetime(bad)


# ------------------------------------------------------------------ responses per task (TASK-CONTRACT)
def test_response_models_per_task() -> None:
    schema = request_schema(INFO)
    binary = build_models(schema, TaskInfo()).prediction
    assert set(binary.model_json_schema()["properties"]) == {"request_id", "model_version", "probability", "prediction"}
    with pytest.raises(ValidationError):
        binary(request_id="a", model_version="1", probability=1.2, prediction=1)
    multi = build_models(schema, TaskInfo(type="multiclass", classes=["a", "b", "c"])).prediction
    js = multi.model_json_schema()["properties"]
    assert js["prediction"]["enum"] == ["a", "b", "c"] and js["probabilities"]["type"] == "object"
    reg = build_models(schema, TaskInfo(type="regression", quantiles=[0.1, 0.9])).prediction
    assert set(reg.model_json_schema()["properties"]) == {"request_id", "model_version", "prediction", "quantiles"}
    point = build_models(schema, TaskInfo(type="regression")).prediction
    assert "quantiles" not in point.model_json_schema()["properties"]


def test_task_from_the_model_version_tags() -> None:
    assert TaskInfo.from_tags({}).type == "binary"  # an older version without tags
    t = TaskInfo.from_tags({"mlops.task": "multiclass", "mlops.classes": '["x", "y"]', "mlops.label": "kind"})
    assert (t.type, t.classes, t.label, t.score_column) == ("multiclass", ["x", "y"], "kind", "prediction")
    assert TaskInfo.from_tags({"mlops.task": "regression", "mlops.quantiles": "[0.1, 0.9]"}).quantiles == [0.1, 0.9]
    with pytest.raises(ConfigError, match="mlops.classes"):
        TaskInfo.from_tags({"mlops.task": "multiclass"})
    with pytest.raises(ConfigError, match="expected one of"):
        TaskInfo.from_tags({"mlops.task": "ranking"})


# ------------------------------------------------------------------ projection of snapshot rows
def test_snapshot_rows_are_projected_on_the_request_schema() -> None:
    schema = request_schema(INFO, SERVING)
    rows = [
        {**GOOD, "sched_dep_hour": 17.0, "month": 6.0, "distance": 1400, "temp": 55.0, "event_timestamp": "x"},
        {**GOOD, "origin": None},  # a missing value with an example: filled
        {**GOOD, "tailnum": float("nan")},  # missing, no default, no example: skipped
        {**GOOD, "month": 1.0},  # outside the enum: skipped
        {**GOOD, "weekday": None},  # the default applies: omitted
    ]
    reqs, index = project_requests(rows, schema, prefix="p-")
    assert index == [0, 1, 4]
    assert reqs[0] == {"origin": "JFK", "carrier": "UA", "tailnum": "N14228", "sched_dep_hour": 17, "weekday": 4,
                       "month": 6, "distance": 1400.0, "request_id": "p-0"}
    assert type(reqs[0]["sched_dep_hour"]) is int and type(reqs[0]["distance"]) is float
    assert reqs[1]["origin"] == "JFK" and "weekday" not in reqs[2]
    assert all(check_request(r, schema) == [] for r in reqs)
    assert check_request({**GOOD, "x": 1}, schema) == [f"'x': unknown field (known: {sorted(f['name'] for f in schema['fields'])})"]
    assert example_request(schema) is None  # tailnum has neither a default nor an example
    assert example_request(request_schema(INFO, {"request": {"examples": [GOOD]}})) == GOOD


# ------------------------------------------------------------------ config
def _config(tmp_path: Path) -> Path:
    p = tmp_path / "bento_config.json"
    p.write_text(json.dumps({
        "model_name": "m", "model_tag": "m:v1", "model_version": "1", "bento_tag": "m_service:v1-x",
        "feature_repo": "/repo", "feature_service": "fs", "categorical": ["c"], "numeric": ["n"],
        "inference_log_dir": "/log", "task": {"type": "regression", "quantiles": [0.5]},
    }))
    return p


def test_service_config_file_and_env_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_BENTO_CONFIG", str(_config(tmp_path)))
    cfg = load_service_config()
    assert cfg.raw_columns == ["c", "n"] and cfg.threshold == 0.5 and cfg.task.type == "regression"
    assert cfg.workers == 1 and cfg.stale_features == "impute" and cfg.request_schema is None
    monkeypatch.setenv("MLOPS_FEATURE_REPO", "/elsewhere")
    monkeypatch.setenv("MLOPS_THRESHOLD", "0.3")
    cfg = load_service_config()
    assert cfg.feature_repo == "/elsewhere" and cfg.threshold == 0.3


def test_missing_service_config_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="package_bento"):
        load_service_config(tmp_path / "nope.json")


def test_tag_names_and_pins() -> None:
    assert safe_name("Flights Delay/V2") == "flights_delay_v2"
    with pytest.raises(DeploymentError):
        safe_name("///")
    reqs = pinned_requirements(["pandas>=1", "torch==2.13.0", "# comment", "-r other.txt"])
    names = [r.split("==")[0].split(">=")[0].lower() for r in reqs]
    assert "bentoml" in names and "torch" in names and names.count("pandas") == 1
    assert not any(r.startswith(("#", "-")) for r in reqs)
    assert next(r for r in reqs if r.lower().startswith("pandas")).startswith("pandas==")  # serving pin wins
    from importlib.metadata import version

    assert f"pyyaml=={version('pyyaml')}" in pinned_requirements(["pyyaml", "not-installed-pkg-xyz"])
    assert "not-installed-pkg-xyz" in pinned_requirements(["not-installed-pkg-xyz"])


#: The example's column names and meaning: none of them may appear in the serving library code.
EXAMPLE_LITERALS = re.compile(
    r"(?i:origin|carrier|tailnum|delayed|flight|sched_dep|weekday|distance|nycflights|JFK|N14228)|"
    r"FlightRequest|ENTITY_KEYS|DEFAULT_REQUEST_FIELDS|DELAY_THRESHOLD"
)


def test_no_example_literal_in_the_serving_library() -> None:
    pkg = REPO / "provider" / "mlops_provider"
    files = [*sorted((pkg / "runtime" / "serving").rglob("*.py")), pkg / "operators" / "bentoml.py",
             pkg / "hooks" / "bentoml.py", pkg / "hooks" / "bentocloud.py"]
    hits = [f"{f.relative_to(REPO)}:{i}: {line.strip()}" for f in files
            for i, line in enumerate(f.read_text().splitlines(), 1) if EXAMPLE_LITERALS.search(line)]
    assert hits == []


# ------------------------------------------------------------------ smoke test against a real HTTP server
class _Handler(BaseHTTPRequestHandler):
    reply: tuple[int, str] = (200, "[]")
    seen: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization"),
                                "traffic": self.headers.get("X-Mlops-Traffic")})
        status, text = type(self).reply
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(text.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("H", (_Handler,), {"seen": []})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", handler
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.parametrize(
    "reply",
    [
        '[{"request_id": "a", "model_version": "3", "probability": 0.25, "prediction": 0}]',
        '[{"request_id": "a", "model_version": "3", "prediction": "b", "probabilities": {"a": 0.2, "b": 0.8}}]',
        '[{"request_id": "a", "model_version": "3", "prediction": 12.5, "quantiles": {"0.1": 3.0}}]',
    ],
    ids=["binary", "multiclass", "regression"],
)
def test_smoke_test_accepts_a_good_answer_of_every_task(server, reply: str) -> None:
    url, handler = server
    handler.reply = (200, reply)
    out = smoke_test(url, GOOD, headers={"Authorization": "Bearer t"})
    assert out["model_version"] == "3"
    seen = handler.seen[0]
    assert seen["path"] == "/predict" and seen["auth"] == "Bearer t" and seen["traffic"] == "smoke"
    assert seen["body"]["requests"][0]["request_id"].startswith("smoke-")


@pytest.mark.parametrize(
    "reply",
    [
        (500, '{"error": "boom"}'),
        (400, '{"error": "bad"}'),
        (200, "not json"),
        (200, "[]"),
        (200, '[{"request_id": "a"}]'),
        (200, '[{"request_id": "a", "probability": NaN, "prediction": 0}]'),
        (200, '[{"request_id": "a", "probability": 1.5, "prediction": 1}]'),
        (200, '[{"request_id": "a", "probability": -0.1, "prediction": 0}]'),
        (200, '[{"request_id": "a", "probability": "0.3", "prediction": 0}]'),
        (200, '[{"request_id": "a", "probability": true, "prediction": 0}]'),
        (200, '[{"request_id": "a", "probability": 0.3, "prediction": true}]'),
        (200, '[{"request_id": "a", "probability": 0.3}]'),
        (200, '[{"request_id": "a", "prediction": "c", "probabilities": {"a": 0.2, "b": 0.8}}]'),
        (200, '[{"request_id": "a", "prediction": "Infinity"}]'),
    ],
)
def test_smoke_test_rejects_bad_answers(server, reply: tuple[int, str]) -> None:
    url, handler = server
    handler.reply = reply
    with pytest.raises(DeploymentError, match="Smoke test"):
        smoke_test(url, GOOD)


def test_smoke_test_unreachable_endpoint() -> None:
    with pytest.raises(DeploymentError, match="could not reach"):
        smoke_test("http://127.0.0.1:9", GOOD, timeout=2)
