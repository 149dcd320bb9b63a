"""ASGI guard in front of the bento service, and the service's published OpenAPI document (no BentoML import).

:class:`RequestGuardMiddleware` runs before BentoML parses anything:

- body-size limit (413) and JSON-only content type (415), so an oversized or non-JSON body never reaches
  pydantic;
- the traffic class: header ``X-Mlops-Traffic`` (``live`` | ``smoke`` | ``infra_validation`` | ``warmup`` |
  ``shadow``; default ``live``; anything else: 400) goes into the request's state
  (:data:`~mlops_provider.runtime.serving.schema.REQUEST_STATE`), which every request row captures when it
  is validated, so it rides with the row through adaptive batching into the inference log;
- answers BentoML would get wrong are rewritten: an overloaded dispatcher (BentoML: 503 "unexpected
  error") becomes 503 ``{"error": "overloaded: ..."}`` with ``Retry-After``; a request whose features
  are stale under ``stale_features: reject`` becomes 422 naming them; a 4xx body that BentoML renders as
  a list becomes the documented object;
- ``GET /docs.json`` serves :func:`openapi_document`: BentoML's document with the request body marked
  required, the ``X-Mlops-Traffic`` header, and every status the service really answers (400 with the
  validation ``detail`` list, 413, 415, 422, 503 + ``Retry-After``, 500) with its real body schema.

:func:`install_log_filter` keeps client errors (4xx) and overload answers from logging a traceback: BentoML
logs every failed request with ``exc_info``; the filter turns those records into one line.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from mlops_provider.runtime.serving.request_schema import TRAFFIC_CLASSES, TRAFFIC_HEADER
from mlops_provider.runtime.serving.schema import REQUEST_STATE, ServiceLimits, new_request_state

JSON_MEDIA_TYPES = ("application/json", "text/json")
#: Routes of the service's APIs (POST); the infra routes are left alone.
API_PATHS = ("/predict", "/score_batch", "/health")
OPENAPI_PATH = "/docs.json"


class RequestGuardMiddleware:
    """See the module docstring. ``openapi``: a callable returning the document for ``GET /docs.json``."""

    def __init__(
        self,
        app: Any,
        max_body_bytes: int = ServiceLimits().max_body_bytes,
        retry_after_s: int = 1,
        openapi: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = int(max_body_bytes)
        self.retry_after_s = int(retry_after_s)
        self.openapi = openapi
        self._document: bytes | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        if scope.get("method") == "GET" and scope.get("path") == OPENAPI_PATH and self.openapi is not None:
            if self._document is None:
                self._document = json.dumps(self.openapi()).encode()
            await _respond(send, 200, self._document, close=False)
            return
        if scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        ctype = headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if ctype and ctype not in JSON_MEDIA_TYPES and not ctype.endswith("+json"):
            await _reject(send, 415, f"Content-Type {ctype!r} is not supported: send application/json")
            return
        traffic = headers.get(TRAFFIC_HEADER.lower(), "live")
        if traffic not in TRAFFIC_CLASSES:
            await _reject(send, 400, f"{TRAFFIC_HEADER} {traffic!r} is not one of {list(TRAFFIC_CLASSES)}", detail=[{
                "type": "enum", "loc": ["header", TRAFFIC_HEADER], "msg": f"Input should be one of {list(TRAFFIC_CLASSES)}",
            }])
            return
        length = headers.get("content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _reject(send, 400, "Content-Length is not an integer")
                return
            if declared > self.max_body_bytes:
                await _reject(
                    send,
                    413,
                    f"Request body of {declared} bytes exceeds the limit of "
                    f"{self.max_body_bytes} bytes; split the request",
                )
                return
            inner_receive = receive
        else:
            # no Content-Length (chunked): buffer up to the limit, then replay
            chunks: list[bytes] = []
            size = 0
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    break
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_body_bytes:
                    await _reject(
                        send,
                        413,
                        f"Request body exceeds the limit of {self.max_body_bytes} bytes; split the request",
                    )
                    return
                chunks.append(chunk)
                if not message.get("more_body", False):
                    break
            body = b"".join(chunks)
            sent = False

            async def replay() -> Any:
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            inner_receive = replay
        state = new_request_state(traffic)
        token = REQUEST_STATE.set(state)
        try:
            await self.app(scope, inner_receive, _Rewriter(send, state, self.retry_after_s))
        finally:
            REQUEST_STATE.reset(token)


class _Rewriter:
    """``send`` wrapper: passes answers through, rewrites overload / rejected / list-shaped 4xx answers."""

    def __init__(self, send: Any, state: Mapping[str, Any], retry_after_s: int) -> None:
        self.send = send
        self.state = state
        self.retry_after_s = retry_after_s
        self.start: dict[str, Any] | None = None
        self.rewrite = False
        self.chunks: list[bytes] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status = int(message["status"])
            self.rewrite = status == 503 or (status == 200 and bool(self.state.get("rejected"))) or (
                400 <= status < 500
            )
            if not self.rewrite:
                await self.send(message)
                return
            self.start = message
            return
        if message["type"] != "http.response.body" or not self.rewrite:
            await self.send(message)
            return
        self.chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        assert self.start is not None
        status = int(self.start["status"])
        body = b"".join(self.chunks)
        keep = [(k, v) for k, v in self.start.get("headers", [])
                if k.lower() not in (b"content-type", b"content-length", b"retry-after")]
        if status == 503:
            await _respond(self.send, 503, json.dumps({
                "error": "overloaded: the service cannot answer within its latency limit; retry after "
                         f"{self.retry_after_s} s",
                "retry_after_s": self.retry_after_s,
            }).encode(), extra_headers=[*keep, (b"retry-after", str(self.retry_after_s).encode())], close=False)
            return
        if status == 200:  # a row of this request had stale features under stale_features: reject
            rejected: dict[str, list[str]] = self.state["rejected"]
            names = sorted({f for feats in rejected.values() for f in feats})
            await _respond(self.send, 422, json.dumps({
                "error": f"stale features (older than their view's TTL, or newer than the request's event time): "
                         f"{', '.join(names)}",
                "stale_features": names,
                "rows": {k: sorted(v) for k, v in rejected.items()},
            }).encode(), extra_headers=keep, close=False)
            return
        await _respond(self.send, status, _normalise_error(body), extra_headers=keep, close=False)


def _normalise_error(body: bytes) -> bytes:
    """A 4xx body as ``{"error": str, "detail": [...]}`` (BentoML renders some as ``[{"error": ...}]``)."""
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        data = {"error": body.decode("utf-8", "replace")[:2000]}
    if isinstance(data, list):
        data = data[0] if data and isinstance(data[0], dict) else {"error": str(data)}
    if not isinstance(data, dict):
        data = {"error": str(data)}
    detail = data.get("detail")
    out = {"error": str(data.get("error") or data.get("detail") or "bad request"),
           "detail": detail if isinstance(detail, list) else []}
    return json.dumps(out).encode()


async def _respond(
    send: Any, status: int, body: bytes, *, extra_headers: list[tuple[bytes, bytes]] | None = None,
    close: bool = True,
) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers + list(extra_headers or [])})
    await send({"type": "http.response.body", "body": body})


async def _reject(send: Any, status: int, message: str, detail: list[Any] | None = None) -> None:
    await _respond(send, status, json.dumps({"error": message, "detail": detail or []}).encode())


# ---------------------------------------------------------------------------------------------- logging
class _ClientErrorFilter(logging.Filter):
    """Turns BentoML's "Exception on /predict" records of client errors / overload into one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.exc_info or not record.exc_info[1]:
            return True
        exc = record.exc_info[1]
        code = getattr(getattr(exc, "error_code", None), "value", None)
        kind = type(exc).__name__
        if kind == "ValidationError" or (isinstance(code, int) and 400 <= code < 500):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        elif isinstance(code, int) and code == 503:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        else:
            return True
        record.msg = f"{record.getMessage()}: {kind}: {str(exc).splitlines()[0] if str(exc) else ''}"
        record.args = None
        record.exc_info = None
        record.exc_text = None
        return True


