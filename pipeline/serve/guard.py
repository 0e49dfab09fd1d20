"""The service's front door (an ASGI middleware in each HTTP process): the API key, the body limit, the
request's form and the time limit, each refused with its status and one line before a model worker sees it.

A ``/predict`` request that passes goes on to LitServe as JSON in one form (:func:`requests.checked`), so a model
worker never meets a malformed request: one bad request in a batch cannot fail the others.
"""

from __future__ import annotations

import asyncio
import hmac
import json

from starlette.requests import Request
from starlette.responses import JSONResponse

from pipeline.serve.requests import FORM, JSON, URLENCODED, BadRequest, from_form, from_json, media_type

PREDICT = "/predict"
KEYED = (PREDICT, "/info")  # the page, /health and the OpenAPI page stay open (a load balancer asks /health)
MAX_FORM_FILES = 32


def replaying(body: bytes, then):
    """An ASGI ``receive`` that hands over ``body`` (already read) once, then defers to ``then``."""
    sent = False

    async def receive():
        nonlocal sent
        if sent:
            return await then()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def disconnected():
    return {"type": "http.disconnect"}


class RequestGuard:
    def __init__(self, app, api_key: str | None, max_body_bytes: int, timeout_s: float):
        self.app = app
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        try:
            if scope["path"] in KEYED:
                self.check_key(scope)
            if scope["path"] == PREDICT and scope["method"] == "POST":
                item = await self.read_complaint(scope, receive)
                return await self.forward(scope, receive, send, json.dumps(item).encode())
        except BadRequest as e:
            return await JSONResponse({"detail": e.reason}, status_code=e.status)(scope, receive, send)
        await self.app(scope, receive, send)

    def check_key(self, scope) -> None:
        if self.api_key is None:
            return
        given = dict(scope["headers"]).get(b"x-api-key", b"")
        if not hmac.compare_digest(given, self.api_key.encode()):
            raise BadRequest(401, "missing or wrong X-API-Key header")

    async def read_body(self, scope, receive) -> bytes:
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise BadRequest(413, f"the body is {int(declared)} bytes, over the limit of {self.max_body_bytes}")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise BadRequest(400, "the client went away before the body was sent")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise BadRequest(413, f"the body is over the limit of {self.max_body_bytes} bytes")
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    async def read_complaint(self, scope, receive) -> dict:
        content_type = dict(scope["headers"]).get(b"content-type", b"").decode("latin-1")
        kind = media_type(content_type)
        if kind not in (JSON, FORM, URLENCODED):
            raise BadRequest(415, f"content type {kind or 'none'!r}: send application/json or multipart/form-data")
        body = await self.read_body(scope, receive)
        if kind == JSON:
            return from_json(body)
        try:
            form = await Request(scope, replaying(body, disconnected)).form(
                max_files=MAX_FORM_FILES, max_fields=MAX_FORM_FILES
            )
        except Exception as e:  # starlette's parser errors (a broken boundary, too many parts) come as several types
            raise BadRequest(400, f"the form cannot be read ({str(e).splitlines()[0][:120]})") from None
        try:
            return await from_form(form)
        finally:
            await form.close()

    async def forward(self, scope, receive, send, body: bytes) -> None:
        """The checked complaint on to LitServe; 504 when no answer has begun within the time limit."""
        headers = [(k, v) for k, v in scope["headers"] if k not in (b"content-type", b"content-length")]
        scope = {
            **scope,
            "headers": [*headers, (b"content-type", JSON.encode()), (b"content-length", str(len(body)).encode())],
        }
        replay, started = replaying(body, receive), False

        async def watched(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await asyncio.wait_for(self.app(scope, replay, watched), self.timeout_s)
        except TimeoutError:
            if not started:
                await JSONResponse({"detail": f"no answer within {self.timeout_s:g} s (--timeout)"}, status_code=504)(
                    scope, replay, send
                )
