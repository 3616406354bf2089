"""Client channels to peer services, all configured the same way: plaintext, or TLS with the
process's identity (`tls.Tls`) when it has one."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from llmserve.runtime.server import MAX_MESSAGE_BYTES
from llmserve.runtime.tls import Tls, channel_credentials

CHANNEL_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # A peer that restarts (its supervisor, compose or Kubernetes brings it back on the same
    # address) is reconnected within a second of listening again, not after gRPC's default
    # backoff, which grows to two minutes.
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1_000),
)


def open_channel(
    address: str, interceptors: Sequence[grpc.aio.ClientInterceptor] = (), tls: Tls | None = None,
    options: Sequence[tuple[str, str | int]] = (),
) -> grpc.aio.Channel:
    """An asyncio channel to `address`: plaintext, or with `tls` a TLS channel that verifies the
    server against `tls.ca` (and its name against `address`'s host) and presents `tls`'s
    certificate when it has one. `options` are added to CHANNEL_OPTIONS (a service config, say)."""
    all_options, chain = [*CHANNEL_OPTIONS, *options], list(interceptors) or None
    if tls is None:
        return grpc.aio.insecure_channel(address, options=all_options, interceptors=chain)
    return grpc.aio.secure_channel(address, channel_credentials(tls), options=all_options, interceptors=chain)


async def is_serving(channel: grpc.aio.Channel, service: str = "", timeout_s: float = 2.0) -> bool:
    """One grpc.health.v1 Check of `service` over `channel`: True if it reports SERVING. Waits up
    to `timeout_s` for the channel to (re)connect first, so a peer that is restarting is checked
    as soon as it listens; any error or other status is False."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=timeout_s, wait_for_ready=True)
    except grpc.aio.AioRpcError:
        return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


async def wait_healthy(address: str, timeout_s: float = 60.0, service: str = "", tls: Tls | None = None) -> None:
    """Polls `grpc.health.v1` on `address` until it reports SERVING, or raises TimeoutError."""
    import asyncio

    from grpc_health.v1 import health_pb2, health_pb2_grpc

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    async with open_channel(address, tls=tls) as channel:
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