#: Loggers BentoML reports request failures on.
_BENTOML_LOGGERS = ("bentoml._internal.server.http_app", "bentoml.serve", "_bentoml_impl.server.app")


def install_log_filter() -> None:
    """Attach the client-error filter to BentoML's request loggers (idempotent)."""
    for name in _BENTOML_LOGGERS:
        lg = logging.getLogger(name)
        if not any(isinstance(f, _ClientErrorFilter) for f in lg.filters):
            lg.addFilter(_ClientErrorFilter())


# ---------------------------------------------------------------------------------------------- OpenAPI
_REF = "#/components/schemas/{}"
_ERROR_SCHEMAS: dict[str, dict[str, Any]] = {
    "ValidationErrorItem": {
        "type": "object",
        "properties": {
            "type": {"type": "string"},
            "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
            "msg": {"type": "string"},
            "url": {"type": "string"},
        },
        "required": ["type", "loc", "msg"],
    },
    "BadRequest": {
        "type": "object",
        "description": "The request does not fit the schema (wrong type, missing / unknown field, out of range, "
                       "malformed JSON, too many rows, an unknown X-Mlops-Traffic).",
        "properties": {
            "error": {"type": "string"},
            "detail": {"type": "array", "items": {"$ref": _REF.format("ValidationErrorItem")}},
        },
        "required": ["error", "detail"],
    },
    "ErrorMessage": {
        "type": "object",
        "properties": {"error": {"type": "string"}, "detail": {"type": "array", "items": {}}},
        "required": ["error"],
    },
    "StaleFeatures": {
        "type": "object",
        "description": "stale_features: reject -- features older than their view's TTL (or newer than the "
                       "request's event time).",
        "properties": {
            "error": {"type": "string"},
            "stale_features": {"type": "array", "items": {"type": "string"}},
            "rows": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "string"}}},
        },
        "required": ["error", "stale_features"],
    },
    "Overloaded": {
        "type": "object",
        "properties": {"error": {"type": "string"}, "retry_after_s": {"type": "integer"}},
        "required": ["error"],
    },
}


