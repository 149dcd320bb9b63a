"""ASGI guard in front of the bento service: body-size limit (413) and JSON-only content type (415).

It runs before BentoML parses anything, so an oversized or non-JSON body never reaches pydantic.
"""

from __future__ import annotations

import json
from typing import Any

from mlops_provider.runtime.serving.schema import ServiceLimits

JSON_MEDIA_TYPES = ("application/json", "text/json")


class RequestGuardMiddleware:
    """Body-size limit (413) and JSON-only content type (415) before BentoML parses anything.

    A declared ``Content-Length`` over the limit is refused without reading the body; a chunked body is
    read up to the limit and refused as soon as it passes it.
    """

    def __init__(self, app: Any, max_body_bytes: int = ServiceLimits().max_body_bytes) -> None:
        self.app = app
        self.max_body_bytes = int(max_body_bytes)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        ctype = headers.get("content-type", "application/json").split(";")[0].strip().lower()
        if ctype and ctype not in JSON_MEDIA_TYPES and not ctype.endswith("+json"):
            await _reject(send, 415, f"Content-Type {ctype!r} is not supported: send application/json")
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
            await self.app(scope, receive, send)
            return
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

        await self.app(scope, replay, send)


async def _reject(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
