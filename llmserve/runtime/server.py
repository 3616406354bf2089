"""Builds and runs a grpc.aio server the same way for every service.

Every server gets the standard health service (NOT_SERVING until the service says it is ready),
server reflection, the interceptor that maps errors to statuses (`errors.ErrorStatusInterceptor`),
the one that refuses undecodable requests (`undecodable`), optional extra interceptors (tracing),
TLS when the service has an identity (`tls`: mTLS unless the port is public) and a graceful stop
on SIGTERM/SIGINT: health goes NOT_SERVING first, then the server stops accepting and gives
in-flight RPCs `grace_s`.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from llmserve.runtime.errors import ErrorStatusInterceptor
from llmserve.runtime.tls import Tls, server_credentials
from llmserve.runtime.undecodable import UndecodableRequestInterceptor

logger = logging.getLogger(__name__)

# Every message of the data plane (KV chunks) stays under this; servers and channels accept it.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.so_reuseport", 0),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5000),
    # The server pings its clients too, so that a peer that vanished without closing its
    # connection (a node lost, a pod's network gone) ends its streams within half a minute: a
    # worker then frees the Execute stream of a dead scheduler for the restarted one.
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
)


@dataclass
class ServiceServer:
    """A started server, its bound port and its health servicer."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service_names: tuple[str, ...]
    # Run after the server stopped (close peer channels, stop background tasks), in order.
    cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Run beside the gRPC server's own drain, each given the grace (another front of the same
    # service: its listeners close and its open calls finish within the same grace).
    drains: list[Callable[[float], Awaitable[None]]] = field(default_factory=list)
    # The servicer object, for in-process tests and tools that inspect it.
    service: object | None = None
    _stopped: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def set_serving(self, serving: bool = True) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        await self.health.set("", status)
        for name in self.service_names:
            await self.health.set(name, status)

    async def stop(self, grace_s: float = 5.0) -> None:
        """Drains: NOT_SERVING first, then stop accepting, then let in-flight RPCs finish."""
        if self._stopped.is_set():
            return
        await self.set_serving(False)
        results = await asyncio.gather(self.server.stop(grace_s), *(drain(grace_s) for drain in self.drains),
                                       return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                logger.error("drain failed while stopping", exc_info=result)
        for cleanup in self.cleanups:
            try:
                await cleanup()
            except Exception:  # a failing cleanup must not keep the others from running
                logger.exception("cleanup failed while stopping")
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()


async def start_server(
    add_servicers: Callable[[grpc.aio.Server], None],
    service_names: Sequence[str],
    address: str = "127.0.0.1:0",
    interceptors: Iterable[grpc.aio.ServerInterceptor] = (),
    *,
    tls: Tls | None = None,
    require_client_cert: bool = True,
    max_receive_bytes: int = MAX_MESSAGE_BYTES,
) -> ServiceServer:
    """Starts a server on `address` ("host:0" picks a free port) with health and reflection.

    An error that escapes a handler ends its RPC through `errors.abort_with` (the one table; INTERNAL
    for anything that is not a domain error), so servicers raise domain errors and never abort. A
    request that does not decode ends INVALID_ARGUMENT before the handler sees it.

    `tls`: serve TLS with its certificate (None: plaintext). `require_client_cert` (with `tls`):
    mutual TLS, only callers holding a certificate signed by `tls.ca` get through the handshake;
    False for a public port (the gateway's), where any TLS client may connect.

    `service_names` are the full names of the services `add_servicers` registers
    (e.g. `gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name`). The health status starts
    NOT_SERVING; call `set_serving()` once the service is ready. `max_receive_bytes` lowers the
    largest request message accepted (the public gateway's: gRPC refuses a bigger one with
    RESOURCE_EXHAUSTED before it is parsed).
    """
    # The error interceptor inside the tracing ones, so that they record the status it sets; the
    # decode check inside the error interceptor, which maps what it raises.
    chain = [*interceptors, ErrorStatusInterceptor(), UndecodableRequestInterceptor()]
    options = [(k, max_receive_bytes if k == "grpc.max_receive_message_length" else v) for k, v in SERVER_OPTIONS]
    server = grpc.aio.server(interceptors=chain, options=options)
    add_servicers(server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (*service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    if tls is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, server_credentials(tls, require_client_cert=require_client_cert))
    if port == 0:
        raise OSError(f"could not bind {address}")
    await server.start()
    running = ServiceServer(server=server, port=port, health=health_servicer, service_names=tuple(service_names))
    await running.set_serving(False)
    return running


def install_signal_handlers(on_signal: Callable[[], Awaitable[None]]) -> None:
    """Runs `on_signal()` once on the first SIGTERM or SIGINT (a second one is ignored)."""
    loop = asyncio.get_running_loop()
    fired = False

    def handler(signum: int) -> None:
        nonlocal fired
        if fired:
            return
        fired = True
        logger.info("received signal %s: draining", signal.Signals(signum).name)
        loop.create_task(on_signal())

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, handler, sig)


def service_full_name(file_descriptor: object, service: str) -> str:
    """`llmserve.v1.<service>` from a generated `*_pb2.DESCRIPTOR`."""
    return file_descriptor.services_by_name[service].full_name  # type: ignore[attr-defined]