def _json_response(description: str, schema: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description,
                           "content": {"application/json": {"schema": {"$ref": _REF.format(schema)}}}}
    if headers:
        out["headers"] = headers
    return out


def openapi_document(spec: Mapping[str, Any], *, api_paths: tuple[str, ...] = API_PATHS) -> dict[str, Any]:
    """BentoML's generated document, corrected to what the service does (module docstring)."""
    doc = copy.deepcopy(dict(spec))
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for name in ("InvalidArgument", "NotFound", "InternalServerError"):
        schemas.pop(name, None)
    schemas.update(copy.deepcopy(_ERROR_SCHEMAS))
    errors = {
        "400": _json_response("Bad request", "BadRequest"),
        "413": _json_response("Request body too large", "ErrorMessage"),
        "415": _json_response("Not JSON", "ErrorMessage"),
        "500": _json_response("Server error", "ErrorMessage"),
        "503": _json_response("Overloaded: retry after Retry-After seconds", "Overloaded", headers={
            "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}},
        }),
    }
    traffic = {
        "name": TRAFFIC_HEADER,
        "in": "header",
        "required": False,
        "description": "Traffic class logged with the prediction; only 'live' counts in monitoring windows.",
        "schema": {"type": "string", "enum": list(TRAFFIC_CLASSES), "default": "live"},
    }
    for path in api_paths:
        op = (doc.get("paths", {}).get(path) or {}).get("post")
        if not op:
            continue
        body = op.get("requestBody")
        if body and path != "/health":  # /health takes no input: an empty body is fine
            body["required"] = True
        responses = {k: v for k, v in op.get("responses", {}).items() if str(k).startswith("2")}
        responses.update(copy.deepcopy(errors))
        if path != "/health":
            responses["422"] = _json_response("Stale features (stale_features: reject)", "StaleFeatures")
        op["responses"] = responses
        op["parameters"] = [p for p in op.get("parameters", []) if p.get("name") != TRAFFIC_HEADER] + [traffic]
    for path, item in doc.get("paths", {}).items():
        if path in api_paths:
            continue
        for op in item.values():
            if isinstance(op, dict) and "responses" in op and path in ("/readyz",):
                op["responses"].setdefault("503", {"description": "Not ready yet"})
    return doc
