"""The service's ASGI guard as a real ASGI app: traffic classes, overload and stale-feature answers, 4xx bodies
and headers, the corrected OpenAPI document; and the log filter that keeps client errors traceback-free."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx
import pytest

from mlops_provider.runtime.serving.guard import (
    RequestGuardMiddleware,
    _ClientErrorFilter,
    install_log_filter,
    openapi_document,
)
from mlops_provider.runtime.serving.schema import current_request_state


def _app(status: int = 200, body: Any = None, headers: list | None = None, reject: dict | None = None):
    """An inner app answering ``status``; it reports the request state it saw (and may mark it rejected)."""

    async def app(scope, receive, send):
        while (await receive()).get("more_body"):
            pass
        state = current_request_state()
        if reject:
            state["rejected"].update(reject)
        payload = json.dumps(body if body is not None else {"traffic": state["traffic"]}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), *(headers or [])]})
        await send({"type": "http.response.body", "body": payload})

    return app


def _call(app, method: str = "POST", path: str = "/predict", headers: dict | None = None,
          body: bytes = b"{}") -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return await client.request(method, path, content=body if method == "POST" else None,
                                        headers={"content-type": "application/json", **(headers or {})})

    return asyncio.run(go())


def test_traffic_class_reaches_the_request_state() -> None:
    app = RequestGuardMiddleware(_app())
    assert _call(app).json() == {"traffic": "live"}
    for t in ("smoke", "infra_validation", "warmup", "shadow", "live"):
        assert _call(app, headers={"X-Mlops-Traffic": t}).json() == {"traffic": t}
    for bad in ("LIVE", "", "prod"):
        r = _call(app, headers={"X-Mlops-Traffic": bad})
        assert r.status_code == 400 and r.json()["detail"][0]["loc"] == ["header", "X-Mlops-Traffic"]
    assert current_request_state() == {"traffic": "live", "rejected": {}}  # reset after the request


def test_overload_is_a_503_that_says_so_with_retry_after() -> None:
    inner = _app(503, {"error": "An unexpected error has occurred, please check the server log."})
    r = _call(RequestGuardMiddleware(inner, retry_after_s=2))
    assert r.status_code == 503 and r.headers["retry-after"] == "2"
    assert r.json()["error"].startswith("overloaded") and r.json()["retry_after_s"] == 2
    assert "unexpected" not in r.text


def test_stale_features_under_reject_become_a_422_naming_them() -> None:
    app = RequestGuardMiddleware(_app(reject={"r1": {"temp", "wind"}, "r2": {"temp"}}))
    r = _call(app)
    assert r.status_code == 422 and r.json()["stale_features"] == ["temp", "wind"]
    assert r.json()["rows"] == {"r1": ["temp", "wind"], "r2": ["temp"]} and "temp, wind" in r.json()["error"]


def test_client_error_bodies_are_objects_and_keep_their_headers() -> None:
    r = _call(RequestGuardMiddleware(_app(400, [{"error": "bad thing"}])))  # BentoML's tuple-shaped body
    assert r.status_code == 400 and r.json() == {"error": "bad thing", "detail": []}
    detail = [{"type": "int_type", "loc": ["requests", 0, "x"], "msg": "Input should be a valid integer"}]
    r = _call(RequestGuardMiddleware(_app(400, {"error": "1 validation error", "detail": detail})))
    assert r.json() == {"error": "1 validation error", "detail": detail}
    r = _call(RequestGuardMiddleware(_app(405, {"error": "Method Not Allowed"}, headers=[(b"allow", b"GET")])),
              path="/readyz")
    assert r.status_code == 405 and r.headers["allow"] == "GET"
    ok = _call(RequestGuardMiddleware(_app(200, [{"p": 1}])))
    assert ok.status_code == 200 and ok.json() == [{"p": 1}]  # answers pass through untouched


def test_the_published_document_matches_the_service() -> None:
    spec = {
        "paths": {
            "/predict": {"post": {"requestBody": {"content": {}}, "responses": {
                "200": {"description": "ok"}, "400": {"description": "InvalidArgument"},
                "404": {"description": "NotFound"}}}},
            "/health": {"post": {"requestBody": {"content": {}}, "responses": {"200": {"description": "ok"}}}},
            "/readyz": {"get": {"responses": {"200": {"description": "ok"}}}},
        },
        "components": {"schemas": {"InvalidArgument": {"properties": {"detail": {"type": "string"}}}}},
    }
    served = {"openapi": "3.0.2", **spec}
    doc = openapi_document(served)
    op = doc["paths"]["/predict"]["post"]
    assert op["requestBody"]["required"] is True
    assert "required" not in doc["paths"]["/health"]["post"]["requestBody"]  # /health takes no input
    assert set(op["responses"]) == {"200", "400", "413", "415", "422", "500", "503"}
    assert "422" not in doc["paths"]["/health"]["post"]["responses"]
    bad = doc["components"]["schemas"]["BadRequest"]["properties"]["detail"]
    assert bad["type"] == "array"  # the 400 body's detail IS a list of validation errors
    assert op["responses"]["503"]["headers"]["Retry-After"]["schema"] == {"type": "integer"}
    assert [p["name"] for p in op["parameters"]] == ["X-Mlops-Traffic"]
    assert "InvalidArgument" not in doc["components"]["schemas"]
    assert "503" in doc["paths"]["/readyz"]["get"]["responses"]
    assert served["paths"]["/predict"]["post"]["responses"].keys() == {"200", "400", "404"}  # not mutated
    app = RequestGuardMiddleware(_app(), openapi=lambda: doc)
    assert _call(app, "GET", "/docs.json").json() == doc


def test_client_errors_and_overload_log_one_line_without_traceback(caplog: pytest.LogCaptureFixture) -> None:
    from bentoml.exceptions import InvalidArgument, ServiceUnavailable
    from pydantic import BaseModel, ValidationError

    class M(BaseModel):
        x: int

    def record(exc: BaseException) -> logging.LogRecord:
        try:
            raise exc
        except BaseException as e:  # noqa: BLE001
            import sys

            return logging.LogRecord("bentoml._internal.server.http_app", logging.ERROR, __file__, 1,
                                     "Exception on %s [%s]", ("/predict", "POST"), sys.exc_info() if e else None)

    try:
        M.model_validate({"x": "a"})
    except ValidationError as e:
        validation = e
    f = _ClientErrorFilter()
    for exc, level in ((validation, logging.DEBUG), (InvalidArgument("bad"), logging.DEBUG),
                       (ServiceUnavailable("process is overloaded"), logging.WARNING)):
        rec = record(exc)
        assert f.filter(rec) and rec.exc_info is None and rec.levelno == level
        assert rec.getMessage().startswith("Exception on /predict [POST]: ")
    server_error = record(RuntimeError("boom"))
    assert f.filter(server_error) and server_error.exc_info is not None and server_error.levelno == logging.ERROR
    install_log_filter()
    install_log_filter()
    lg = logging.getLogger("bentoml._internal.server.http_app")
    assert sum(isinstance(x, _ClientErrorFilter) for x in lg.filters) == 1
