"""The OpenAI-compatible HTTP front, served by aiohttp in the gateway's own event loop, over the
same request lifecycle as the gRPC front (`gateway.lifecycle`).

Routes: `POST /v1/completions`, `POST /v1/chat/completions`, `GET /v1/models`, `GET /health`,
`GET /metrics`. Streams are Server-Sent Events (`data: {chunk}` ... `data: [DONE]`). The stream's
headers go out with its first chunk, so a request refused before its first token (a full queue,
a quota) still gets a plain 429 with `Retry-After`, not a stream that breaks. A client that
disconnects cancels its handler (aiohttp's `handler_cancellation`), which cancels the request
upstream: its KV is freed within one step, as on gRPC.

Errors take the one path of every service (a domain error -> its gRPC status, `STATUS_OF_ERROR`)
and then gRPC's standard HTTP mapping, in OpenAI's body shape `{"error": {message, type, code}}`.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from contextlib import aclosing
from typing import Any

import grpc
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from gateway.core.openai_request import OpenAIRequest, RealTimeDefaults, parse_chat, parse_completion
from gateway.core.openai_response import Envelope, error_body
from gateway.core.types import Delta
from gateway.lifecycle import Generation, Lifecycle
from llmserve.runtime.errors import (
    InvalidRequestError,
    LlmServeError,
    NotFoundError,
    retry_after_header,
    status_code_for,
)

logger = logging.getLogger(__name__)

# gRPC's status -> HTTP status (the mapping grpc-gateway and Google's APIs use).
HTTP_STATUS_OF_CODE: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.INTERNAL: 500,
}
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DONE = b"data: [DONE]\n\n"


def _json_bytes(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def error_response(error: LlmServeError, headers: Mapping[str, str] | None = None) -> web.Response:
    status = HTTP_STATUS_OF_CODE.get(status_code_for(error), 500)
    out = dict(headers or {})
    retry_after_s = getattr(error, "retry_after_s", None)
    if status == 429:
        out["Retry-After"] = retry_after_header(retry_after_s if retry_after_s is not None else 1.0)
    if status == 503:
        out["Retry-After"] = "1"
    code = {401: "invalid_api_key", 404: "model_not_found" if isinstance(error, NotFoundError) else None,
            429: "rate_limit_exceeded"}.get(status)
    return web.Response(status=status, body=_json_bytes(error_body(status, str(error), code)),
                        content_type="application/json", headers=out)


@web.middleware
async def _errors(request: web.Request,
                  handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Every failure answers in OpenAI's error shape; a bug is a 500 naming an incident id."""
    try:
        return await handler(request)
    except LlmServeError as err:
        return error_response(err)
    except web.HTTPException as err:  # aiohttp's own: 404 route, 405 method, 413 body too large
        if err.status < 400:
            raise
        return web.Response(status=err.status, body=_json_bytes(error_body(err.status, err.reason)),
                            content_type="application/json")
    except Exception as err:  # noqa: BLE001 - a bug: the client gets an incident id, the log the traceback
        incident = uuid.uuid4().hex[:12]
        logger.error("internal error %s: %s", incident, type(err).__name__, exc_info=err)
        return web.Response(status=500, content_type="application/json", body=_json_bytes(
            error_body(500, f"internal error {incident}: the server logged the details")))


