"""The Python SDK of the Gateway: a small async client (the CLI `llmserve generate`, the benchmarks
and the tests use it too).

    async with GatewayClient("127.0.0.1:50051") as client:
        async for chunk in client.generate("The capital of France is", max_tokens=16):
            print(chunk.text, end="")
        # an SLO, a chosen id, and a cancel from elsewhere:
        stream = client.generate("Write a story", request_id="story-1", max_tokens=400,
                                 service_class="real_time", ttft_ms=1000, tpot_ms=100)
        first = await stream.__anext__()
        await client.cancel("story-1")   # the stream ends with FINISH_REASON_CANCELLED
        info = await client.model_info()

With API keys on at the gateway, pass `api_key=` (sent as `authorization: Bearer KEY`). Errors come
back as llmserve domain errors (InvalidRequestError for INVALID_ARGUMENT, CapacityError for
RESOURCE_EXHAUSTED with `retry_after_s` when the server sent one, ...), whose message is the server's.
`GatewayClient(address, retry=True)` uses `RETRY_SERVICE_CONFIG`, the retry policy
docs/reliability.md recommends to every client.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from types import TracebackType

import grpc

from llmserve.runtime.channel import open_channel
from llmserve.runtime.errors import error_for_rpc_error
from llmserve.runtime.tls import Tls
from llmserve.types import service_class_named
from llmserve.v1 import common_pb2, gateway_pb2, gateway_pb2_grpc


# gRPC service config for clients of the Gateway (docs/reliability.md): a call that fails
# UNAVAILABLE before any response (the gateway restarting, starting or draining; nothing listening
# yet) is tried again, up to 5 attempts over about 8 s. A Generate stream that already received
# tokens is never retried by gRPC: the client resends the request itself (same request_id and seed
# for the same tokens) or keeps what it has.
RETRY_SERVICE_CONFIG: dict[str, object] = {
    "methodConfig": [{
        "name": [{"service": "llmserve.v1.Gateway"}],
        "retryPolicy": {
            "maxAttempts": 5,
            "initialBackoff": "0.5s",
            "maxBackoff": "4s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        },
    }],
}


def retry_channel_options() -> list[tuple[str, str | int]]:
    """Channel options that apply RETRY_SERVICE_CONFIG."""
    return [("grpc.enable_retries", 1), ("grpc.service_config", json.dumps(RETRY_SERVICE_CONFIG))]


def build_request(
    prompt: str | Sequence[int],
    *,
    request_id: str = "",
    max_tokens: int = 0,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int = 0,
    seed: int | None = None,
    stop: Sequence[str] = (),
    stop_token_ids: Sequence[int] = (),
    ignore_eos: bool = False,
    service_class: str | None = None,
    ttft_ms: float | None = None,
    tpot_ms: float | None = None,
    deadline_ms: float | None = None,
    priority: int = 0,
    tenant: str = "",
    apply_chat_template: bool = False,
) -> gateway_pb2.GenerateRequest:
    """A GenerateRequest: a str prompt is text, a sequence of ints is token ids. `service_class` is
    real_time, deadline or best_effort, or None for the server's default SLO (then no targets may be
    set); unset numbers are left unset (server defaults)."""
    # ValueError for an unknown name; 0 (unset) leaves the SLO to the server.
    service_class_number = 0 if service_class is None else int(service_class_named(service_class))
    sampling = common_pb2.SamplingParams(
        max_tokens=max_tokens, top_k=top_k, stop=list(stop), stop_token_ids=list(stop_token_ids), ignore_eos=ignore_eos
    )
    for name, value in (("temperature", temperature), ("top_p", top_p), ("seed", seed)):
        if value is not None:
            setattr(sampling, name, value)
    slo = common_pb2.Slo(service_class=service_class_number, priority=priority)
    for name, value in (("ttft_ms", ttft_ms), ("tpot_ms", tpot_ms), ("deadline_ms", deadline_ms)):
        if value is not None:
            setattr(slo, name, value)
    request = gateway_pb2.GenerateRequest(
        request_id=request_id, sampling=sampling, slo=slo, tenant=tenant, apply_chat_template=apply_chat_template
    )
    if isinstance(prompt, str):
        request.text = prompt
    else:
        request.token_ids.ids.extend(prompt)
    return request


class GatewayClient:
    """One channel to a gateway, shared by every call made through it."""

    def __init__(self, address: str, api_key: str | None = None, retry: bool = False,
                 tls_ca: str | None = None) -> None:
        """`api_key`: sent as `authorization: Bearer KEY`. `retry`: calls that fail UNAVAILABLE
        before any response are retried (RETRY_SERVICE_CONFIG). `tls_ca`: a PEM CA file; the
        gateway is reached over TLS and verified against it (`llmserve up --tls` prints it)."""
        self.address = address
        tls = Tls.from_files(tls_ca) if tls_ca else None
        self._channel = open_channel(address, options=retry_channel_options() if retry else (), tls=tls)
        self._stub = gateway_pb2_grpc.GatewayStub(self._channel)
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else None

    async def __aenter__(self) -> GatewayClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def generate_request(
        self, request: gateway_pb2.GenerateRequest, timeout_s: float | None = None
    ) -> AsyncIterator[gateway_pb2.GenerateResponse]:
        """Streams the responses of one request; closing the iterator early cancels it."""
        call = self._stub.Generate(request, timeout=timeout_s, metadata=self._metadata)
        try:
            async for response in call:
                yield response
        except grpc.aio.AioRpcError as err:
            raise error_for_rpc_error(err) from err
        finally:
            call.cancel()  # no-op once finished

    async def generate(
        self, prompt: str | Sequence[int], *, timeout_s: float | None = None, **options: object
    ) -> AsyncIterator[gateway_pb2.GenerateResponse]:
        """`build_request(prompt, **options)`, streamed."""
        async for response in self.generate_request(build_request(prompt, **options), timeout_s):  # type: ignore[arg-type]
            yield response

    async def cancel(self, request_id: str) -> bool:
        """Cancels a running request of the caller's (tenant's) own; False when none has that id."""
        try:
            reply = await self._stub.Cancel(gateway_pb2.CancelRequest(request_id=request_id), metadata=self._metadata)
        except grpc.aio.AioRpcError as err:
            raise error_for_rpc_error(err) from err
        return reply.cancelled

    async def model_info(self) -> gateway_pb2.ModelInfo:
        try:
            return await self._stub.GetModelInfo(gateway_pb2.GetModelInfoRequest(), metadata=self._metadata)
        except grpc.aio.AioRpcError as err:
            raise error_for_rpc_error(err) from err


async def generate(address: str, prompt: str | Sequence[int], **options: object) -> AsyncIterator[gateway_pb2.GenerateResponse]:
    """One request over its own channel: yields GenerateResponse chunks (the last has
    finish_reason and usage). Options are those of `build_request`, plus `timeout_s`."""
    async with GatewayClient(address) as client:
        async for response in client.generate(prompt, **options):  # type: ignore[arg-type]
            yield response
