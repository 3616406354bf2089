"""Client channels to peer services, all configured the same way."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from llmserve.runtime.server import MAX_MESSAGE_BYTES

CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # A peer that restarted is reached again within ~2 s: gRPC's default reconnect backoff grows to
    # 120 s, and channels to one address share it (subchannels are pooled per process).
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
)


def open_channel(
    address: str, interceptors: Sequence[grpc.aio.ClientInterceptor] = ()
) -> grpc.aio.Channel:
    """An insecure asyncio channel to `address` (loopback or a cluster-internal service)."""
    return grpc.aio.insecure_channel(address, options=list(CHANNEL_OPTIONS), interceptors=list(interceptors) or None)


async def wait_healthy(address: str, timeout_s: float = 60.0, service: str = "") -> None:
    """Polls `grpc.health.v1` on `address` until it reports SERVING, or raises TimeoutError."""
    import asyncio

    from grpc_health.v1 import health_pb2, health_pb2_grpc

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with open_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        last_error = "no answer"
        while loop.time() < deadline:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
                last_error = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.aio.AioRpcError as err:
                last_error = f"{err.code().name}: {err.details()}"
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{address} not healthy after {timeout_s:.0f}s ({last_error})")