class OpenAIFront:
    """The handlers; `app()` builds the aiohttp application."""

    def __init__(self, lifecycle: Lifecycle, registry: CollectorRegistry, model_aliases: tuple[str, ...] = ()) -> None:
        self.lifecycle = lifecycle
        self.registry = registry
        self.model_aliases = model_aliases
        self.created = int(time.time())
        config = lifecycle.config
        self.rt_defaults = RealTimeDefaults(config.default_ttft_ms, config.default_tpot_ms)
        self._warned: set[str] = set()

    def app(self, max_body_bytes: int) -> web.Application:
        app = web.Application(middlewares=[_errors], client_max_size=max_body_bytes)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.chat_completions)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/v1/models/{model}", self.model)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics)
        return app

    # ---- ops -----------------------------------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        life = self.lifecycle
        if life.model is None or life.draining:
            state = "draining" if life.draining else "starting"
            return web.json_response({"status": state}, status=503)
        return web.json_response({"status": "ok"})

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    def _model_card(self) -> dict[str, Any]:
        model = self.lifecycle.served_model()
        return {"id": model.limits.model_name, "object": "model", "created": self.created, "owned_by": "llmserve",
                "max_model_len": model.limits.max_context_length}

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [self._model_card()]})

    async def model(self, request: web.Request) -> web.Response:
        card = self._model_card()
        self._check_model(request.match_info["model"])
        return web.json_response(card)

    def _check_model(self, name: str | None) -> None:
        served = self.lifecycle.served_model().limits.model_name
        if name is not None and name != served and name not in self.model_aliases:
            raise NotFoundError(f"the model {name[:128]!r} is not served here: use {served!r} (GET /v1/models)")

    # ---- generation ----------------------------------------------------------------------------
    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, parse_completion, chat=False)

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, parse_chat, chat=True)

    async def _generate(self, request: web.Request, parse: Callable[..., OpenAIRequest],
                        chat: bool) -> web.StreamResponse:
        life = self.lifecycle
        model = life.served_model()
        caller = life.caller(request.headers.get("authorization"))
        try:
            body = await request.json(loads=json.loads)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise InvalidRequestError(f"the request body is not valid JSON: {err}") from None
        headers = {k.lower(): v for k, v in request.headers.items()}
        parsed = parse(body, headers, self.rt_defaults)
        self._check_model(parsed.model)
        self._warn_ignored(parsed.ignored)
        generation = await life.start(parsed.inp, caller)
        try:
            out_headers = {"x-request-id": generation.request_id,
                           "x-llmserve-slo-class": generation.slo.service_class.label}
            if parsed.ignored:
                out_headers["x-llmserve-ignored"] = ",".join(parsed.ignored)[:1024]
            envelope = Envelope(generation.request_id, model.limits.model_name, int(life.wall_clock()), chat)
            if parsed.stream:
                return await self._stream(request, generation, envelope, parsed.include_usage, out_headers)
            return await self._complete(generation, envelope, out_headers)
        finally:
            generation.close()

    async def _complete(self, generation: Generation, envelope: Envelope, headers: dict[str, str]) -> web.Response:
        parts: list[str] = []
        final: Delta | None = None
        async with aclosing(generation.deltas()) as deltas:
            async for delta in deltas:
                parts.append(delta.text)
                if delta.finished:
                    final = delta
        assert final is not None  # deltas() ends with a finished delta or raises
        body = envelope.response("".join(parts), final, generation.slo)
        return web.Response(body=_json_bytes(body), content_type="application/json", headers=headers)

    async def _stream(self, request: web.Request, generation: Generation, envelope: Envelope, include_usage: bool,
                      headers: dict[str, str]) -> web.StreamResponse:
        response: web.StreamResponse | None = None
        first = True

        async def send(body: bytes) -> None:
            nonlocal response
            if response is None:  # headers go out with the first chunk
                response = web.StreamResponse(headers={**SSE_HEADERS, **headers})
                await response.prepare(request)
            await response.write(body)

        try:
            async with aclosing(generation.deltas()) as deltas:
                async for delta in deltas:
                    chunk = envelope.chunk(delta, first=first, slo=generation.slo, include_usage=include_usage)
                    first = False
                    await send(b"data: " + _json_bytes(chunk) + b"\n\n")
                    if delta.finished and include_usage:
                        await send(b"data: " + _json_bytes(envelope.usage_chunk(delta.usage)) + b"\n\n")
        except LlmServeError as err:
            if response is None:
                return error_response(err, headers)
            status = HTTP_STATUS_OF_CODE.get(status_code_for(err), 500)
            await response.write(b"data: " + _json_bytes(error_body(status, str(err))) + b"\n\n")
        except ConnectionResetError:  # the client left while we wrote: the request was cancelled upstream
            return response or web.Response(status=499)
        await send(DONE)
        await response.write_eof()  # type: ignore[union-attr]
        return response  # type: ignore[return-value]

    def _warn_ignored(self, ignored: tuple[str, ...]) -> None:
        """One warning line per ignored field name per process: never a line per request."""
        new = [name for name in ignored if name not in self._warned]
        if new:
            self._warned.update(new)
            logger.warning("ignoring OpenAI request fields this server does not use: %s (further uses not logged)",
                           ", ".join(new))


async def start_http_front(front: OpenAIFront, address: str, max_body_bytes: int,
                           shutdown_timeout_s: float) -> web.AppRunner:
    """Serves `front` on host:port (port 0: any free one; `bound_port(runner)` tells which)."""
    host, _, port = address.rpartition(":")
    runner = web.AppRunner(front.app(max_body_bytes), handler_cancellation=True, access_log=None,
                           shutdown_timeout=shutdown_timeout_s)
    await runner.setup()
    site = web.TCPSite(runner, host or "127.0.0.1", int(port), reuse_address=False)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def bound_port(runner: web.AppRunner) -> int:
    return int(runner.addresses[0][1])
